"""Entry script of rule report_cpa_baselines: the model against the baselines, per group and score."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.report.cpa_figures import baselines_figure

    baselines_figure(snakemake.input.metrics, snakemake.output.png)
