"""Entry script of the report_lesion_figures rules: the figures of one lesion batch's lesions."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.report.lnm_figures import lesion_figures

    items = [(lesion_id, group, lesion, t, png) for (lesion_id, group), lesion, t, png in
             zip(snakemake.params.lesions, snakemake.input.lesions, snakemake.input.t, snakemake.output)]
    lesion_figures(items, snakemake.input.mask, snakemake.params.threshold, n_subjects=snakemake.params.n_subjects)
