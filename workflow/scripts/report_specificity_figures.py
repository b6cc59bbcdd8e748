"""Entry script of the specificity figures: the t map where FWE-significant, the conjunction
with the cases' sensitivity map, and the null distribution of the maximum statistic."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.report.specificity_figures import specificity_figures

    paths = {"tstat": snakemake.input.tstat, "p": snakemake.input.p, "conjunction": snakemake.input.conjunction,
             "null_max": snakemake.input.null_max}
    tfce = snakemake.input.get("tfce")
    if tfce:
        paths["tfce"] = tfce
    outputs = {"tstat": snakemake.output.tstat, "conjunction": snakemake.output.conjunction,
               "null": snakemake.output.null}
    specificity_figures(paths, snakemake.input.mask, outputs, snakemake.params.alpha, snakemake.params.fraction)
