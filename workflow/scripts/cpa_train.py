"""Entry script of rule cpa_train: validate the AnnData, train CPA, save it."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.cpa.tasks.train import train_model

    train_model(snakemake.input.adata, snakemake.params.cfg, snakemake.output.model.rsplit("/", 1)[0],
                snakemake.output.splits, snakemake.params.accelerator)
