"""Entry script of rules cpa_infer and cpa_query_infer: latents of one shard of rows (of
cpa.adata, or of a query data set). The device (cpa.infer.device) comes from the config,
not the params: changing it reruns nothing."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake, skip_teardown=True):
    from shardmap.cpa.tasks.infer import infer_shard

    start, stop = snakemake.params.rows
    infer_shard(snakemake.input.model.rsplit("/", 1)[0], snakemake.input.adata, start, stop,
                snakemake.output.latents, device=snakemake.config["cpa"]["infer"]["device"],
                query=getattr(snakemake.params, "query", None))
