"""Entry script of rule cpa_check_inputs: check cpa.adata against the config before training."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.cpa.tasks.check_inputs import check_inputs

    check_inputs(snakemake.input.adata, snakemake.params.cfg, snakemake.output.summary)
