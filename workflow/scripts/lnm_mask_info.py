"""Entry script of rule lnm_mask_info: describe the brain mask (voxel count, grid)."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.lnm.nifti import write_mask_info

    write_mask_info(snakemake.input.mask, snakemake.output.info)
