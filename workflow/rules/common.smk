# What all the rules need: the outdir (refused before any job if it cannot be written),
# the request arithmetic both arms share, batch and shard names, names that would collide
# as file names, wildcard constraints, the report's categories and the default targets. Each arm's helpers are next to its rules (lnm_helpers.smk,
# cpa_helpers.smk, report_helpers.smk). Everything here runs in the Snakemake process
# while the job graph is built, so it only uses the standard library and shardmap's
# stdlib-only modules.
import os

from snakemake.exceptions import WorkflowError

from shardmap import resources as res
from shardmap.errors import InputError, check_writable_folder

OUT = config["outdir"]
try:
    check_writable_folder(OUT)
except InputError as err:
    raise WorkflowError(str(err)) from None

ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
COUNTERFACTUAL_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._+-]*"


def chunk_name(index):
    """The zero-padded name of lesion batch, subject shard or cell shard ``index`` in file
    names (the batch and shard wildcards below)."""
    return f"{index:04d}"


wildcard_constraints:
    batch=r"\d{4}",
    shard=r"\d{4}",
    lesion=ID_PATTERN,
    group=ID_PATTERN,
    counterfactual=COUNTERFACTUAL_PATTERN,
    query=ID_PATTERN,


# The categories of `snakemake --report`, shared by the arms' tables and the figures.
LNM_CATEGORY = "1. Lesion network mapping"
CPA_CATEGORY = "2. Perturbation model (CPA)"
RUN_CATEGORY = "3. Config and software"


def case_collision(names):
    """The first two of ``names`` that differ only in upper and lower case, or None: names
    of output files, which such a pair would share on a case-insensitive file system
    (macOS, Windows and many network shares)."""
    seen = {}
    for name in names:
        first = seen.setdefault(name.casefold(), name)
        if first != name:
            return first, name
    return None


def is_inside(path, folder):
    """Whether ``path`` lies in ``folder`` (both taken as absolute paths)."""
    path, folder = os.path.abspath(path), os.path.abspath(folder)
    return os.path.commonpath([path, folder]) == folder


def default_outputs():
    """Every file of this config's default run, from each enabled arm's *_outputs() helper
    (lnm_helpers.smk, cpa_helpers.smk, report_helpers.smk): rule all's targets but the
    outputs list of superseded.smk, which depends on them."""
    files = lnm_outputs() if config["lnm"]["enabled"] else []
    files += cpa_outputs() if config["cpa"]["enabled"] else []
    return files + (report_outputs() if config["report"] else [])
