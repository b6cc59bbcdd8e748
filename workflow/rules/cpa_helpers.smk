# The perturbation arm's helpers (included by cpa.smk): the cells of cpa.adata split into
# inference shards, the configured counterfactuals, the training accelerator and the
# arm's targets. They run in the Snakemake process while the job graph is built.
import re

from shardmap.cpa import resources as cpa_res

CPA = config["cpa"]


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
        if item["perturbation"] != CPA["control_group"] and not item.get("dosage"):
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
    return named


def cpa_training_accelerator():
    """The accelerator cpa_train may use: a GPU only when it is declared (train.accelerator
    gpu or cuda, which also requests gpu=1); 'auto' trains on the CPU, so a scheduler
    never sees a task use a GPU it did not ask for."""
    accelerator = CPA["train"]["accelerator"]
    return "gpu" if accelerator in ("gpu", "cuda") else "cpu"


def cpa_outputs():
    """The perturbation arm's targets of the default run."""
    files = [f"{OUT}/cpa/latents.h5ad", f"{OUT}/cpa/metrics.tsv", f"{OUT}/cpa/embeddings.h5ad"]
    files += [f"{OUT}/cpa/counterfactuals/{name}.h5ad" for name in cpa_counterfactuals()]
    return files + ([f"{OUT}/cpa/dose_response.tsv"] if CPA["dose_response"]["drugs"] else [])
