# Functional lesion network mapping: prepare the connectome and the lesions once, map
# every (lesion batch x subject shard) pair, merge the partial sums per batch, write the
# maps of each lesion and the group maps. Memory and runtime requests are functions of
# the data (see shardmap/lnm/resources.py and config/README.md).


include: "lnm_helpers.smk"


LNM_LOGS = f"{OUT}/logs/lnm"
CONNECTOME = f"{OUT}/lnm/connectome"


if config["demo"]["enabled"] and LESIONS:

    rule lnm_demo_data:
        input:
            subjects=CONNECTOME_CONFIG["subjects"],
            lesions=LNM["lesions"],
        output:
            mask=MASK,
            runs=[run for s in SUBJECTS for run in s.runs],
            lesions=[les.path for les in LESIONS],
        log:
            f"{LNM_LOGS}/demo_data.log",
        conda:
            "../../envs/lnm.yaml"
        resources:
            mem_mb=res.fixed_mb(1400),
            runtime=10,
        script:
            "../scripts/lnm_demo_data.py"


if CONNECTOME_FORMAT != "nifti" and "mask" not in CONNECTOME_CONFIG:

    # lnm.connectome.mask left out: the maps are written on the mask the prepared
    # connectome stores (lacuna's mask_indices, Lead-DBS's vol.outidx), on its own grid.
    rule lnm_connectome_mask:
        input:
            connectome_mask_files(),
        output:
            mask=MASK,
        log:
            f"{LNM_LOGS}/connectome_mask.log",
        conda:
            "../../envs/lnm.yaml"
        resources:
            mem_mb=res.fixed_mb(1000),
            runtime=res.MIN_RUNTIME_MIN,
        params:
            source=connectome_source(),
        script:
            "../scripts/lnm_connectome_mask.py"


rule lnm_mask_info:
    input:
        mask=MASK,
    output:
        info=f"{CONNECTOME}/mask.json",
    log:
        f"{LNM_LOGS}/mask_info.log",
    conda:
        "../../envs/lnm.yaml"
    resources:
        mem_mb=lambda wc, input: lnm_res.mask_info_mem_mb(input.size_mb),
        runtime=res.MIN_RUNTIME_MIN,
    script:
        "../scripts/lnm_mask_info.py"


# The connectome's runs, all of them at once: every bad header listed in one message, and
# the inventory with each run's TR (subjects whose TR differs from the majority's are
# named). It runs first (priority) but gates no job: each shard's preparation checks its
# own runs' headers again before reading them, and each lesion batch's preparation its
# lesions, before any mapping. A check that gated the shards through ancient() made
# Snakemake skip the jobs behind it whenever it alone reran (a lesion added), new targets
# of the same run included.
rule lnm_check_inputs:
    input:
        mask=MASK,
        mask_info=rules.lnm_mask_info.output.info,
        runs=connectome_files(SUBJECTS),
    output:
        runs=report(
            f"{OUT}/lnm/checked/runs.tsv",
            caption="../report/runs_table.rst",
            category=LNM_CATEGORY,
            subcategory="QC",
            labels={"figure": "connectome runs"},
        ),
    log:
        f"{LNM_LOGS}/check_inputs.log",
    priority: 10
    conda:
        "../../envs/lnm.yaml"
    resources:
        mem_mb=lambda wc, input: lnm_res.check_runs_mem_mb(res.read_json(input.mask_info)),
        runtime=lambda wc, input: lnm_res.check_runs_runtime(input.runs),
    params:
        **connectome_source_params(),
        subjects=[s.as_params() for s in SUBJECTS],
    script:
        "../scripts/lnm_check_inputs.py"


rule lnm_prepare_connectome:
    input:
        mask=MASK,
        mask_info=rules.lnm_mask_info.output.info,
        runs=runs_of_shard,
    output:
        data=f"{CONNECTOME}/shard-{{shard}}.npy",
        norms=f"{CONNECTOME}/shard-{{shard}}.norms.npy",
        info=f"{CONNECTOME}/shard-{{shard}}.json",
        degree=f"{CONNECTOME}/shard-{{shard}}.degree.npy",
    log:
        f"{LNM_LOGS}/prepare_connectome/shard-{{shard}}.log",
    conda:
        "../../envs/lnm.yaml"
    # One thread decodes the next subject while the other centres, scales and writes this one.
    threads: 2
    resources:
        mem_mb=prepare_shard_mem_mb,
        runtime=lambda wc, input: lnm_res.prepare_shard_runtime(input.runs),
    params:
        **connectome_source_params(),
        subjects=subjects_of_shard,
        dtype=CONNECTOME_CONFIG["dtype"],
    script:
        "../scripts/lnm_prepare_connectome.py"


# Light, and it checks every lesion of its batch: scheduled before the shard preparation
# (priority), so that a bad lesion stops the run early.
rule lnm_prepare_lesions:
    input:
        mask=MASK,
        mask_info=rules.lnm_mask_info.output.info,
        lesions=lesion_paths_of_batch,
    output:
        batch=f"{OUT}/lnm/lesions/batch-{{batch}}.npz",
        qc=f"{OUT}/lnm/lesions/batch-{{batch}}.qc.tsv",
    log:
        f"{LNM_LOGS}/prepare_lesions/batch-{{batch}}.log",
    priority: 5
    conda:
        "../../envs/lnm.yaml"
    resources:
        mem_mb=lambda wc, input: lnm_res.lesion_batch_mem_mb(
            res.read_json(input.mask_info), input.lesions, LNM["lesion_resampling"] == "coverage"
        ),
        runtime=res.MIN_RUNTIME_MIN,
    params:
        lesions=lesions_of_batch,
        rules={key: LNM[key] for key in ("lesion_values", "lesion_threshold", "lesion_resampling", "lesion_coverage")},
    script:
        "../scripts/lnm_prepare_lesions.py"


rule lnm_map:
    input:
        batch=rules.lnm_prepare_lesions.output.batch,
        data=rules.lnm_prepare_connectome.output.data,
        norms=rules.lnm_prepare_connectome.output.norms,
        info=rules.lnm_prepare_connectome.output.info,
    output:
        sums=temp(f"{OUT}/lnm/partial/batch-{{batch}}/shard-{{shard}}.npy"),
        info=temp(f"{OUT}/lnm/partial/batch-{{batch}}/shard-{{shard}}.json"),
    log:
        f"{LNM_LOGS}/map/batch-{{batch}}_shard-{{shard}}.log",
    conda:
        "../../envs/lnm.yaml"
    threads: LNM["threads"]
    resources:
        mem_mb=lambda wc, input: lnm_res.mapping_mem_mb(
            res.read_json(input.info), len(BATCHES[wc.batch]), LNM["device"]
        ),
        runtime=lambda wc, input, threads: lnm_res.mapping_runtime(
            res.read_json(input.info), len(BATCHES[wc.batch]), threads, LNM["device"]
        ),
        gpu=1 if LNM["device"] == "cuda" else 0,
    # lnm.device and lnm.threads say where and how fast it maps, not what: the script reads
    # them from the config, so changing one reruns nothing (the CPU and GPU kernels agree to
    # float rounding, config/README.md "What a change reruns").
    script:
        "../scripts/lnm_map.py"


rule lnm_merge:
    input:
        unpack(partial_stats_of_batch),
        mask_info=rules.lnm_mask_info.output.info,
    output:
        sums=f"{OUT}/lnm/stats/batch-{{batch}}.npy",
        info=f"{OUT}/lnm/stats/batch-{{batch}}.json",
    log:
        f"{LNM_LOGS}/merge/batch-{{batch}}.log",
    conda:
        "../../envs/lnm.yaml"
    resources:
        mem_mb=lambda wc, input: lnm_res.merge_mem_mb(
            len(BATCHES[wc.batch]), res.read_json(input.mask_info)["n_voxels"]
        ),
        runtime=res.MIN_RUNTIME_MIN,
    script:
        "../scripts/lnm_merge.py"


# One job per lesion batch writes the maps of all its lesions (their files are known from
# the sheet, so each batch has a rule of its own), reading the batch's merged sums once
# (with lnm.degree_regression also the degree map and the batch's lesion voxels).
# On a cluster it travels with its batch's merge and figures (group lnm_batch).
for batch, batch_lesions in BATCHES.items():

    rule:
        name:
            f"lnm_lesion_maps_{batch}"
        input:
            **degree_regression_inputs(batch),
            sums=f"{OUT}/lnm/stats/batch-{batch}.npy",
            info=f"{OUT}/lnm/stats/batch-{batch}.json",
            mask=MASK,
            mask_info=rules.lnm_mask_info.output.info,
            # lnm.degree_regression: the degree map and the lesions' voxels
        output:
            lesion_map_files(batch_lesions),
        log:
            f"{LNM_LOGS}/lesion_maps/batch-{batch}.log",
        group:
            "lnm_batch"
        conda:
            "../../envs/lnm.yaml"
        resources:
            mem_mb=lambda wc, input: lnm_res.maps_mem_mb(res.read_json(input.mask_info)),
            runtime=lnm_res.lesion_maps_runtime(len(batch_lesions)),
        params:
            lesion_ids=[les.lesion_id for les in batch_lesions],
            layout=lesion_map_layout(batch_lesions),
        script:
            "../scripts/lnm_lesion_maps.py"


rule lnm_group_maps:
    input:
        unpack(lambda wc: merged_stats_files()),
        mask=MASK,
        mask_info=rules.lnm_mask_info.output.info,
    output:
        group_map_files(),
    log:
        f"{LNM_LOGS}/group_maps.log",
    conda:
        "../../envs/lnm.yaml"
    resources:
        mem_mb=lambda wc, input: lnm_res.maps_mem_mb(res.read_json(input.mask_info), copies=2),
        runtime=lambda wc, input: res.MIN_RUNTIME_MIN + len(LESIONS) // 2000,
    params:
        groups={les.lesion_id: les.group for les in LESIONS},
        threshold=LNM["sensitivity_threshold"],
        layout=group_map_layout(),
    script:
        "../scripts/lnm_group_maps.py"


rule lnm_qc_table:
    input:
        qc=[f"{OUT}/lnm/lesions/batch-{b}.qc.tsv" for b in BATCHES],
    output:
        table=report(
            f"{OUT}/lnm/qc/lesions.tsv",
            caption="../report/qc_table.rst",
            category=LNM_CATEGORY,
            subcategory="QC",
            labels={"figure": "lesion QC table"},
        ),
    log:
        f"{LNM_LOGS}/qc_table.log",
    conda:
        "../../envs/lnm.yaml"
    resources:
        mem_mb=res.fixed_mb(200),
        runtime=res.MIN_RUNTIME_MIN,
    script:
        "../scripts/lnm_qc_table.py"


# The sheet of every lesion's maps, as lnm.specificity.maps and lnm-toolkit read it.
rule lnm_maps_table:
    input:
        qc=rules.lnm_qc_table.output.table,
        maps=lesion_map_files(),
    output:
        table=f"{OUT}/lnm/maps.tsv",
    log:
        f"{LNM_LOGS}/maps_table.log",
    conda:
        "../../envs/lnm.yaml"
    resources:
        mem_mb=res.fixed_mb(200),
        runtime=res.MIN_RUNTIME_MIN,
    params:
        maps={
            les.lesion_id: {name: f"{OUT}/lnm/maps/{les.lesion_id}_{name}.nii.gz" for name in MAP_NAMES}
            for les in LESIONS
        },
        connectome=connectome_name(),
    script:
        "../scripts/lnm_maps_table.py"


# Which connectome made the maps: name, format, path, subjects and runs, mask, and a
# content fingerprint from the shards' checksums.
rule lnm_connectome_provenance:
    input:
        infos=[f"{CONNECTOME}/shard-{shard}.json" for shard in SHARDS],
        mask_info=rules.lnm_mask_info.output.info,
    output:
        record=report(
            f"{OUT}/lnm/maps/connectome.json",
            caption="../report/connectome_provenance.rst",
            category=LNM_CATEGORY,
            subcategory="QC",
            labels={"figure": "connectome provenance"},
        ),
    log:
        f"{LNM_LOGS}/connectome_provenance.log",
    conda:
        "../../envs/lnm.yaml"
    resources:
        mem_mb=res.fixed_mb(200),
        runtime=res.MIN_RUNTIME_MIN,
    params:
        source=connectome_source(),
        name=connectome_name(),
        subjects_sheet=CONNECTOME_CONFIG.get("subjects"),
    script:
        "../scripts/lnm_connectome_provenance.py"


if LESIONS:

    include: "lnm_hubs.smk"


if SPEC["enabled"]:

    include: "lnm_group.smk"
