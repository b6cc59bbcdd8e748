"""Entry script of rule report_lesion_figure: one lesion on the template and its T map."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.report.lnm_figures import lesion_figure

    lesion_figure(snakemake.input.lesion, snakemake.input.t, snakemake.input.mask, snakemake.output.png,
                  snakemake.wildcards.lesion, snakemake.params.threshold, n_subjects=snakemake.params.n_subjects,
                  group=snakemake.params.group)
