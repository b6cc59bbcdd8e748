"""Entry script of rules cpa_predict and cpa_query_predict: a counterfactual for the control
cells of cpa.adata or of a query data set. The device (cpa.infer.device) comes from the
config, not the params: changing it reruns nothing."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake, skip_teardown=True):
    from shardmap.cpa.tasks.predict import predict_counterfactual

    predict_counterfactual(snakemake.input.model.rsplit("/", 1)[0], snakemake.input.adata,
                           snakemake.params.cfg, snakemake.params.perturbation, snakemake.params.dosage,
                           snakemake.output.counterfactual, snakemake.params.cfg["shard_size"],
                           device=snakemake.config["cpa"]["infer"]["device"],
                           query=getattr(snakemake.params, "query", None))
