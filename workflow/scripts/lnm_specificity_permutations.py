"""Entry script of rule lnm_specificity_permutations: one range of permutations over one voxel chunk."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.lnm.nifti import load_mask
    from shardmap.lnm.group.specificity import permutation_task

    spec = snakemake.params.spec
    permutation_task(snakemake.input.residuals, snakemake.input.glm, load_mask(snakemake.input.mask), spec["seed"],
                     spec["n_permutations"], tuple(snakemake.params.permutations), snakemake.params.chunk,
                     spec["voxel_chunks"], spec["tfce"], snakemake.output.null)
