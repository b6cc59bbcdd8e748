"""Entry script of rule cpa_infer: latents of one shard of rows."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake, skip_teardown=True):
    from shardmap.cpa.tasks.infer import infer_shard

    start, stop = snakemake.params.rows
    infer_shard(snakemake.input.model.rsplit("/", 1)[0], snakemake.input.adata, snakemake.params.cfg,
                start, stop, snakemake.output.latents)
