"""Entry script of rule report_lesion_summary: every lesion's T map at a glance."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.report.lnm_figures import lesion_summary_figure

    lesion_summary_figure(zip(snakemake.input.sums, snakemake.input.infos), snakemake.input.qc, snakemake.output.png,
                          snakemake.params.threshold, n_figures=snakemake.params.n_figures, cap=snakemake.params.cap)
