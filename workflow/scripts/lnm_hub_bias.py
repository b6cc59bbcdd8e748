"""Entry script of rule lnm_hub_bias: the hub-bias table of every lesion and group map."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.lnm.hubs.hub_bias import write_hub_bias_table

    group_maps = {(group or None, name): path for (group, name), path in zip(snakemake.params.group_layout,
                                                                              snakemake.input.group_maps)}
    write_hub_bias_table(list(zip(snakemake.input.sums, snakemake.input.infos)), snakemake.input.batches,
                         snakemake.params.groups, snakemake.input.degree, group_maps, snakemake.input.mask,
                         snakemake.output.table)
