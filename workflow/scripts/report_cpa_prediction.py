"""Entry script of rule report_cpa_prediction: predicted vs observed mean expression."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.report.cpa_figures import prediction_figure

    prediction_figure(snakemake.input.means, snakemake.output.png)
