"""Entry script of rule lnm_map: one lesion batch x one connectome shard -> partial sums."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.lnm.mapping import map_batch_files

    shard = {"data": snakemake.input.data, "norms": snakemake.input.norms, "info": snakemake.input.info}
    map_batch_files(snakemake.input.batch, shard, snakemake.output.sums, snakemake.output.info,
                    device=snakemake.params.device, threads=snakemake.threads)
