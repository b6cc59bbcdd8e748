# The specificity test of a lesion network mapping study: cases against control lesions
# in a voxelwise GLM, permutation inference split into tasks (permutation ranges x voxel
# chunks) that merge exactly, FWE by the maximum statistic, TFCE as an option, and the
# conjunction with the cases' sensitivity map. Requests: shardmap/lnm/resources.py.


include: "lnm_specificity_helpers.smk"


rule lnm_specificity_prepare:
    input:
        unpack(specificity_map_inputs),
        mask=LNM["connectome"]["mask"],
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
        glm=temp(f"{SPECIFICITY_WORK}/glm.npz"),
    log:
        f"{LNM_LOGS}/specificity/prepare.log",
    conda:
        "../../envs/lnm.yaml"
    resources:
        mem_mb=lambda wc, input: lnm_res.specificity_prepare_mem_mb(
            res.read_json(input.mask_info), len(DESIGN_LESIONS), input.get("maps", [])
        ),
        runtime=lambda wc, input: lnm_res.specificity_prepare_runtime(
            res.read_json(input.mask_info), len(DESIGN_LESIONS), SPEC["tfce"]
        ),
    params:
        sheet=DESIGN_SHEET,
        design=[(les.lesion_id, les.group, case) for les, case in DESIGN_LESIONS],
        lesion_maps=(
            [(les.lesion_id, les.map_path, les.group, les.path) for les, _ in DESIGN_LESIONS] if SPEC["maps"] else []
        ),
        sheet_covariates=SHEET_COVARIATES,
        unused_columns=unused_sheet_columns(),
        spec=SPEC,
        sensitivity_threshold=LNM["sensitivity_threshold"],
        lesion_rules={
            key: LNM[key] for key in ("lesion_values", "lesion_threshold", "lesion_resampling", "lesion_coverage")
        },
    script:
        "../scripts/lnm_specificity_prepare.py"


rule lnm_specificity_permutations:
    input:
        residuals=rules.lnm_specificity_prepare.output.residuals,
        glm=rules.lnm_specificity_prepare.output.glm,
        mask=LNM["connectome"]["mask"],
        mask_info=rules.lnm_mask_info.output.info,
    output:
        null=temp(f"{SPECIFICITY_WORK}/null/perm-{{permutations}}_voxels-{{voxels}}.npz"),
    log:
        f"{LNM_LOGS}/specificity/permutations/perm-{{permutations}}_voxels-{{voxels}}.log",
    wildcard_constraints:
        permutations=r"\d{4}",
        voxels=r"\d{4}",
    conda:
        "../../envs/lnm.yaml"
    threads: SPEC["threads"]
    resources:
        mem_mb=lambda wc, input: lnm_res.permutation_mem_mb(
            res.read_json(input.mask_info),
            len(DESIGN_LESIONS),
            len(SPEC["covariates"]),
            SPEC["voxel_chunks"],
            SPEC["tfce"],
        ),
        runtime=lambda wc, input, threads: lnm_res.permutation_runtime(
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
        spec=SPEC,
    script:
        "../scripts/lnm_specificity_permutations.py"


rule lnm_specificity_merge:
    input:
        glm=rules.lnm_specificity_prepare.output.glm,
        nulls=null_shard_files(),
        mask=LNM["connectome"]["mask"],
        mask_info=rules.lnm_mask_info.output.info,
    output:
        **{name: path for name, path in specificity_files().items() if name != "design"},
    log:
        f"{LNM_LOGS}/specificity/merge.log",
    conda:
        "../../envs/lnm.yaml"
    resources:
        mem_mb=lambda wc, input: lnm_res.specificity_merge_mem_mb(
            res.read_json(input.mask_info), SPEC["n_permutations"]
        ),
        runtime=res.MIN_RUNTIME_MIN,
    params:
        spec=SPEC,
    script:
        "../scripts/lnm_specificity_merge.py"
