"""Entry script of rule lnm_lesion_maps: write the AvgR, AvgR_Fz and T maps of one lesion."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.lnm.maps import write_lesion_map_files

    write_lesion_map_files(snakemake.input.sums, snakemake.input.info, snakemake.wildcards.lesion,
                           snakemake.input.mask, {"AvgR": snakemake.output.avg_r,
                                                  "AvgR_Fz": snakemake.output.avg_r_fz,
                                                  "T": snakemake.output.t})
