"""Entry script of rule report_group_figures: sensitivity maps per group and the QC figure."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.report.lnm_figures import qc_figure, sensitivity_figure

    maps = dict(zip((tuple(item) for item in snakemake.params.layout), snakemake.input.maps))
    for group, png in snakemake.params.figures.items():
        sensitivity_figure(maps[(group, "sensitivity_pos")], maps[(group, "sensitivity_neg")], snakemake.input.mask,
                           png, snakemake.params.threshold, group=group or None,
                           n_lesions=snakemake.params.n_lesions[group])
    qc_figure(snakemake.input.qc, snakemake.output.qc)
