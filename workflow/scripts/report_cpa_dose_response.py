"""Entry script of rule report_cpa_dose_response: the top responding genes against dose."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.report.cpa_figures import dose_response_figure

    dose_response_figure(snakemake.input.table, snakemake.output.png)
