"""Entry script of rule lnm_null_lesions: one batch of random lesions made from real ones."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.lnm.hubs.null_lesions import write_null_batch_files

    write_null_batch_files(snakemake.params.plan, snakemake.input.batches, snakemake.input.mask,
                           snakemake.params.method, snakemake.params.seed, snakemake.output.batch,
                           snakemake.output.table)
