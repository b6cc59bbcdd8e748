"""Entry script of rule report_cpa_query_umap: the query data sets' basal latents beside the
training cells'."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.report.cpa_figures import query_umap

    sources = {label: (path, rules) for label, (path, rules) in snakemake.params.sources.items()}
    query_umap(sources, snakemake.params.covariate_keys, snakemake.output.umap, max_cells=snakemake.params.max_cells)
