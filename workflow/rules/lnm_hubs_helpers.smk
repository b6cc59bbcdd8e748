# The hub controls' helpers (included by lnm_hubs.smk): the null lesions of the run, their
# batches, and the files each rule reads and writes. Standard library only.
from shardmap.lnm.hubs import resources as hub_res
from shardmap.lnm.hubs.null_plan import null_plan
from shardmap.lnm.map_names import DEGREE_MAP_NAMES, MAP_NAMES, NULL_GROUP_MAP_NAMES, VERSUS_NULL_MAP_NAMES

NULL = LNM["null_lesions"]
NULL_DIR = f"{OUT}/lnm/null"


def load_null_plan():
    """(null id, source id, group, index) of every null lesion, or [] without the null."""
    if not NULL["enabled"]:
        return []
    try:
        return null_plan([(les.lesion_id, les.group) for les in LESIONS], NULL["n"])
    except InputError as err:
        raise WorkflowError(str(err)) from None


NULL_PLAN = load_null_plan()
NULL_BATCHES = {
    chunk_name(i): plan for i, plan in enumerate(chunks(NULL_PLAN, NULL["batch_size"] or LNM["lesion_batch_size"]))
}
BATCH_OF_LESION = {les.lesion_id: batch for batch, lesions in BATCHES.items() for les in lesions}


def degree_map_files():
    """{name: file} of the connectome's degree maps."""
    return {name: f"{CONNECTOME}/{name}.nii.gz" for name in DEGREE_MAP_NAMES}


def source_batches_of_null_batch(wildcards):
    """The prepared real lesion batches that hold the sources of a null batch."""
    batches = sorted({BATCH_OF_LESION[source] for _, source, _, _ in NULL_BATCHES[wildcards.batch]})
    return [f"{OUT}/lnm/lesions/batch-{b}.npz" for b in batches]


def null_partial_stats_of_batch(wildcards):
    prefix = f"{NULL_DIR}/partial/batch-{wildcards.batch}/shard-"
    return {
        "sums": [f"{prefix}{shard}.npy" for shard in SHARDS],
        "infos": [f"{prefix}{shard}.json" for shard in SHARDS],
    }


def null_merged_stats_files():
    return {
        "null_sums": [f"{NULL_DIR}/stats/batch-{b}.npy" for b in NULL_BATCHES],
        "null_infos": [f"{NULL_DIR}/stats/batch-{b}.json" for b in NULL_BATCHES],
    }


def kept_unless_asked(path):
    """The null batches' merged sums are temporary unless lnm.null_lesions.keep_maps."""
    return path if NULL["keep_maps"] else temp(path)


def null_lesion_map_layout(plan):
    return [(null_id, name) for null_id, _, _, _ in plan for name in MAP_NAMES]


def null_lesion_map_files(plan=None):
    """The per-null-lesion maps (written only with lnm.null_lesions.keep_maps)."""
    return [f"{NULL_DIR}/maps/{null_id}_{name}.nii.gz" for null_id, name in null_lesion_map_layout(plan or NULL_PLAN)]


def null_group_map_layout():
    """(group, name) of every map of the null group task, in the order of null_group_map_files();
    group "" is all lesions; names "null_..." are the null lesions' maps."""
    return [
        (group, name)
        for group in [""] + GROUPS
        for name in [f"null_{n}" for n in NULL_GROUP_MAP_NAMES] + list(VERSUS_NULL_MAP_NAMES)
    ]


def null_group_map_files():
    """The files of null_group_map_layout(): the null lesions' maps under lnm/null/group, the
    real sensitivity's percentile maps beside the real group maps."""
    files = []
    for group, name in null_group_map_layout():
        folder = f"{NULL_DIR}/group" if name.startswith("null_") else f"{OUT}/lnm/group"
        if group:
            folder = f"{folder}/{group}"
        files.append(f"{folder}/{name.removeprefix('null_')}.nii.gz")
    return files


def null_outputs():
    files = null_group_map_files() + [f"{OUT}/lnm/qc/null_summary.tsv"]
    return files + (null_lesion_map_files() if NULL["keep_maps"] else [])


def hub_outputs():
    """The hub controls' targets: the degree maps, the hub-bias table and, with
    lnm.null_lesions.enabled, the random-lesion null's maps and table."""
    return (
        list(degree_map_files().values()) + [f"{OUT}/lnm/qc/hub_bias.tsv"] + (null_outputs() if NULL["enabled"] else [])
    )
