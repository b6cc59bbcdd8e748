# The perturbation arm's helpers (included by cpa.smk): the keys each rule reads, the cells
# of cpa.adata split into inference shards, the configured counterfactuals and the arm's
# targets. They run in the Snakemake process while the job graph is built.
import re

from shardmap.cpa import resources as cpa_res
from shardmap.cpa.config_keys import TRAIN_EXECUTION_KEYS, training_accelerator

CPA = config["cpa"]


# What the rules read of cpa: as their params, so that changing a key reruns exactly the
# rules that read it (and the training only for the keys it trains with). The keys that
# name the data are read by every task; a change to one of them retrains anyway. How a
# task runs (cpa.threads, the data loader's workers, the training accelerator, the
# inference device) is no params: the tasks read it from the config, and changing it
# reruns nothing (config/README.md, "What a change reruns").
CPA_DATA_KEYS = (
    "perturbation_key",
    "dosage_key",
    "control_group",
    "covariate_keys",
    "batch_key",
    "smiles_key",
    "split_key",
    "layer",
)


def canonical_holdout(conditions):
    """cpa.holdout as the split reads it: each condition's drugs in sorted order, the
    conditions sorted ("drug01+drug00" holds out what "drug00+drug01" does, and must not
    retrain)."""
    return sorted({"+".join(sorted(drug.strip() for drug in str(c).split("+"))) for c in conditions})


def cpa_keys(*keys, **subkeys):
    """The data keys, ``keys`` of cpa and, for each section in ``subkeys``, the listed keys
    of that section (None: the whole section but the keys that say how a task runs)."""
    chosen = {key: CPA[key] for key in CPA_DATA_KEYS + keys}
    if "holdout" in chosen:
        chosen["holdout"] = canonical_holdout(chosen["holdout"])
    for section, names in subkeys.items():
        values = CPA[section]
        if names is None:
            names = [name for name in values if name not in TRAIN_EXECUTION_KEYS]
        chosen[section] = {name: values[name] for name in names}
    return chosen


def cpa_is_demo():
    """Whether cpa.adata is the demo's screen (made by rule cpa_demo_data)."""
    return config["demo"]["enabled"] and is_inside(CPA["adata"], config["demo"]["dir"])


def cpa_cell_count():
    """Cells of cpa.adata, read from the .h5ad header (the demo's from the config), so the
    shards are known when the job graph is built."""
    if cpa_is_demo():
        return config["demo"]["cpa_cells"]
    path = CPA["adata"]
    if not os.path.exists(path):
        raise WorkflowError(f"cpa.adata '{path}' does not exist (relative to '{os.getcwd()}'); fix the path.")
    try:
        import h5py
    except ImportError:
        raise WorkflowError("reading cpa.adata needs h5py in the Snakemake environment: pip install h5py.")
    try:
        with h5py.File(path, "r") as handle:
            obs = handle["obs"]
            return int(obs[obs.attrs["_index"]].shape[0])
    except (OSError, KeyError) as err:
        raise WorkflowError(f"cpa.adata '{path}' is not a readable .h5ad file ({err}).")


def cpa_shards():
    """{shard name: (first row, row after the last)}: cpa.shard_size rows each."""
    total = cpa_cell_count()
    if total == 0:
        raise WorkflowError(f"cpa.adata '{CPA['adata']}' has no cells.")
    size = CPA["shard_size"]
    return {chunk_name(i): (start, min(start + size, total)) for i, start in enumerate(range(0, total, size))}


def counterfactual_name(item):
    """The entry's `name`, else "<perturbation>_at_<dosage>" (or the perturbation alone)."""
    if item.get("name"):
        return item["name"]
    return f"{item['perturbation']}_at_{item['dosage']}" if item.get("dosage") else item["perturbation"]


def cpa_counterfactuals():
    """{name: (perturbation, dosage)} of the configured counterfactuals."""
    named = {}
    for number, item in enumerate(CPA["counterfactuals"]):
        # Without a dose column (dosage_key: null) every drug is at dose 1, as in training.
        if item["perturbation"] != CPA["control_group"] and not item.get("dosage") and CPA["dosage_key"]:
            raise WorkflowError(
                f"cpa.counterfactuals[{number}] ('{item['perturbation']}') has no dosage; give one "
                "dose per drug, joined by '+', e.g. dosage: \"1.0+0.5\"."
            )
        name = counterfactual_name(item)
        if not re.fullmatch(COUNTERFACTUAL_PATTERN, name):
            raise WorkflowError(
                f"cpa.counterfactuals[{number}]: its output would be named '{name}' (from its perturbation "
                "and dosage), but names may hold only letters, digits, '.', '_', '+' and '-'. Give the "
                "entry a `name`, or write the perturbation and dosage without spaces."
            )
        if name in named:
            raise WorkflowError(f"cpa.counterfactuals has two entries named '{name}'; give one a `name`.")
        named[name] = (item["perturbation"], item.get("dosage"))
    pair = case_collision(named)
    if pair:
        raise WorkflowError(
            f"cpa.counterfactuals: the names '{pair[0]}' and '{pair[1]}' differ only in upper and lower case; they "
            "name output files, which would overwrite each other on a case-insensitive file system. Give one a "
            "`name`."
        )
    return named


def check_named_drugs_against_screen():
    """The drugs of cpa.counterfactuals and cpa.dose_response.drugs against the screen's,
    before any job (a run that only adds one must not find a typo after the others). A
    screen that does not exist yet (made by rule cpa_demo_data) is checked by
    cpa_check_inputs instead."""
    if not (CPA["counterfactuals"] or CPA["dose_response"]["drugs"]) or not os.path.exists(CPA["adata"]):
        return
    from shardmap.cpa.named_drugs import check_named_drugs, screen_drugs

    try:
        known = screen_drugs(CPA["adata"], CPA["perturbation_key"], CPA["control_group"])
        check_named_drugs(
            known, CPA["counterfactuals"], CPA["dose_response"]["drugs"], CPA["control_group"], CPA["adata"]
        )
    except InputError as err:
        raise WorkflowError(str(err)) from None


def cpa_outputs():
    """The perturbation arm's targets of the default run."""
    files = [f"{OUT}/cpa/latents.h5ad", f"{OUT}/cpa/metrics.tsv", f"{OUT}/cpa/embeddings.h5ad"]
    files += [f"{OUT}/cpa/counterfactuals/{name}.h5ad" for name in cpa_counterfactuals()]
    return files + ([f"{OUT}/cpa/dose_response.tsv"] if CPA["dose_response"]["drugs"] else [])
