"""Entry script of rule cpa_query_table: one row per query data set."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.cpa.tasks.query_table import write_query_table

    write_query_table(snakemake.input.latents, snakemake.input.times, snakemake.output.table)
