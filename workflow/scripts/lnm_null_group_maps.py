"""Entry script of rule lnm_null_group_maps: the null lesions' group maps, the real
sensitivity's percentile among null groups and the null summary table."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.lnm.hubs.null_maps import write_null_group_map_files

    paths = {(group or None, name): path for (group, name), path in zip(snakemake.params.layout,
                                                                         snakemake.output.maps)}
    write_null_group_map_files(list(zip(snakemake.input.sums, snakemake.input.infos)),
                               list(zip(snakemake.input.null_sums, snakemake.input.null_infos)),
                               snakemake.params.groups, snakemake.params.null_sources, snakemake.params.threshold,
                               snakemake.params.resamples, snakemake.params.seed, snakemake.input.mask, paths,
                               snakemake.output.summary, snakemake.input.degree)
