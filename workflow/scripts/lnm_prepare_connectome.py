"""Entry script of rule lnm_prepare_connectome: write one subject shard."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.lnm.connectome.shards import prepare_shard_files

    prepare_shard_files(snakemake.input.mask, snakemake.params.subjects, snakemake.output.data,
                        snakemake.output.norms, snakemake.output.info, snakemake.params.dtype,
                        snakemake.output.degree)
