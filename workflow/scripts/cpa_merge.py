"""Entry script of rules cpa_merge and cpa_query_merge: one latents.h5ad from the shards
(a query's with its check's summary, how its genes were matched, and its tasks' seconds)."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.cpa.tasks.check_query import read_summary
    from shardmap.cpa.tasks.merge import merge_latents

    checked = getattr(snakemake.input, "checked", None)
    about = {"query": read_summary(checked)} if checked else None
    merge_latents(snakemake.input.adata, snakemake.input.shards, snakemake.output.latents, about=about,
                  times_path=getattr(snakemake.output, "times", None))
