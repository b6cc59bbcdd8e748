"""Entry script of rule lnm_specificity_prepare: the design, the residuals and the observed t."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake) as log:
    from shardmap.lnm.group.specificity import log_unused_columns, prepare_specificity_files

    params = snakemake.params
    log_unused_columns(params.sheet, bool(params.lesion_maps), params.spec["covariates"])
    prepare_specificity_files(params.design, params.sheet_covariates, params.spec, snakemake.input.mask,
                              params.lesion_rules, params.sheet, params.lesion_maps,
                              list(zip(snakemake.input.get("sums", []), snakemake.input.get("infos", []))),
                              snakemake.input.get("batches", []), snakemake.output, snakemake.input.get("degree"))
