# The perturbation arm: train CPA once (or take cpa.trained_model), infer latents shard by
# shard (row ranges of the .h5ad), merge them into one file, predict counterfactuals,
# evaluate held-out conditions; the same for each query data set (cpa_query.smk).


include: "cpa_helpers.smk"


CPA_LOGS = f"{OUT}/logs/cpa"
check_trained_model()
check_needs_training_file()
CPA_QUERIES = cpa_queries()
CPA_SHARDS = cpa_shards()
CPA_QUERY_SHARDS = query_shards()
CPA_COUNTERFACTUALS = cpa_counterfactuals()
check_named_drugs_against_screen()


if cpa_is_demo():

    rule cpa_demo_data:
        output:
            adata=CPA["adata"],
        log:
            f"{CPA_LOGS}/demo_data.log",
        conda:
            "../../envs/cpa.yaml"
        resources:
            mem_mb=res.fixed_mb(1400),
            runtime=10,
        params:
            n_cells=config["demo"]["cpa_cells"],
            n_genes=config["demo"]["cpa_genes"],
        script:
            "../scripts/cpa_demo_data.py"

    # A lab's own control cells for the demo's model: the demo's query data set.
    rule cpa_demo_query:
        output:
            query=cpa_demo_query(),
        log:
            f"{CPA_LOGS}/demo_query.log",
        conda:
            "../../envs/cpa.yaml"
        resources:
            mem_mb=res.fixed_mb(800),
            runtime=10,
        params:
            n_cells=config["demo"]["cpa_query_cells"],
            n_genes=config["demo"]["cpa_genes"],
        script:
            "../scripts/cpa_demo_query.py"


if TRAINING:

    # The whole file is checked against the config (obs keys, doses, control group, holdout,
    # counts) before training starts. The check reads only keys the training reads too, so
    # it reruns only when the training must rerun anyway, and cpa_train depends on it plainly:
    # an ancient() input here made Snakemake skip the jobs behind it (and the new targets of
    # the same run) whenever the check alone was rerun. The drugs of cpa.counterfactuals and
    # cpa.dose_response are checked against the screen when the job graph is built (and, for
    # a screen the workflow is about to generate, here, from the config: checking them
    # changes no output, so they are no params).
    rule cpa_check_inputs:
        input:
            adata=CPA["adata"],
        output:
            summary=f"{OUT}/cpa/checked/adata.tsv",
        log:
            f"{CPA_LOGS}/check_inputs.log",
        priority: 10
        conda:
            "../../envs/cpa.yaml"
        resources:
            mem_mb=lambda wc, input: cpa_res.check_mem_mb(CPA, input.adata),
            runtime=lambda wc: cpa_res.check_runtime(cpa_cell_count()),
        params:
            cfg=cpa_keys("holdout", "unseen_covariates", train=("seed", "early_stopping"), model=("recon_loss",)),
        script:
            "../scripts/cpa_check_inputs.py"

    rule cpa_train:
        input:
            adata=CPA["adata"],
            checked=rules.cpa_check_inputs.output.summary,
        output:
            model=f"{OUT}/cpa/model/model.pt",
            history=f"{OUT}/cpa/model/history.json",
            splits=f"{OUT}/cpa/splits.tsv",
        log:
            f"{CPA_LOGS}/train.log",
        conda:
            "../../envs/cpa.yaml"
        threads: CPA["threads"]
        resources:
            mem_mb=lambda wc, input: cpa_res.train_mem_mb(input.size_mb, CPA),
            runtime=lambda wc: cpa_res.train_runtime(cpa_cell_count(), CPA),
            gpu=1 if training_accelerator(CPA["train"]) == "gpu" else 0,
        params:
            cfg=cpa_keys("holdout", "unseen_covariates", model=None, train=None),
        script:
            "../scripts/cpa_train.py"


if HAS_ADATA:

    rule cpa_infer:
        input:
            adata=CPA["adata"],
            model=MODEL_FILE,
        output:
            latents=temp(f"{OUT}/cpa/shards/shard-{{shard}}.npz"),
        log:
            f"{CPA_LOGS}/infer/shard-{{shard}}.log",
        conda:
            "../../envs/cpa.yaml"
        threads: CPA["threads"]
        resources:
            mem_mb=lambda wc, input: cpa_res.infer_mem_mb(CPA, input.adata),
            runtime=lambda wc: cpa_res.infer_runtime(CPA),
            gpu=1 if CPA["infer"]["device"] == "cuda" else 0,
        params:
            rows=lambda wc: CPA_SHARDS[wc.shard],
        script:
            "../scripts/cpa_infer.py"

    rule cpa_merge:
        input:
            adata=CPA["adata"],
            shards=expand(f"{OUT}/cpa/shards/shard-{{shard}}.npz", shard=CPA_SHARDS),
        output:
            latents=f"{OUT}/cpa/latents.h5ad",
        log:
            f"{CPA_LOGS}/merge.log",
        conda:
            "../../envs/cpa.yaml"
        resources:
            mem_mb=res.fixed_mb(400),
            runtime=lambda wc: res.MIN_RUNTIME_MIN + cpa_cell_count() // 5_000_000,
        script:
            "../scripts/cpa_merge.py"

    rule cpa_predict:
        input:
            adata=CPA["adata"],
            model=MODEL_FILE,
        output:
            counterfactual=f"{OUT}/cpa/counterfactuals/{{counterfactual}}.h5ad",
        log:
            f"{CPA_LOGS}/predict/{{counterfactual}}.log",
        conda:
            "../../envs/cpa.yaml"
        threads: CPA["threads"]
        resources:
            mem_mb=lambda wc, input: cpa_res.predict_mem_mb(CPA, input.adata),
            runtime=lambda wc: cpa_res.infer_runtime(CPA, cpa_cell_count()),
            gpu=1 if CPA["infer"]["device"] == "cuda" else 0,
        params:
            cfg=cpa_keys("shard_size"),
            perturbation=lambda wc: CPA_COUNTERFACTUALS[wc.counterfactual][0],
            dosage=lambda wc: CPA_COUNTERFACTUALS[wc.counterfactual][1],
        script:
            "../scripts/cpa_predict.py"

    rule cpa_dose_response:
        input:
            adata=CPA["adata"],
            model=MODEL_FILE,
        output:
            table=f"{OUT}/cpa/dose_response.tsv",
        log:
            f"{CPA_LOGS}/dose_response.log",
        conda:
            "../../envs/cpa.yaml"
        threads: CPA["threads"]
        resources:
            mem_mb=lambda wc, input: cpa_res.dose_response_mem_mb(CPA, input.adata, cpa_cell_count()),
            runtime=lambda wc: cpa_res.dose_response_runtime(CPA, cpa_cell_count()),
        params:
            cfg=cpa_keys("dose_response"),
        script:
            "../scripts/cpa_dose_response.py"


# What the model learned: drug embeddings (scaled by each drug's dose response at dose 1),
# covariate embeddings, the drugs' cosine similarity and their scalar dose responses.
rule cpa_embeddings:
    input:
        # A model trained elsewhere without a training file is loaded with a placeholder cell.
        unpack(lambda wc: {"adata": CPA["adata"], "model": MODEL_FILE} if HAS_ADATA else {"model": MODEL_FILE}),
    output:
        embeddings=f"{OUT}/cpa/embeddings.h5ad",
    log:
        f"{CPA_LOGS}/embeddings.log",
    conda:
        "../../envs/cpa.yaml"
    threads: 1
    resources:
        mem_mb=res.fixed_mb(cpa_res.TORCH_MB + 200),
        runtime=res.MIN_RUNTIME_MIN,
    params:
        cfg=cpa_keys(),
    script:
        "../scripts/cpa_embeddings.py"


if TRAINING:

    rule cpa_evaluate:
        input:
            adata=CPA["adata"],
            model=MODEL_FILE,
            splits=rules.cpa_train.output.splits,
        output:
            metrics=report(
                f"{OUT}/cpa/metrics.tsv",
                caption="../report/cpa_metrics.rst",
                category=CPA_CATEGORY,
                subcategory="Held-out conditions",
                labels={"figure": "metrics table"},
            ),
            means=f"{OUT}/cpa/evaluation_means.npz",
        log:
            f"{CPA_LOGS}/evaluate.log",
        conda:
            "../../envs/cpa.yaml"
        threads: CPA["threads"]
        resources:
            mem_mb=lambda wc, input: cpa_res.shard_mem_mb(CPA, input.adata, with_output=True, copies=2),
            runtime=lambda wc: cpa_res.infer_runtime(CPA, cpa_cell_count()),
        params:
            cfg=cpa_keys(model=("recon_loss",)),
        script:
            "../scripts/cpa_evaluate.py"


include: "cpa_query.smk"
