# The perturbation arm's helpers (included by cpa.smk): the keys each rule reads, the cells
# of cpa.adata and of each query data set split into inference shards, the configured
# counterfactuals and the arm's targets. They run in the Snakemake process while the job
# graph is built.
import re

from shardmap.cpa import resources as cpa_res
from shardmap.cpa.config_keys import TRAIN_EXECUTION_KEYS, training_accelerator

CPA = config["cpa"]
# A model trained elsewhere (cpa.trained_model) is applied as it is: nothing is trained,
# checked against cpa.adata or evaluated, and cpa.adata may be left out.
TRAINING = not CPA.get("trained_model")
HAS_ADATA = bool(CPA.get("adata"))
MODEL_DIR = f"{OUT}/cpa/model" if TRAINING else CPA["trained_model"].rstrip("/")
MODEL_FILE = f"{MODEL_DIR}/model.pt"


def check_trained_model():
    """cpa.trained_model: a folder holding model.pt, before any job (which tool saved it
    is told by the first task that reads it, cpa_query_check or cpa_infer)."""
    if TRAINING:
        return
    from shardmap.cpa.model_folder import check_model_folder

    try:
        check_model_folder(MODEL_DIR)
    except InputError as err:
        raise WorkflowError(str(err)) from None
    if is_inside(MODEL_DIR, OUT) and os.path.abspath(MODEL_DIR) == os.path.abspath(f"{OUT}/cpa/model"):
        raise WorkflowError(
            f"cpa.trained_model '{MODEL_DIR}' is the folder this outdir trains its model into; copy the model "
            "elsewhere first, or unset cpa.trained_model to train it."
        )


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
    return HAS_ADATA and config["demo"]["enabled"] and is_inside(CPA["adata"], config["demo"]["dir"])


def cpa_demo_query():
    """The demo's query data set: a lab's own control cells, made with the demo's screen."""
    return os.path.join(config["demo"]["dir"], "cpa_lab_controls.h5ad")


def demo_makes(path):
    """Whether rule cpa_demo_data writes the query data set ``path``."""
    return cpa_is_demo() and os.path.abspath(path) == os.path.abspath(cpa_demo_query())


def h5ad_cell_count(path, what):
    """Cells of the .h5ad ``path`` from its header (h5py), so the shards are known when the
    job graph is built; ``what`` names the file in messages."""
    if not os.path.exists(path):
        raise WorkflowError(f"{what} '{path}' does not exist (relative to '{os.getcwd()}'); fix the path.")
    try:
        import h5py
    except ImportError:
        raise WorkflowError(f"reading {what} needs h5py in the Snakemake environment: pip install h5py.")
    try:
        with h5py.File(path, "r") as handle:
            obs = handle["obs"]
            return int(obs[obs.attrs["_index"]].shape[0])
    except (OSError, KeyError) as err:
        raise WorkflowError(f"{what} '{path}' is not a readable .h5ad file ({err}).")


def cpa_cell_count():
    """Cells of cpa.adata, read from the .h5ad header (the demo's from the config), so the
    shards are known when the job graph is built."""
    if cpa_is_demo():
        return config["demo"]["cpa_cells"]
    return h5ad_cell_count(CPA["adata"], "cpa.adata")


def row_shards(total):
    """{shard name: (first row, row after the last)}: cpa.shard_size rows each."""
    size = CPA["shard_size"]
    return {chunk_name(i): (start, min(start + size, total)) for i, start in enumerate(range(0, total, size))}


def cpa_shards():
    """The inference shards of cpa.adata (none without it)."""
    if not HAS_ADATA:
        return {}
    total = cpa_cell_count()
    if total == 0:
        raise WorkflowError(f"cpa.adata '{CPA['adata']}' has no cells.")
    return row_shards(total)


def cpa_queries():
    """{name: entry} of cpa.query (shardmap.cpa.queries), each file's existence checked."""
    from shardmap.cpa.queries import query_entries

    try:
        queries = query_entries(CPA["query"])
    except InputError as err:
        raise WorkflowError(str(err)) from None
    return queries


def query_cell_count(name):
    """Cells of query ``name`` (the demo's query from the config)."""
    path = CPA_QUERIES[name]["adata"]
    if demo_makes(path):
        return config["demo"]["cpa_query_cells"]
    return h5ad_cell_count(path, f"cpa.query '{name}'")


def query_shards():
    """{query name: {shard name: (first row, row after the last)}}; a query without cells
    stops the run here, before any job."""
    shards = {}
    for name in CPA_QUERIES:
        total = query_cell_count(name)
        if total == 0:
            raise WorkflowError(
                f"cpa.query '{name}' ('{CPA_QUERIES[name]['adata']}') has no cells; remove the entry or point it "
                "at a file with cells."
            )
        shards[name] = row_shards(total)
    return shards


def query_adata(wildcards):
    """The .h5ad of query ``wildcards.query``."""
    return CPA_QUERIES[wildcards.query]["adata"]


def query_reference():
    """What a query is checked against: the model's folder, or for a model this run trains,
    the training file (the registry is made from it), so that the check runs before the
    training."""
    return {"model": MODEL_FILE} if not TRAINING else {"screen": CPA["adata"]}


def query_params(wildcards):
    """The entry of query ``wildcards.query`` as the tasks read it (its name and adata are
    the file's; the rest says how the model reads it)."""
    return CPA_QUERIES[wildcards.query]


def counterfactual_name(item):
    """The entry's `name`, else "<perturbation>_at_<dosage>" (or the perturbation alone)."""
    if item.get("name"):
        return item["name"]
    return f"{item['perturbation']}_at_{item['dosage']}" if item.get("dosage") else item["perturbation"]


def cpa_counterfactuals(on=None):
    """{name: (perturbation, dosage)} of the configured counterfactuals on the control
    cells of query ``on`` (None: of cpa.adata)."""
    from shardmap.cpa.queries import check_counterfactual_targets

    try:
        check_counterfactual_targets(CPA["counterfactuals"], CPA_QUERIES, HAS_ADATA)
    except InputError as err:
        raise WorkflowError(str(err)) from None
    named = {}
    for number, item in enumerate(CPA["counterfactuals"]):
        if item.get("on") != on:
            continue
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
            target = f"on '{on}'" if on else "on cpa.adata"
            raise WorkflowError(f"cpa.counterfactuals has two entries named '{name}' {target}; give one a `name`.")
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
    if (
        not (CPA["counterfactuals"] or CPA["dose_response"]["drugs"])
        or not TRAINING
        or not os.path.exists(CPA["adata"])
    ):
        return  # a model trained elsewhere: its tasks check the drugs against its vocabulary
    from shardmap.cpa.named_drugs import check_named_drugs, screen_drugs

    try:
        known = screen_drugs(CPA["adata"], CPA["perturbation_key"], CPA["control_group"])
        check_named_drugs(
            known, CPA["counterfactuals"], CPA["dose_response"]["drugs"], CPA["control_group"], CPA["adata"]
        )
    except InputError as err:
        raise WorkflowError(str(err)) from None


def check_needs_training_file():
    """cpa.dose_response samples control cells of cpa.adata: without it, say so."""
    if CPA["dose_response"]["drugs"] and not HAS_ADATA:
        raise WorkflowError(
            "cpa.dose_response.drugs is set, but the dose response is predicted from control cells of cpa.adata, "
            "which is not set; set cpa.adata, or leave cpa.dose_response.drugs empty."
        )


def query_outputs():
    """The latents of every query, its counterfactuals and the table of queries."""
    files = []
    for name in CPA_QUERIES:
        files.append(f"{OUT}/cpa/query/{name}/latents.h5ad")
        files += [f"{OUT}/cpa/query/{name}/counterfactuals/{cf}.h5ad" for cf in cpa_counterfactuals(on=name)]
    return files + ([f"{OUT}/cpa/query/queries.tsv"] if CPA_QUERIES else [])


def cpa_outputs():
    """The perturbation arm's targets of the default run."""
    files = [f"{OUT}/cpa/embeddings.h5ad"]
    if HAS_ADATA:
        files += [f"{OUT}/cpa/latents.h5ad"]
        files += [f"{OUT}/cpa/counterfactuals/{name}.h5ad" for name in cpa_counterfactuals()]
        files += [f"{OUT}/cpa/dose_response.tsv"] if CPA["dose_response"]["drugs"] else []
    files += [f"{OUT}/cpa/metrics.tsv"] if TRAINING else []
    return files + query_outputs()
