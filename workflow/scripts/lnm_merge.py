"""Entry script of rule lnm_merge: add the partial sums of all shards of a batch."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.lnm.stats import merge_files

    merge_files(zip(snakemake.input.sums, snakemake.input.infos), snakemake.output.sums,
                snakemake.output.info)
