"""Entry script of rule cpa_query_check: a query data set checked against the model's
vocabulary (the saved model's, or the training file's for a model this run trains)."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.cpa.tasks.check_query import check_query, vocabulary_of

    vocabulary = vocabulary_of(getattr(snakemake.input, "model", None), getattr(snakemake.input, "screen", None),
                               snakemake.params.cfg)
    check_query(snakemake.params.query, vocabulary, snakemake.output.summary)
