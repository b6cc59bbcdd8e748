"""Entry script of rule cpa_merge: one latents.h5ad from the shards."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.cpa.tasks.merge import merge_latents

    merge_latents(snakemake.input.adata, snakemake.input.shards, snakemake.output.latents)
