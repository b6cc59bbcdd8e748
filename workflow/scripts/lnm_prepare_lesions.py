"""Entry script of rule lnm_prepare_lesions: take one lesion batch onto the mask grid."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.lnm.lesions import prepare_lesion_batch_files

    prepare_lesion_batch_files(snakemake.input.mask, snakemake.params.lesions,
                               snakemake.output.batch, snakemake.output.qc, snakemake.params.rules)
