# Sample-sheet helpers, the split of the work into batches and shards, and wildcard
# constraints. Everything here runs in the Snakemake process while the job graph is
# built, so it only uses the standard library and shardmap's stdlib-only modules.
import os

from snakemake.exceptions import WorkflowError

from shardmap import resources as res
from shardmap.errors import InputError, check_writable_folder
from shardmap.lnm.sheets import chunk_name, chunks, read_lesions, read_subjects

OUT = config["outdir"]
try:
    check_writable_folder(OUT)
except InputError as err:
    raise WorkflowError(str(err)) from None
LNM = config["lnm"]

ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"


wildcard_constraints:
    batch=r"\d{4}",
    shard=r"\d{4}",
    lesion=ID_PATTERN,
    group=ID_PATTERN,
    counterfactual=r"[A-Za-z0-9][A-Za-z0-9._+-]*",


def _inside(path, folder):
    path, folder = os.path.abspath(path), os.path.abspath(folder)
    return os.path.commonpath([path, folder]) == folder


def _load_sheets():
    """Read both sheets; with the demo on, its files are made by rule lnm_demo_data."""
    if not LNM["enabled"]:
        return [], [], frozenset()
    try:
        demo = config["demo"]
        if not demo["enabled"]:
            return (
                read_lesions(LNM["lesions"]),
                read_subjects(LNM["connectome"]["subjects"]),
                frozenset(),
            )
        lesions = read_lesions(LNM["lesions"], check_files=False)
        subjects = read_subjects(LNM["connectome"]["subjects"], check_files=False)
        generated = [LNM["connectome"]["mask"]]
        generated += [run for s in subjects for run in s.runs] + [les.path for les in lesions]
        outside = [p for p in generated if not _inside(p, demo["dir"])]
        if outside:
            raise InputError(
                f"demo.enabled is true, so the demo generator would write {outside[:3]}, which "
                f"lie outside demo.dir '{demo['dir']}'. It never writes elsewhere: set "
                "demo.enabled: false to map your own data."
            )
        return lesions, subjects, frozenset(generated)
    except InputError as err:
        raise WorkflowError(str(err)) from None


LESIONS, SUBJECTS, DEMO_FILES = _load_sheets()


def lesion_batches():
    """Lists of sheets.Lesion, lnm.lesion_batch_size at a time, in sheet order."""
    return chunks(LESIONS, LNM["lesion_batch_size"]) if LESIONS else []


def subject_shards():
    """Lists of sheets.Subject, lnm.subject_shard_size at a time, in sheet order."""
    return chunks(SUBJECTS, LNM["subject_shard_size"]) if SUBJECTS else []


BATCHES = {chunk_name(i): batch for i, batch in enumerate(lesion_batches())}
SHARDS = {chunk_name(i): shard for i, shard in enumerate(subject_shards())}
BATCH_OF_LESION = {les.lesion_id: name for name, batch in BATCHES.items() for les in batch}
GROUPS = sorted({les.group for les in LESIONS if les.group is not None})


def lesions_of_batch(wildcards):
    """(lesion_id, path, group) triples of a batch, for the lesion preparation task."""
    return [(les.lesion_id, les.path, les.group) for les in BATCHES[wildcards.batch]]


def lesion_paths_of_batch(wildcards):
    return [les.path for les in BATCHES[wildcards.batch]]


def subjects_of_shard(wildcards):
    """(subject_id, runs) pairs of a shard, for the connectome preparation task."""
    return [(s.subject_id, list(s.runs)) for s in SHARDS[wildcards.shard]]


def runs_of_shard(wildcards):
    return [run for s in SHARDS[wildcards.shard] for run in s.runs]


def batch_of_lesion(wildcards):
    if wildcards.lesion not in BATCH_OF_LESION:
        raise WorkflowError(f"lesion '{wildcards.lesion}' is not in the lesion sheet '{LNM['lesions']}'.")
    return BATCH_OF_LESION[wildcards.lesion]


def merged_stats_of_lesion(wildcards):
    batch = batch_of_lesion(wildcards)
    return {"sums": f"{OUT}/lnm/stats/batch-{batch}.npy", "info": f"{OUT}/lnm/stats/batch-{batch}.json"}


def partial_stats_of_batch(wildcards):
    prefix = f"{OUT}/lnm/partial/batch-{wildcards.batch}/shard-"
    return {
        "sums": [f"{prefix}{shard}.npy" for shard in SHARDS],
        "infos": [f"{prefix}{shard}.json" for shard in SHARDS],
    }


def merged_stats_files():
    return {
        "sums": [f"{OUT}/lnm/stats/batch-{b}.npy" for b in BATCHES],
        "infos": [f"{OUT}/lnm/stats/batch-{b}.json" for b in BATCHES],
    }


def lesion_map_files():
    return [
        f"{OUT}/lnm/maps/{les.lesion_id}_{name}.nii.gz"
        for les in LESIONS
        for name in ("AvgR", "AvgR_Fz", "T")
    ]


GROUP_MAP_NAMES = ("sensitivity_pos", "sensitivity_neg", "mean_AvgR_Fz")


def group_map_layout():
    """(group, map name) of every group map; group "" is all lesions together."""
    return [(group, name) for group in [""] + GROUPS for name in GROUP_MAP_NAMES]


def group_map_files():
    """The group map files, in the order of group_map_layout()."""
    return [
        f"{OUT}/lnm/group/{group}/{name}.nii.gz" if group else f"{OUT}/lnm/group/{name}.nii.gz"
        for group, name in group_map_layout()
    ]


def lnm_outputs():
    if not LNM["enabled"]:
        return []
    return lesion_map_files() + group_map_files() + [f"{OUT}/lnm/qc/lesions.tsv"]


CPA = config["cpa"]


def _cpa_is_demo():
    return config["demo"]["enabled"] and _inside(CPA["adata"], config["demo"]["dir"])


def cpa_cell_count():
    """Cells of cpa.adata, read from the .h5ad header (the demo's from the config), so the
    shards are known when the job graph is built."""
    if _cpa_is_demo():
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
    if not CPA["enabled"]:
        return []
    return (
        [f"{OUT}/cpa/latents.h5ad", f"{OUT}/cpa/metrics.tsv"]
        + [f"{OUT}/cpa/counterfactuals/{name}.h5ad" for name in cpa_counterfactuals()]
    )


# The report's figures (report.smk, included when `report` is true).
FIGURES = f"{OUT}/figures"
REPORT_LOGS = f"{OUT}/logs/report"
LESION_BY_ID = {les.lesion_id: les for les in LESIONS}
LNM_CATEGORY = "1. Lesion network mapping"
CPA_CATEGORY = "2. Perturbation model (CPA)"
RUN_CATEGORY = "3. Config and software"


def lesion_of(wildcards):
    if wildcards.lesion not in LESION_BY_ID:
        raise WorkflowError(f"lesion '{wildcards.lesion}' is not in the lesion sheet '{LNM['lesions']}'.")
    return LESION_BY_ID[wildcards.lesion]


def lesion_figure_files():
    return [f"{FIGURES}/lnm/lesions/{les.lesion_id}.png" for les in LESIONS]


def sensitivity_figure_files():
    """{group: PNG}; group "" is all lesions together."""
    return {group: f"{FIGURES}/lnm/sensitivity_{group or 'all'}.png" for group in [""] + GROUPS}


CPA_LATENT_FIGURES = {"X_cpa_basal": "umap_basal", "X_cpa": "umap_latent"}


def report_outputs():
    files = [f"{OUT}/report/software.tsv", f"{OUT}/report/config.yaml"]
    if LNM["enabled"]:
        files += lesion_figure_files() + list(sensitivity_figure_files().values())
        files += [f"{FIGURES}/lnm/qc.png"]
    if CPA["enabled"]:
        files += [f"{FIGURES}/cpa/training.png", f"{FIGURES}/cpa/predicted_vs_observed.png"]
        files += [f"{FIGURES}/cpa/{name}.png" for name in CPA_LATENT_FIGURES.values()]
    return files


def final_outputs():
    """The targets of the default run: the results of each enabled arm and, with `report: true`,
    the report's figures (report_outputs() in report.smk)."""
    figures = report_outputs() if config["report"] else []
    return lnm_outputs() + cpa_outputs() + figures
