"""Entry script of rule lnm_specificity_merge: p maps, the conjunction and the null table."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.lnm.nifti import load_mask
    from shardmap.lnm.group.specificity import finish_specificity

    spec = snakemake.params.spec
    paths = {name: path for name, path in snakemake.output.items()}
    sensitivity = {"pos": snakemake.input.sensitivity_pos, "neg": snakemake.input.sensitivity_neg}
    finish_specificity(snakemake.input.glm, snakemake.input.nulls, sensitivity, spec["n_permutations"], spec["alpha"],
                       spec["sensitivity_fraction"], load_mask(snakemake.input.mask), paths)
