"""Entry script of rule report_hub_figures: the degree map, the hub-bias scatter and, with
the random-lesion null, real against null sensitivity per group."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.report.hub_figures import degree_figure, hub_bias_figure, null_figure

    degree_figure(snakemake.input.degree, snakemake.input.mask, snakemake.output.degree)
    hub_bias_figure(snakemake.input.hub_bias, snakemake.output.hub_bias)
    real = dict(zip((tuple(item) for item in snakemake.params.real_layout), snakemake.input.real_maps))
    null = dict(zip((tuple(item) for item in snakemake.params.null_layout), snakemake.input.null_maps))
    for group in dict.fromkeys(group for group, _ in snakemake.params.null_layout):
        png = snakemake.output[f"null_{group or 'all'}"]
        null_figure(real[(group, "sensitivity_pos")], null[(group, "null_sensitivity_pos")],
                    null[(group, "sensitivity_vs_null")], snakemake.input.mask, png, snakemake.params.threshold,
                    group=group or None, n_lesions=snakemake.params.n_lesions[group],
                    n_null=snakemake.params.n_null[group])
