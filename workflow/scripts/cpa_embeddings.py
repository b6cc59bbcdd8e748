"""Entry script of rule cpa_embeddings: the drug and covariate embeddings."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.cpa.tasks.embeddings import write_embeddings

    write_embeddings(snakemake.input.model.rsplit("/", 1)[0], getattr(snakemake.input, "adata", None), snakemake.params.cfg,
                     snakemake.output.embeddings)
