# The trained model applied to new data (cpa.query): each query data set is checked against
# what the model knows, split into cell shards that run the same inference as cpa.adata's,
# merged into one latents file per query, and its control cells predicted under the
# counterfactuals that name it (`on: <query>`). Included by cpa.smk.

QUERY_OUT = f"{OUT}/cpa/query/{{query}}"
QUERY_LOGS = f"{CPA_LOGS}/query/{{query}}"


# A query's genes, obs columns, categories and values against the model's, before any
# task runs the model on it. With a model to train, the check reads the training file
# (the same vocabulary the model will have) and runs first (priority).
rule cpa_query_check:
    input:
        unpack(lambda wc: {"adata": query_adata(wc), **query_reference()}),
    output:
        summary=f"{QUERY_OUT}/checked.tsv",
    log:
        f"{QUERY_LOGS}/check.log",
    priority: 10
    conda:
        "../../envs/cpa.yaml"
    resources:
        mem_mb=lambda wc, input: cpa_res.query_check_mem_mb(CPA, input.adata, loads_model=not TRAINING),
        runtime=lambda wc: cpa_res.check_runtime(query_cell_count(wc.query)),
    params:
        query=query_params,
        cfg=cpa_keys(model=("recon_loss",)) if TRAINING else {},
    script:
        "../scripts/cpa_query_check.py"


rule cpa_query_infer:
    input:
        adata=query_adata,
        model=MODEL_FILE,
        checked=rules.cpa_query_check.output.summary,
    output:
        latents=temp(f"{QUERY_OUT}/shards/shard-{{shard}}.npz"),
    log:
        f"{QUERY_LOGS}/infer/shard-{{shard}}.log",
    conda:
        "../../envs/cpa.yaml"
    threads: CPA["threads"]
    resources:
        mem_mb=lambda wc, input: cpa_res.query_infer_mem_mb(CPA, input.adata),
        runtime=lambda wc: cpa_res.infer_runtime(CPA),
        gpu=1 if CPA["infer"]["device"] == "cuda" else 0,
    params:
        rows=lambda wc: CPA_QUERY_SHARDS[wc.query][wc.shard],
        query=query_params,
    script:
        "../scripts/cpa_infer.py"


rule cpa_query_merge:
    input:
        adata=query_adata,
        checked=rules.cpa_query_check.output.summary,
        shards=lambda wc: expand(
            f"{OUT}/cpa/query/{wc.query}/shards/shard-{{shard}}.npz", shard=CPA_QUERY_SHARDS[wc.query]
        ),
    output:
        latents=f"{QUERY_OUT}/latents.h5ad",
        times=f"{QUERY_OUT}/inference_times.tsv",
    log:
        f"{QUERY_LOGS}/merge.log",
    conda:
        "../../envs/cpa.yaml"
    resources:
        mem_mb=res.fixed_mb(400),
        runtime=lambda wc: res.MIN_RUNTIME_MIN + query_cell_count(wc.query) // 5_000_000,
    script:
        "../scripts/cpa_merge.py"


rule cpa_query_predict:
    input:
        adata=query_adata,
        model=MODEL_FILE,
        checked=rules.cpa_query_check.output.summary,
    output:
        counterfactual=f"{QUERY_OUT}/counterfactuals/{{counterfactual}}.h5ad",
    log:
        f"{QUERY_LOGS}/predict/{{counterfactual}}.log",
    conda:
        "../../envs/cpa.yaml"
    threads: CPA["threads"]
    resources:
        mem_mb=lambda wc, input: cpa_res.query_predict_mem_mb(CPA, input.adata),
        runtime=lambda wc: cpa_res.infer_runtime(CPA, query_cell_count(wc.query)),
        gpu=1 if CPA["infer"]["device"] == "cuda" else 0,
    params:
        cfg=cpa_keys("shard_size"),
        query=query_params,
        perturbation=lambda wc: cpa_counterfactuals(on=wc.query)[wc.counterfactual][0],
        dosage=lambda wc: cpa_counterfactuals(on=wc.query)[wc.counterfactual][1],
    script:
        "../scripts/cpa_predict.py"


# One row per query: its cells, how its genes were matched, its shards and the seconds
# their inference tasks took.
rule cpa_query_table:
    input:
        latents=expand(f"{OUT}/cpa/query/{{query}}/latents.h5ad", query=CPA_QUERIES),
        times=expand(f"{OUT}/cpa/query/{{query}}/inference_times.tsv", query=CPA_QUERIES),
    output:
        table=report(
            f"{OUT}/cpa/query/queries.tsv",
            caption="../report/cpa_queries.rst",
            category=CPA_CATEGORY,
            subcategory="Query data sets",
            labels={"figure": "query table"},
        ),
    log:
        f"{CPA_LOGS}/query_table.log",
    conda:
        "../../envs/cpa.yaml"
    resources:
        mem_mb=res.fixed_mb(300),
        runtime=res.MIN_RUNTIME_MIN,
    script:
        "../scripts/cpa_query_table.py"
