"""Entry script of rule lnm_map: one lesion batch x one connectome shard -> partial sums. The
device (lnm.device) comes from the config, not the params: changing it reruns nothing."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.lnm.mapping import map_batch_files

    shard = {"data": snakemake.input.data, "norms": snakemake.input.norms, "info": snakemake.input.info}
    map_batch_files(snakemake.input.batch, shard, snakemake.output.sums, snakemake.output.info,
                    device=snakemake.config["lnm"]["device"], threads=snakemake.threads)
