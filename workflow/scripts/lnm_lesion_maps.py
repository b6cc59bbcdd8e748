"""Entry script of the lnm_lesion_maps rules: the AvgR, AvgR_Fz and T maps of one lesion batch."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.lnm.maps import write_batch_lesion_map_files

    paths = {tuple(key): path for key, path in zip(snakemake.params.layout, snakemake.output)}
    # With lnm.degree_regression the rule also gives the degree map and the lesion batch.
    write_batch_lesion_map_files(snakemake.input.sums, snakemake.input.info, snakemake.params.lesion_ids,
                                 snakemake.input.mask, paths, snakemake.input.get("batch"),
                                 snakemake.input.get("degree"))
