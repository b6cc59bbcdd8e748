"""Entry script of rule cpa_evaluate: R^2 on the held-out conditions."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.cpa.tasks.evaluate import evaluate

    evaluate(snakemake.input.model.rsplit("/", 1)[0], snakemake.input.adata, snakemake.params.cfg,
             snakemake.input.splits, snakemake.output.metrics,
             means_path=snakemake.output.means)
