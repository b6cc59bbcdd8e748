"""Entry script of rule lnm_degree_map: merge the shards' degree sums into the degree maps."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.lnm.hubs.degree import write_degree_maps

    write_degree_maps(zip(snakemake.input.degree, snakemake.input.infos), snakemake.input.mask,
                      dict(snakemake.output.items()))
