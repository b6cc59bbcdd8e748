"""Entry script of rule cpa_check_inputs: check cpa.adata against the config before training."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.cpa.tasks.check_inputs import check_inputs

    cpa = snakemake.config["cpa"]
    # The drugs named for the trained model are checked here too (the job graph checks them
    # when the screen exists before the run). They change no output of this rule, so they
    # come from the config, not from params that would rerun the check, and the training
    # behind it, whenever one is added.
    named = {"counterfactuals": cpa["counterfactuals"], "dose_response": {"drugs": cpa["dose_response"]["drugs"]}}
    check_inputs(snakemake.input.adata, {**snakemake.params.cfg, **named}, snakemake.output.summary)
