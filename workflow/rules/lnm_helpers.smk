# The lesion arm's helpers (included by lnm.smk): its sample sheets, their split into
# lesion batches and subject shards, and the files each rule reads and writes. They run
# in the Snakemake process while the job graph is built: standard library only, but for
# the subject list of a connectome prepared by another tool, read from its index (HDF5
# shapes, Lead-DBS's MATLAB files) with h5py and pymatreader.
import functools

from shardmap.lnm import resources as lnm_res
from shardmap.lnm.map_names import DEGREE_RESIDUAL_MAP_NAMES, GROUP_MAP_NAMES, MAP_NAMES, VERSUS_NULL_MAP_NAMES
from shardmap.lnm.sheets import chunks, read_lesions, read_subjects

LNM = config["lnm"]
SPEC = LNM["specificity"]
CONNECTOME_CONFIG = LNM["connectome"]
CONNECTOME_FORMAT = CONNECTOME_CONFIG["format"]


def check_connectome_keys():
    """What the schema cannot say per format: a path is for prepared formats only, and
    connectome_quick needs the mask its files were made with."""
    problems = []
    if CONNECTOME_FORMAT == "nifti" and "path" in CONNECTOME_CONFIG:
        problems.append(
            "lnm.connectome.path is set but format is nifti, whose runs are listed in lnm.connectome.subjects; "
            "set lnm.connectome.format to the prepared format at that path (lacuna, connectome_quick, leaddbs)"
        )
    if CONNECTOME_FORMAT == "connectome_quick" and "mask" not in CONNECTOME_CONFIG:
        problems.append(
            "lnm.connectome.mask is required with format connectome_quick: its files store no mask; give the "
            "mask they were made with (the Fox lab's GSP1000: FSL's MNI152_T1_2mm_brain_mask_dil)"
        )
    if problems:
        raise WorkflowError("config: " + "; ".join(problems) + ".")


def connectome_mask():
    """The mask the maps are written on: lnm.connectome.mask, or the prepared
    connectome's own (written by rule lnm_connectome_mask) when it is left out."""
    return CONNECTOME_CONFIG.get("mask") or f"{OUT}/lnm/connectome/mask.nii.gz"


@functools.cache
def prepared_connectome():
    """The prepared connectome, opened once per Snakemake process (Lead-DBS's index is read
    on opening)."""
    from shardmap.lnm.connectome.formats import open_connectome

    return open_connectome(CONNECTOME_FORMAT, CONNECTOME_CONFIG["path"], CONNECTOME_CONFIG["run_frames"])


def read_connectome_subjects(check_files=True):
    """The connectome's subjects: the subject sheet's runs (format nifti) or the prepared
    connectome's subjects, all or those its subset sheet names."""
    if CONNECTOME_FORMAT == "nifti":
        return read_subjects(CONNECTOME_CONFIG["subjects"], check_files=check_files)
    from shardmap.lnm.connectome.formats import selected_subjects

    return selected_subjects(prepared_connectome(), CONNECTOME_CONFIG.get("subjects"))


def load_sheets():
    """(lesions, subjects) of the two sheets; with the demo on, their files are made by
    rule lnm_demo_data, so they need not exist yet (but must lie inside demo.dir)."""
    try:
        if "lesions" not in LNM:  # the specificity GLM on maps made elsewhere: nothing to map
            if "mask" not in CONNECTOME_CONFIG:
                raise InputError(
                    "lnm.connectome.mask is required: the maps of lnm.specificity.maps are resampled to it."
                )
            return [], []
        check_connectome_keys()
        demo = config["demo"]
        if demo["enabled"] and CONNECTOME_FORMAT != "nifti":
            raise InputError(
                f"demo.enabled is true, but the demo makes NIfTI runs and lnm.connectome.format is "
                f"{CONNECTOME_FORMAT}: set demo.enabled: false to map your own connectome."
            )
        if not demo["enabled"]:
            return read_lesions(LNM["lesions"]), read_connectome_subjects()
        lesions = read_lesions(LNM["lesions"], check_files=False)
        subjects = read_subjects(CONNECTOME_CONFIG["subjects"], check_files=False)
        generated = [CONNECTOME_CONFIG["mask"]]
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
MASK = connectome_mask()


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
    """The subjects of a shard as (subject_id, runs[, position]) lists, for the connectome
    preparation task."""
    return [s.as_params() for s in SHARDS[wildcards.shard]]


def connectome_files(subjects):
    """The files that hold ``subjects`` (each once), and a prepared connectome's index files."""
    files = dict.fromkeys(run for s in subjects for run in s.runs)
    if CONNECTOME_FORMAT != "nifti":
        from shardmap.lnm.connectome.formats import connectome_index_files

        files.update(dict.fromkeys(connectome_index_files(CONNECTOME_FORMAT, CONNECTOME_CONFIG["path"])))
    return list(files)


def connectome_mask_files():
    """What rule lnm_connectome_mask reads the prepared connectome's own mask from."""
    from shardmap.lnm.connectome.formats import connectome_mask_files as mask_files

    return mask_files(CONNECTOME_FORMAT, CONNECTOME_CONFIG["path"])


def runs_of_shard(wildcards):
    return connectome_files(SHARDS[wildcards.shard])


def prepare_shard_mem_mb(wildcards, input):
    """The memory request of a shard's preparation: from its runs' NIfTI headers, or from a
    prepared connectome's headers (read here, when the job is scheduled)."""
    mask_info = res.read_json(input.mask_info)
    subjects = SHARDS[wildcards.shard]
    if CONNECTOME_FORMAT == "nifti":
        return lnm_res.prepare_shard_mem_mb(mask_info, input.runs, len(subjects))
    connectome = prepared_connectome()
    try:
        shapes = [connectome.run_shapes(s) for s in subjects]
    except InputError:  # the task itself stops with the message; the request only lets it start
        shapes = [[(1200, mask_info["n_voxels"])]]
    return lnm_res.prepare_prepared_shard_mem_mb(mask_info, shapes)


def connectome_name():
    """lnm.connectome.name, or the name of the prepared connectome's folder (file), or of
    the subject sheet (format nifti), without its extension."""
    if "name" in CONNECTOME_CONFIG:
        return CONNECTOME_CONFIG["name"]
    source = CONNECTOME_CONFIG.get("path") or CONNECTOME_CONFIG.get("subjects") or "connectome"
    return os.path.splitext(os.path.basename(os.path.normpath(source)))[0]


def connectome_source_params():
    """The ``source`` param of the tasks that read the connectome, for a prepared format
    only: NIfTI runs need none, and an existing outdir's NIfTI preparations keep exactly
    the params they were made with (the params trigger would rerun them otherwise)."""
    return {} if CONNECTOME_FORMAT == "nifti" else {"source": connectome_source()}


def connectome_source():
    """How the preparation tasks read the connectome: the format and, for a prepared one,
    its path (and run_frames for connectome_quick, the only format that uses it)."""
    if CONNECTOME_FORMAT == "nifti":
        return {"format": "nifti"}
    source = {"format": CONNECTOME_FORMAT, "path": CONNECTOME_CONFIG["path"]}
    if CONNECTOME_FORMAT == "connectome_quick":
        source["run_frames"] = CONNECTOME_CONFIG["run_frames"]
    return source


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
    sheets = [f"{OUT}/lnm/maps.tsv", f"{OUT}/lnm/maps/connectome.json"]
    files = (lesion_map_files() + group_map_files() + qc + sheets + hub_outputs()) if LESIONS else []
    return files + (list(specificity_files().values()) if SPEC["enabled"] else [])
