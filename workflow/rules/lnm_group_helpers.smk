# The specificity test's helpers (included by lnm_group.smk): its design, checked
# while the job graph is built (groups, covariates, the sheet's values), the permutation
# tasks and the files each rule reads and writes. Standard library only.
from shardmap.lnm.group import resources as group_res
from shardmap.lnm.group.design import (
    DesignSpec,
    check_covariate_values,
    check_reachable_alpha,
    select_design_lesions,
    sheet_covariate_values,
)
from shardmap.lnm.group.permutations import permutation_ranges
from shardmap.lnm.map_names import SPECIFICITY_MAP_NAMES
from shardmap.lnm.sheets import read_lesion_maps

SPECIFICITY = f"{OUT}/lnm/specificity"
SPECIFICITY_WORK = f"{SPECIFICITY}/work"


def design_sheet():
    """(sheet path, rows) the design is drawn from: the lesion map sheet when
    lnm.specificity.maps is set, otherwise the lesion sheet of this run."""
    if SPEC["maps"]:
        return SPEC["maps"], read_lesion_maps(SPEC["maps"])
    return LNM["lesions"], LESIONS


def load_design():
    """The design's lesions with 1 for a case and 0 for a control, and the sheet's
    covariate values; every problem stops the run here, before any task."""
    try:
        if SPEC["tfce"] and SPEC["voxel_chunks"] != 1:
            raise InputError(
                "lnm.specificity.tfce is true, and TFCE needs the whole map of every permutation: set "
                "lnm.specificity.voxel_chunks: 1 (split the permutations instead, with permutation_shard_size)."
            )
        if SPEC["map"].endswith("_degree-resid") and "centrality" in SPEC["covariates"] and not SPEC["maps"]:
            raise InputError(
                f"lnm.specificity.map is {SPEC['map']}: a map with the degree map regressed out (fitted outside "
                "the lesion) has mean 0 outside the lesion, so the covariate centrality (that mean) is 0 for every "
                "lesion; drop centrality from lnm.specificity.covariates."
            )
        sheet, rows = design_sheet()
        spec = DesignSpec.from_config(SPEC)
        selected = select_design_lesions(rows, spec, sheet)
        built_in = [name for name in spec.covariates if name not in spec.sheet_covariates]
        no_mask = [les.lesion_id for les, _ in selected if les.path is None]
        if built_in and no_mask:
            raise InputError(
                f"lnm.specificity.covariates {built_in} are computed from each lesion's mask, but the lesion "
                f"map sheet '{sheet}' gives no path for {no_mask[:5]}; add a path column or drop them."
            )
        values = sheet_covariate_values(selected, spec, sheet)
        check_covariate_values(selected, values, len(spec.covariates))
        n_cases = sum(case for _, case in selected)
        check_reachable_alpha(n_cases, len(selected) - n_cases, SPEC["n_permutations"], SPEC["alpha"])
        return sheet, rows, selected, values
    except InputError as err:
        raise WorkflowError(str(err)) from None


DESIGN_SHEET, DESIGN_ROWS, DESIGN_LESIONS, SHEET_COVARIATES = load_design()
PERMUTATION_SHARDS = {
    chunk_name(i): span
    for i, span in enumerate(permutation_ranges(SPEC["n_permutations"], SPEC["permutation_shard_size"]))
}
VOXEL_CHUNKS = [chunk_name(i) for i in range(SPEC["voxel_chunks"])]


def design_params():
    """What the tasks that read the design's maps need to know about its lesions."""
    return {
        "sheet": DESIGN_SHEET,
        "design": [(les.lesion_id, les.group, case) for les, case in DESIGN_LESIONS],
        "lesion_maps": (
            [(les.lesion_id, les.map_path, les.group, les.path, les.t_map_path) for les, _ in DESIGN_LESIONS]
            if SPEC["maps"]
            else []
        ),
        "lesion_rules": {
            key: LNM[key] for key in ("lesion_values", "lesion_threshold", "lesion_resampling", "lesion_coverage")
        },
    }


def specificity_map_inputs(wildcards):
    """What the prepare task reads: this run's merged statistics and lesion batches, or
    the maps (and lesion masks) of the lesion map sheet."""
    if SPEC["maps"]:
        return {
            "maps": [les.map_path for les, _ in DESIGN_LESIONS],
            "lesions": [les.path for les, _ in DESIGN_LESIONS if les.path is not None],
        }
    design_ids = {les.lesion_id for les, _ in DESIGN_LESIONS}
    batches = [b for b, lesions in BATCHES.items() if any(les.lesion_id in design_ids for les in lesions)]
    inputs = {
        "sums": [f"{OUT}/lnm/stats/batch-{b}.npy" for b in batches],
        "infos": [f"{OUT}/lnm/stats/batch-{b}.json" for b in batches],
        "batches": [f"{OUT}/lnm/lesions/batch-{b}.npz" for b in batches],
    }
    if SPEC["map"].endswith("_degree-resid"):
        inputs["degree"] = f"{OUT}/lnm/connectome/degree.nii.gz"
    return inputs


def null_shard_files():
    return [f"{SPECIFICITY_WORK}/null/perm-{p}_voxels-{v}.npz" for p in PERMUTATION_SHARDS for v in VOXEL_CHUNKS]


def specificity_map_names():
    return [name for name in SPECIFICITY_MAP_NAMES if SPEC["tfce"] or "tfce" not in name]


def specificity_result_files():
    """{name: file} of what the merge writes: the maps and the null table."""
    files = {name: f"{SPECIFICITY}/{name}.nii.gz" for name in specificity_map_names()}
    files["null_max"] = f"{SPECIFICITY}/null_max.tsv"
    return files


def cases_sensitivity_files():
    return {sign: f"{SPECIFICITY}/cases_sensitivity_{sign}.nii.gz" for sign in ("pos", "neg")}


def specificity_files():
    """{name: file} of every specificity output (maps, null table, design, the cases'
    sensitivity maps)."""
    files = specificity_result_files()
    files["design"] = f"{SPECIFICITY}/design.tsv"
    files.update({f"cases_sensitivity_{sign}": path for sign, path in cases_sensitivity_files().items()})
    return files
