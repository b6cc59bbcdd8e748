# The lesion arm's helpers (included by lnm.smk): its sample sheets, their split into
# lesion batches and subject shards, and the files each rule reads and writes. They run
# in the Snakemake process while the job graph is built (standard library only).
from shardmap.lnm import resources as lnm_res
from shardmap.lnm.map_names import DEGREE_RESIDUAL_MAP_NAMES, GROUP_MAP_NAMES, MAP_NAMES, VERSUS_NULL_MAP_NAMES
from shardmap.lnm.sheets import chunks, read_lesions, read_subjects

LNM = config["lnm"]
SPEC = LNM["specificity"]


def load_sheets():
    """(lesions, subjects) of the two sheets; with the demo on, their files are made by
    rule lnm_demo_data, so they need not exist yet (but must lie inside demo.dir)."""
    try:
        if "lesions" not in LNM:  # the specificity GLM on maps made elsewhere: nothing to map
            return [], []
        demo = config["demo"]
        if not demo["enabled"]:
            return read_lesions(LNM["lesions"]), read_subjects(LNM["connectome"]["subjects"])
        lesions = read_lesions(LNM["lesions"], check_files=False)
        subjects = read_subjects(LNM["connectome"]["subjects"], check_files=False)
        generated = [LNM["connectome"]["mask"]]
        generated += [run for s in subjects for run in s.runs] + [les.path for les in lesions]
        outside = [p for p in generated if not is_inside(p, demo["dir"])]
        if outside:
            raise InputError(
                f"demo.enabled is true, so the demo generator would write {outside[:3]}, which "
                f"lie outside demo.dir '{demo['dir']}'. It never writes elsewhere: set "
                "demo.enabled: false to map your own data."
            )
        return lesions, subjects
    except InputError as err:
        raise WorkflowError(str(err)) from None


LESIONS, SUBJECTS = load_sheets()


def lesion_batches():
    """Lists of sheets.Lesion, lnm.lesion_batch_size at a time, in sheet order."""
    return chunks(LESIONS, LNM["lesion_batch_size"]) if LESIONS else []


def subject_shards():
    """Lists of sheets.Subject, lnm.subject_shard_size at a time, in sheet order."""
    return chunks(SUBJECTS, LNM["subject_shard_size"]) if SUBJECTS else []


BATCHES = {chunk_name(i): batch for i, batch in enumerate(lesion_batches())}
SHARDS = {chunk_name(i): shard for i, shard in enumerate(subject_shards())}
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


def lesion_map_names():
    """The maps of each lesion: AvgR, AvgR_Fz, T and, with lnm.degree_regression, the
    AvgR_Fz and T maps with the degree map regressed out."""
    return MAP_NAMES + (DEGREE_RESIDUAL_MAP_NAMES if LNM["degree_regression"] else ())


def lesion_map_layout(lesions):
    """(lesion id, map name) of every map of ``lesions``, in the order of lesion_map_files()."""
    return [(les.lesion_id, name) for les in lesions for name in lesion_map_names()]


def degree_regression_inputs(batch):
    """What a batch's lesion maps need besides its sums when lnm.degree_regression is on."""
    if not LNM["degree_regression"]:
        return {}
    return {"batch": f"{OUT}/lnm/lesions/batch-{batch}.npz", "degree": f"{OUT}/lnm/connectome/degree.nii.gz"}


def lesion_map_files(lesions=None):
    """The map files of ``lesions`` (default: every lesion of the sheet)."""
    return [f"{OUT}/lnm/maps/{lesion}_{name}.nii.gz" for lesion, name in lesion_map_layout(lesions or LESIONS)]


def check_group_names():
    """A group's maps go to a folder named after it beside the group maps of all lesions,
    and its figure beside theirs (sensitivity_all.png): names that would collide are refused,
    and so are lesion ids or groups that differ only in case (their files would collide)."""
    taken = {f"{name}.nii.gz" for name in GROUP_MAP_NAMES + VERSUS_NULL_MAP_NAMES} | {"all"}
    clash = sorted(set(GROUPS) & taken)
    if clash:
        raise WorkflowError(
            f"lesion sheet '{LNM['lesions']}': group name(s) {clash} are taken by the outputs for all "
            f"lesions (names {sorted(taken)} are reserved); rename the group(s)."
        )
    for what, names in (("lesion ids", [les.lesion_id for les in LESIONS]), ("groups", GROUPS)):
        pair = case_collision(names)
        if pair:
            raise WorkflowError(
                f"lesion sheet '{LNM['lesions']}': {what} '{pair[0]}' and '{pair[1]}' differ only in upper and "
                "lower case; they name output files, which would overwrite each other on a case-insensitive "
                "file system (macOS, Windows, many network shares). Rename one of them."
            )


check_group_names()


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
    """The lesion arm's targets of the default run."""
    qc = [f"{OUT}/lnm/qc/lesions.tsv", f"{OUT}/lnm/checked/runs.tsv"]
    files = (lesion_map_files() + group_map_files() + qc + hub_outputs()) if LESIONS else []
    return files + (list(specificity_files().values()) if SPEC["enabled"] else [])
