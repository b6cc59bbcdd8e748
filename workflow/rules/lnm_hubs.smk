# Is it just the hubs? The connectome's degree map (from the degree sums that
# lnm_prepare_connectome writes per shard), how much each lesion and group map resembles
# it, and the random-lesion null: null lesions made from the real ones, mapped by the
# same tasks as real lesions, and the real group maps set against null groups of the same
# size (shardmap/lnm/hubs/). Requests: shardmap/lnm/hubs/resources.py.


include: "lnm_hubs_helpers.smk"


rule lnm_degree_map:
    input:
        degree=[f"{CONNECTOME}/shard-{s}.degree.npy" for s in SHARDS],
        infos=[f"{CONNECTOME}/shard-{s}.json" for s in SHARDS],
        mask=MASK,
        mask_info=rules.lnm_mask_info.output.info,
    output:
        **degree_map_files(),
    log:
        f"{LNM_LOGS}/degree_map.log",
    conda:
        "../../envs/lnm.yaml"
    resources:
        mem_mb=lambda wc, input: hub_res.degree_map_mem_mb(res.read_json(input.mask_info)),
        runtime=res.MIN_RUNTIME_MIN,
    script:
        "../scripts/lnm_degree_map.py"


rule lnm_hub_bias:
    input:
        unpack(lambda wc: merged_stats_files()),
        batches=[f"{OUT}/lnm/lesions/batch-{b}.npz" for b in BATCHES],
        degree=degree_map_files()["degree"],
        group_maps=group_map_files(),
        mask=MASK,
        mask_info=rules.lnm_mask_info.output.info,
    output:
        table=report(
            f"{OUT}/lnm/qc/hub_bias.tsv",
            caption="../report/hub_bias_table.rst",
            category=LNM_CATEGORY,
            subcategory="Hub controls",
            labels={"figure": "hub-bias table"},
        ),
    log:
        f"{LNM_LOGS}/hub_bias.log",
    conda:
        "../../envs/lnm.yaml"
    resources:
        mem_mb=lambda wc, input: hub_res.hub_bias_mem_mb(res.read_json(input.mask_info), len(group_map_files())),
        runtime=lambda wc, input: lnm_res.lesion_maps_runtime(len(LESIONS) // 4 + 1),
    params:
        groups={les.lesion_id: les.group for les in LESIONS},
        group_layout=group_map_layout(),
    script:
        "../scripts/lnm_hub_bias.py"


if NULL["enabled"]:

    rule lnm_null_lesions:
        input:
            batches=source_batches_of_null_batch,
            mask=MASK,
            mask_info=rules.lnm_mask_info.output.info,
        output:
            batch=f"{NULL_DIR}/lesions/batch-{{batch}}.npz",
            table=f"{NULL_DIR}/lesions/batch-{{batch}}.tsv",
        log:
            f"{LNM_LOGS}/null/lesions/batch-{{batch}}.log",
        conda:
            "../../envs/lnm.yaml"
        resources:
            mem_mb=lambda wc, input: hub_res.null_lesions_mem_mb(
                # a prepared batch stores 16 bytes per lesion voxel (position and weight)
                res.read_json(input.mask_info),
                sum(os.path.getsize(path) for path in input.batches) // 16,
            ),
            runtime=lambda wc, input: hub_res.null_lesions_runtime(
                res.read_json(input.mask_info), len(NULL_BATCHES[wc.batch])
            ),
        params:
            plan=lambda wc: NULL_BATCHES[wc.batch],
            method=NULL["method"],
            seed=NULL["seed"],
        script:
            "../scripts/lnm_null_lesions.py"

    # The null lesions go through the mapping and merge tasks of the real ones.
    use rule lnm_map as lnm_null_map with:
        input:
            batch=rules.lnm_null_lesions.output.batch,
            data=rules.lnm_prepare_connectome.output.data,
            norms=rules.lnm_prepare_connectome.output.norms,
            info=rules.lnm_prepare_connectome.output.info,
        output:
            sums=temp(f"{NULL_DIR}/partial/batch-{{batch}}/shard-{{shard}}.npy"),
            info=temp(f"{NULL_DIR}/partial/batch-{{batch}}/shard-{{shard}}.json"),
        log:
            f"{LNM_LOGS}/null/map/batch-{{batch}}_shard-{{shard}}.log",
        resources:
            mem_mb=lambda wc, input: lnm_res.mapping_mem_mb(
                res.read_json(input.info), len(NULL_BATCHES[wc.batch]), LNM["device"]
            ),
            runtime=lambda wc, input, threads: lnm_res.mapping_runtime(
                res.read_json(input.info), len(NULL_BATCHES[wc.batch]), threads, LNM["device"]
            ),
            gpu=1 if LNM["device"] == "cuda" else 0,

    use rule lnm_merge as lnm_null_merge with:
        input:
            unpack(null_partial_stats_of_batch),
            mask_info=rules.lnm_mask_info.output.info,
        output:
            sums=kept_unless_asked(f"{NULL_DIR}/stats/batch-{{batch}}.npy"),
            info=kept_unless_asked(f"{NULL_DIR}/stats/batch-{{batch}}.json"),
        log:
            f"{LNM_LOGS}/null/merge/batch-{{batch}}.log",
        resources:
            mem_mb=lambda wc, input: lnm_res.merge_mem_mb(
                len(NULL_BATCHES[wc.batch]), res.read_json(input.mask_info)["n_voxels"]
            ),
            runtime=res.MIN_RUNTIME_MIN,

    rule lnm_null_group_maps:
        input:
            unpack(lambda wc: merged_stats_files()),
            unpack(lambda wc: null_merged_stats_files()),
            degree=degree_map_files()["degree"],
            mask=MASK,
            mask_info=rules.lnm_mask_info.output.info,
        output:
            maps=null_group_map_files(),
            summary=report(
                f"{OUT}/lnm/qc/null_summary.tsv",
                caption="../report/null_summary_table.rst",
                category=LNM_CATEGORY,
                subcategory="Hub controls",
                labels={"figure": "random-lesion null table"},
            ),
        log:
            f"{LNM_LOGS}/null/group_maps.log",
        conda:
            "../../envs/lnm.yaml"
        resources:
            mem_mb=lambda wc, input: hub_res.null_group_maps_mem_mb(
                res.read_json(input.mask_info), len(LESIONS), len(NULL_PLAN), len(GROUPS) + 1, NULL["resamples"]
            ),
            runtime=lambda wc, input: hub_res.null_group_maps_runtime(
                res.read_json(input.mask_info), len(NULL_PLAN), len(GROUPS) + 1, NULL["resamples"]
            ),
        params:
            groups={les.lesion_id: les.group for les in LESIONS},
            null_sources={null_id: source for null_id, source, _, _ in NULL_PLAN},
            threshold=LNM["sensitivity_threshold"],
            resamples=NULL["resamples"],
            seed=NULL["seed"],
            layout=null_group_map_layout(),
        script:
            "../scripts/lnm_null_group_maps.py"

    if NULL["keep_maps"]:
        for batch, plan in NULL_BATCHES.items():

            rule:
                name:
                    f"lnm_null_lesion_maps_{batch}"
                input:
                    sums=f"{NULL_DIR}/stats/batch-{batch}.npy",
                    info=f"{NULL_DIR}/stats/batch-{batch}.json",
                    mask=MASK,
                    mask_info=rules.lnm_mask_info.output.info,
                output:
                    null_lesion_map_files(plan),
                log:
                    f"{LNM_LOGS}/null/lesion_maps/batch-{batch}.log",
                conda:
                    "../../envs/lnm.yaml"
                resources:
                    mem_mb=lambda wc, input: lnm_res.maps_mem_mb(res.read_json(input.mask_info)),
                    runtime=lnm_res.lesion_maps_runtime(len(plan)),
                params:
                    lesion_ids=[null_id for null_id, _, _, _ in plan],
                    layout=null_lesion_map_layout(plan),
                script:
                    "../scripts/lnm_lesion_maps.py"
