"""Entry script of rule cpa_dose_response: predicted expression across the dose grid."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.cpa.tasks.dose_response import dose_response_table

    dose_response_table(snakemake.input.model.rsplit("/", 1)[0], snakemake.input.adata, snakemake.params.cfg,
                        snakemake.output.table)
