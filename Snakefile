# shardmap: sharded, streaming lesion network mapping and perturbation modelling (CPA).
# Run the embedded demo with `snakemake --cores 2`; see README.md and config/README.md.
import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

sys.path.insert(0, os.path.join(workflow.basedir, "workflow", "scripts"))
from shardmap.config_check import check_config_against
from shardmap.errors import InputError

min_version("9.0")


# A config given with --configfile replaces the demo config instead of extending it:
# keys left out take the schema's defaults, never the demo's values.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# Every problem at once, named by key (with the nearest valid key for a typo); then
# Snakemake's validate fills in the schema's defaults.
try:
    check_config_against(
        config,
        os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml"),
        workflow.overwrite_configfiles or ["config/config.yaml"],
    )
except InputError as err:
    raise WorkflowError(str(err)) from None
validate(config, "workflow/schemas/config.schema.yaml")


# The front page of `snakemake --report report.html`.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


if config["lnm"]["enabled"]:

    include: "workflow/rules/lnm.smk"


if config["cpa"]["enabled"]:

    include: "workflow/rules/cpa.smk"


# The figures of `snakemake --report report.html` (report: false skips them).
if config["report"]:

    include: "workflow/rules/report.smk"


# The list of what this config asks for, written last; outputs of an earlier run that it
# no longer asks for are moved aside (workflow/rules/superseded.smk).
include: "workflow/rules/superseded.smk"


# The default targets: each enabled arm's results and, with `report: true`, the report's
# figures (the *_outputs() helpers of lnm_helpers.smk, cpa_helpers.smk and report.smk),
# gathered by default_outputs(), and the list of them.
rule all:
    default_target: True
    input:
        default_outputs(),
        rules.superseded_outputs.output.outputs,
