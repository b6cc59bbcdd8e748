"""Entry script of rule report_cpa_embeddings: the drugs' similarity and dose responses."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.report.cpa_figures import drug_similarity_figure

    drug_similarity_figure(snakemake.input.embeddings, snakemake.output.png)
