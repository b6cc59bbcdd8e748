# Figures for the Snakemake report (`snakemake --report report.html`): PNGs made by their
# own rules from the maps, tables and model files, so `report: false` skips all of them.
# Captions are in workflow/report/; requests are documented in config/README.md.


include: "report_helpers.smk"


rule report_software:
    input:
        envs=[os.path.join(workflow.basedir, "envs", f"{name}.yaml") for name in ("lnm", "cpa", "report")],
    output:
        versions=report(
            f"{OUT}/report/software.tsv",
            caption="../report/software.rst",
            category=RUN_CATEGORY,
            labels={"file": "software versions"},
        ),
        config=report(
            f"{OUT}/report/config.yaml",
            caption="../report/config.rst",
            category=RUN_CATEGORY,
            labels={"file": "config"},
        ),
    log:
        f"{REPORT_LOGS}/software.log",
    conda:
        "../../envs/report.yaml"
    resources:
        mem_mb=res.fixed_mb(100),
        runtime=res.MIN_RUNTIME_MIN,
    script:
        "../scripts/report_software.py"


if config["lnm"]["enabled"] and LESIONS:

    # The figures of a lesion batch's first report_lesion_figures lesions are drawn by one
    # job (the template is loaded once); each batch has a rule of its own, since its
    # figures are known from the sheet. On a cluster the job travels with its batch's merge
    # and maps (group lnm_batch).
    FIGURED = {les.lesion_id for les in figure_lesions()}
    for batch, batch_lesions in BATCHES.items():
        shown = [les for les in batch_lesions if les.lesion_id in FIGURED]
        if not shown:
            continue

        rule:
            name:
                f"report_lesion_figures_{batch}"
            input:
                lesions=[les.path for les in shown],
                t=[f"{OUT}/lnm/maps/{les.lesion_id}_T.nii.gz" for les in shown],
                mask=MASK,
                mask_info=rules.lnm_mask_info.output.info,
            output:
                [
                    report(
                        lesion_figure_file(les),
                        caption="../report/lesion.rst",
                        category=LNM_CATEGORY,
                        subcategory="Lesions",
                        labels={"lesion": les.lesion_id, "figure": "lesion, T map, glass brain"},
                    )
                    for les in shown
                ],
            log:
                f"{REPORT_LOGS}/lesions/batch-{batch}.log",
            group:
                "lnm_batch"
            conda:
                "../../envs/report.yaml"
            resources:
                mem_mb=lambda wc, input: report_res.brain_figure_mem_mb(res.read_json(input.mask_info), *input.lesions),
                runtime=report_res.lesion_figures_runtime(len(shown)),
            params:
                lesions=[(les.lesion_id, les.group) for les in shown],
                threshold=LNM["sensitivity_threshold"],
                n_subjects=len(SUBJECTS),
            script:
                "../scripts/report_lesion_figures.py"

    # Every lesion at a glance, from the merged sums: how strong and how wide its map is.
    rule report_lesion_summary:
        input:
            unpack(lambda wc: merged_stats_files()),
            qc=f"{OUT}/lnm/qc/lesions.tsv",
        output:
            png=report(
                f"{FIGURES}/lnm/lesions_summary.png",
                caption="../report/lesions_summary.rst",
                category=LNM_CATEGORY,
                subcategory="Lesions",
                labels={"lesion": "all lesions", "figure": "summary of every lesion's T map"},
            ),
        log:
            f"{REPORT_LOGS}/lesions_summary.log",
        conda:
            "../../envs/report.yaml"
        resources:
            mem_mb=lambda wc, input: report_res.lesion_summary_mem_mb(res.read_json(input.infos[0])),
            runtime=lambda wc: res.MIN_RUNTIME_MIN + len(LESIONS) // 5000,
        params:
            threshold=LNM["sensitivity_threshold"],
            n_figures=len(figure_lesions()),
            cap=config["report_lesion_figures"],
        script:
            "../scripts/report_lesion_summary.py"

    rule report_group_figures:
        input:
            maps=group_map_files(),
            qc=f"{OUT}/lnm/qc/lesions.tsv",
            mask=MASK,
            mask_info=rules.lnm_mask_info.output.info,
        output:
            sensitivity=[
                report(
                    path,
                    caption="../report/sensitivity.rst",
                    category=LNM_CATEGORY,
                    subcategory="Group",
                    labels={"group": group or "all lesions", "figure": "sensitivity maps"},
                )
                for group, path in sensitivity_figure_files().items()
            ],
            qc=report(
                f"{FIGURES}/lnm/qc.png",
                caption="../report/qc.rst",
                category=LNM_CATEGORY,
                subcategory="QC",
                labels={"figure": "lesion QC"},
            ),
        log:
            f"{REPORT_LOGS}/group_figures.log",
        conda:
            "../../envs/report.yaml"
        resources:
            mem_mb=lambda wc, input: report_res.brain_figure_mem_mb(res.read_json(input.mask_info)),
            runtime=lambda wc: res.MIN_RUNTIME_MIN + len(GROUPS) // 20,
        params:
            threshold=LNM["sensitivity_threshold"],
            layout=group_map_layout(),
            figures=sensitivity_figure_files(),
            n_lesions={group: sum(1 for les in LESIONS if not group or les.group == group) for group in [""] + GROUPS},
        script:
            "../scripts/report_group_figures.py"

    # The hub controls: the degree map, each map's likeness to it, and real against null.
    rule report_hub_figures:
        input:
            degree=degree_map_files()["degree"],
            hub_bias=f"{OUT}/lnm/qc/hub_bias.tsv",
            real_maps=group_map_files() if NULL["enabled"] else [],
            null_maps=null_group_map_files() if NULL["enabled"] else [],
            mask=MASK,
            mask_info=rules.lnm_mask_info.output.info,
        output:
            **{
                name: report(
                    path,
                    caption=f"../report/{name.split('_')[0] if name.startswith('null_') else name}.rst",
                    category=LNM_CATEGORY,
                    subcategory="Hub controls",
                    labels={"figure": name.replace("_", " ")},
                )
                for name, path in hub_figure_files().items()
            },
        log:
            f"{REPORT_LOGS}/hub_figures.log",
        conda:
            "../../envs/report.yaml"
        resources:
            mem_mb=lambda wc, input: report_res.brain_figure_mem_mb(res.read_json(input.mask_info)),
            runtime=lambda wc: res.MIN_RUNTIME_MIN + len(GROUPS) // 10,
        params:
            threshold=LNM["sensitivity_threshold"],
            real_layout=group_map_layout() if NULL["enabled"] else [],
            null_layout=null_group_map_layout() if NULL["enabled"] else [],
            n_lesions={group: sum(1 for les in LESIONS if not group or les.group == group) for group in [""] + GROUPS},
            n_null={group: sum(1 for _, _, g, _ in NULL_PLAN if not group or g == group) for group in [""] + GROUPS},
        script:
            "../scripts/report_hub_figures.py"


if config["lnm"]["enabled"] and SPEC["enabled"]:

    # The specificity test: the t map where FWE-significant, the conjunction, the null.
    rule report_specificity_figures:
        input:
            **({"tfce": f"{SPECIFICITY}/tfce.nii.gz"} if SPEC["tfce"] else {}),
            tstat=f"{SPECIFICITY}/tstat.nii.gz",
            p=f"{SPECIFICITY}/p_fwe_tfce.nii.gz" if SPEC["tfce"] else f"{SPECIFICITY}/p_fwe.nii.gz",
            conjunction=f"{SPECIFICITY}/conjunction.nii.gz",
            null_max=f"{SPECIFICITY}/null_max.tsv",
            mask=MASK,
            mask_info=rules.lnm_mask_info.output.info,
        output:
            **{
                name: report(
                    path,
                    caption=f"../report/specificity_{name}.rst",
                    category=LNM_CATEGORY,
                    subcategory="Specificity",
                    labels={"figure": label},
                )
                for name, (path, label) in specificity_figure_files().items()
            },
        log:
            f"{REPORT_LOGS}/specificity_figures.log",
        conda:
            "../../envs/report.yaml"
        resources:
            mem_mb=lambda wc, input: report_res.brain_figure_mem_mb(res.read_json(input.mask_info)),
            runtime=res.MIN_RUNTIME_MIN,
        params:
            alpha=SPEC["alpha"],
            fraction=SPEC["sensitivity_fraction"],
        script:
            "../scripts/report_specificity_figures.py"


if config["cpa"]["enabled"]:

    if TRAINING:

        rule report_cpa_training:
            input:
                history=rules.cpa_train.output.history,
            output:
                png=report(
                    f"{FIGURES}/cpa/training.png",
                    caption="../report/cpa_training.rst",
                    category=CPA_CATEGORY,
                    subcategory="Training",
                    labels={"figure": "training curves"},
                ),
            log:
                f"{REPORT_LOGS}/cpa_training.log",
            conda:
                "../../envs/report.yaml"
            resources:
                mem_mb=res.fixed_mb(100),
                runtime=res.MIN_RUNTIME_MIN,
            params:
                covariate_keys=list(CPA["covariate_keys"]),
            script:
                "../scripts/report_cpa_training.py"

        rule report_cpa_prediction:
            input:
                means=rules.cpa_evaluate.output.means,
            output:
                png=report(
                    f"{FIGURES}/cpa/predicted_vs_observed.png",
                    caption="../report/cpa_prediction.rst",
                    category=CPA_CATEGORY,
                    subcategory="Held-out conditions",
                    labels={"figure": "predicted vs observed"},
                ),
            log:
                f"{REPORT_LOGS}/cpa_prediction.log",
            conda:
                "../../envs/report.yaml"
            resources:
                mem_mb=lambda wc, input: res.fixed_mb(200 + 2 * input.size_mb),
                runtime=res.MIN_RUNTIME_MIN,
            script:
                "../scripts/report_cpa_prediction.py"

        rule report_cpa_baselines:
            input:
                metrics=rules.cpa_evaluate.output.metrics,
            output:
                png=report(
                    f"{FIGURES}/cpa/baselines.png",
                    caption="../report/cpa_baselines.rst",
                    category=CPA_CATEGORY,
                    subcategory="Held-out conditions",
                    labels={"figure": "model against baselines"},
                ),
            log:
                f"{REPORT_LOGS}/cpa_baselines.log",
            conda:
                "../../envs/report.yaml"
            resources:
                mem_mb=res.fixed_mb(200),
                runtime=res.MIN_RUNTIME_MIN,
            script:
                "../scripts/report_cpa_baselines.py"

    rule report_cpa_embeddings:
        input:
            embeddings=rules.cpa_embeddings.output.embeddings,
        output:
            png=report(
                f"{FIGURES}/cpa/drug_embeddings.png",
                caption="../report/cpa_embeddings.rst",
                category=CPA_CATEGORY,
                subcategory="What the model learned",
                labels={"figure": "drug embeddings"},
            ),
        log:
            f"{REPORT_LOGS}/cpa_embeddings.log",
        conda:
            "../../envs/report.yaml"
        resources:
            mem_mb=lambda wc, input: res.fixed_mb(300 + 4 * input.size_mb),
            runtime=res.MIN_RUNTIME_MIN,
        script:
            "../scripts/report_cpa_embeddings.py"

    if HAS_ADATA:

        rule report_cpa_umap:
            input:
                latents=rules.cpa_merge.output.latents,
            output:
                umap_basal=report(
                    f"{FIGURES}/cpa/umap_basal.png",
                    caption="../report/cpa_umap_basal.rst",
                    category=CPA_CATEGORY,
                    subcategory="Latent space",
                    labels={"figure": "UMAP of the basal latent"},
                ),
                umap_latent=report(
                    f"{FIGURES}/cpa/umap_latent.png",
                    caption="../report/cpa_umap_latent.rst",
                    category=CPA_CATEGORY,
                    subcategory="Latent space",
                    labels={"figure": "UMAP of the full latent"},
                ),
            log:
                f"{REPORT_LOGS}/cpa_umap.log",
            conda:
                "../../envs/report.yaml"
            resources:
                mem_mb=lambda wc: report_res.umap_mem_mb(cpa_cell_count(), CPA["model"]["n_latent"]),
                runtime=report_res.UMAP_RUNTIME_MIN,
            params:
                cfg=cpa_keys(),
                figures=CPA_LATENT_FIGURES,
                max_cells=report_res.UMAP_MAX_CELLS,
            script:
                "../scripts/report_cpa_umap.py"

        if CPA["dose_response"]["drugs"]:

            rule report_cpa_dose_response:
                input:
                    table=rules.cpa_dose_response.output.table,
                output:
                    png=report(
                        f"{FIGURES}/cpa/dose_response.png",
                        caption="../report/cpa_dose_response.rst",
                        category=CPA_CATEGORY,
                        subcategory="What the model learned",
                        labels={"figure": "dose response"},
                    ),
                log:
                    f"{REPORT_LOGS}/cpa_dose_response.log",
                conda:
                    "../../envs/report.yaml"
                resources:
                    mem_mb=lambda wc, input: res.fixed_mb(300 + 6 * input.size_mb),
                    runtime=res.MIN_RUNTIME_MIN,
                script:
                    "../scripts/report_cpa_dose_response.py"

    if CPA_QUERIES:

        rule report_cpa_query_umap:
            input:
                latents=query_umap_inputs(),
            output:
                umap=report(
                    f"{FIGURES}/cpa/umap_query.png",
                    caption="../report/cpa_umap_query.rst",
                    category=CPA_CATEGORY,
                    subcategory="Query data sets",
                    labels={"figure": "UMAP of the query data sets"},
                ),
            log:
                f"{REPORT_LOGS}/cpa_umap_query.log",
            conda:
                "../../envs/report.yaml"
            resources:
                mem_mb=lambda wc: report_res.umap_mem_mb(
                    report_res.UMAP_MAX_CELLS * len(query_umap_inputs()), CPA["model"]["n_latent"]
                ),
                runtime=report_res.UMAP_RUNTIME_MIN,
            params:
                sources=query_umap_sources(),
                covariate_keys=list(CPA["covariate_keys"]),
                max_cells=report_res.UMAP_MAX_CELLS,
            script:
                "../scripts/report_cpa_query_umap.py"
