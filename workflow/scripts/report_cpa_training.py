"""Entry script of rule report_cpa_training: the training curves."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.report.cpa_figures import training_figure

    training_figure(snakemake.input.history, snakemake.output.png, snakemake.params.covariate_keys)
