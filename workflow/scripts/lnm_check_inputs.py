"""Entry script of rule lnm_check_inputs: check every run's header before any shard is prepared."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.lnm.connectome.runs import check_run_headers_files

    check_run_headers_files(snakemake.input.mask, snakemake.params.subjects, snakemake.output.runs)
