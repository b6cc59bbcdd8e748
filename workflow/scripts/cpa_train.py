"""Entry script of rule cpa_train: train CPA on the train split and save the model folder.
How the training runs (accelerator, data loader) comes from the config, not the params:
changing it retrains nothing."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.cpa.config_keys import loader_options, training_accelerator
    from shardmap.cpa.tasks.train import train_model

    execution = snakemake.config["cpa"]["train"]
    train_model(snakemake.input.adata, snakemake.params.cfg, snakemake.output.model.rsplit("/", 1)[0],
                snakemake.output.splits, training_accelerator(execution), loader_options(execution))
