"""Entry script of rule lnm_group_maps: sensitivity and mean maps over all lesions (and groups)."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.lnm.maps import write_group_map_files

    paths = {(group or None, name): path for (group, name), path in zip(snakemake.params.layout,
                                                                          snakemake.output)}
    write_group_map_files(zip(snakemake.input.sums, snakemake.input.infos), snakemake.params.groups,
                          snakemake.params.threshold, snakemake.input.mask, paths)
