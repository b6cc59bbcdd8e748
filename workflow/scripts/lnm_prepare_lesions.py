"""Entry script of rule lnm_prepare_lesions: take one lesion batch onto the mask grid. With
lnm.degree_regression on, each lesion must leave room outside it to fit the degree map:
checked here, before any mapping. The key changes nothing this rule writes, so it is read
from the config rather than being a params that would rerun the batch."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.lnm.lesions import prepare_lesion_batch_files
    from shardmap.lnm.residual_maps import check_room_to_fit

    check = check_room_to_fit if snakemake.config["lnm"]["degree_regression"] else None
    prepare_lesion_batch_files(snakemake.input.mask, snakemake.params.lesions,
                               snakemake.output.batch, snakemake.output.qc, snakemake.params.rules, check)
