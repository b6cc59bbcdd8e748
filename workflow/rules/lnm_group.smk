# The specificity test of a lesion network mapping study: cases against control lesions
# in a voxelwise GLM, permutation inference split into tasks (permutation ranges x voxel
# chunks) that merge exactly, FWE by the maximum statistic, TFCE as an option, and the
# conjunction with the cases' sensitivity map (shardmap/lnm/group/). Requests:
# shardmap/lnm/group/resources.py.
#
# Each rule gets only the config keys it uses, so that changing alpha reruns the merge
# alone and changing the sensitivity threshold the cases' sensitivity maps and the merge;
# the permutation tasks' small results are kept, only the residuals are temporary.


include: "lnm_group_helpers.smk"


rule lnm_specificity_prepare:
    input:
        unpack(specificity_map_inputs),
        mask=MASK,
        mask_info=rules.lnm_mask_info.output.info,
    output:
        design=report(
            f"{SPECIFICITY}/design.tsv",
            caption="../report/specificity_design.rst",
            category=LNM_CATEGORY,
            subcategory="Specificity",
            labels={"figure": "design matrix"},
        ),
        residuals=temp(f"{SPECIFICITY_WORK}/residuals.npy"),
        glm=f"{SPECIFICITY_WORK}/glm.npz",
    log:
        f"{LNM_LOGS}/specificity/prepare.log",
    conda:
        "../../envs/lnm.yaml"
    resources:
        mem_mb=lambda wc, input: group_res.specificity_prepare_mem_mb(
            res.read_json(input.mask_info), len(DESIGN_LESIONS), input.get("maps", [])
        ),
        runtime=lambda wc, input: group_res.specificity_prepare_runtime(
            res.read_json(input.mask_info), len(DESIGN_LESIONS), SPEC["tfce"]
        ),
    params:
        **design_params(),
        sheet_covariates=SHEET_COVARIATES,
        spec={key: SPEC[key] for key in ("map", "covariates", "tfce")},
    script:
        "../scripts/lnm_specificity_prepare.py"


rule lnm_specificity_sensitivity:
    input:
        unpack(specificity_map_inputs),
        mask=MASK,
        mask_info=rules.lnm_mask_info.output.info,
    output:
        **cases_sensitivity_files(),
    log:
        f"{LNM_LOGS}/specificity/sensitivity.log",
    conda:
        "../../envs/lnm.yaml"
    resources:
        mem_mb=lambda wc, input: group_res.specificity_prepare_mem_mb(
            res.read_json(input.mask_info), 0, input.get("maps", [])
        ),
        runtime=lambda wc, input: group_res.specificity_prepare_runtime(
            res.read_json(input.mask_info), len(DESIGN_LESIONS), False
        ),
    params:
        **design_params(),
        spec={"map": SPEC["map"]},
        threshold=LNM["sensitivity_threshold"],
    script:
        "../scripts/lnm_specificity_sensitivity.py"


rule lnm_specificity_permutations:
    input:
        residuals=rules.lnm_specificity_prepare.output.residuals,
        glm=rules.lnm_specificity_prepare.output.glm,
        mask=MASK,
        mask_info=rules.lnm_mask_info.output.info,
    output:
        null=f"{SPECIFICITY_WORK}/null/perm-{{permutations}}_voxels-{{voxels}}.npz",
    log:
        f"{LNM_LOGS}/specificity/permutations/perm-{{permutations}}_voxels-{{voxels}}.log",
    wildcard_constraints:
        permutations=r"\d+",
        voxels=r"\d+",
    conda:
        "../../envs/lnm.yaml"
    threads: SPEC["threads"]
    resources:
        mem_mb=lambda wc, input: group_res.permutation_mem_mb(
            res.read_json(input.mask_info),
            len(DESIGN_LESIONS),
            len(SPEC["covariates"]),
            SPEC["voxel_chunks"],
            SPEC["tfce"],
        ),
        runtime=lambda wc, input, threads: group_res.permutation_runtime(
            res.read_json(input.mask_info),
            len(DESIGN_LESIONS),
            len(SPEC["covariates"]),
            PERMUTATION_SHARDS[wc.permutations][1] - PERMUTATION_SHARDS[wc.permutations][0],
            SPEC["voxel_chunks"],
            threads,
            SPEC["tfce"],
        ),
    params:
        permutations=lambda wc: PERMUTATION_SHARDS[wc.permutations],
        chunk=lambda wc: int(wc.voxels),
        spec={key: SPEC[key] for key in ("seed", "n_permutations", "voxel_chunks", "tfce")},
    script:
        "../scripts/lnm_specificity_permutations.py"


rule lnm_specificity_merge:
    input:
        glm=rules.lnm_specificity_prepare.output.glm,
        nulls=null_shard_files(),
        sensitivity_pos=rules.lnm_specificity_sensitivity.output.pos,
        sensitivity_neg=rules.lnm_specificity_sensitivity.output.neg,
        mask=MASK,
        mask_info=rules.lnm_mask_info.output.info,
    output:
        **specificity_result_files(),
    log:
        f"{LNM_LOGS}/specificity/merge.log",
    conda:
        "../../envs/lnm.yaml"
    resources:
        mem_mb=lambda wc, input: group_res.specificity_merge_mem_mb(
            res.read_json(input.mask_info), SPEC["n_permutations"]
        ),
        runtime=res.MIN_RUNTIME_MIN,
    params:
        spec={key: SPEC[key] for key in ("n_permutations", "alpha", "sensitivity_fraction")},
    script:
        "../scripts/lnm_specificity_merge.py"
