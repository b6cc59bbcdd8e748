"""Entry script of rule lnm_group_maps: sensitivity and mean maps over all lesions (and groups)."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.group import write_group_map_files

    write_group_map_files(zip(snakemake.input.sums, snakemake.input.infos), snakemake.params.groups,
                          snakemake.params.threshold, snakemake.input.mask,
                          snakemake.params.out_dir_all, snakemake.params.out_dir_groups)
