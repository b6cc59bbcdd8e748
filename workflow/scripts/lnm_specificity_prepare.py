"""Entry script of rule lnm_specificity_prepare: the design, the residuals and the observed t."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake) as log:
    from shardmap.lnm.specificity import prepare_specificity_files

    if snakemake.params.unused_columns:
        log.info("columns of '%s' not used by the GLM: %s", snakemake.params.sheet,
                 ", ".join(snakemake.params.unused_columns))
    prepare_specificity_files(snakemake.params.design, snakemake.params.sheet_covariates, snakemake.params.spec,
                              snakemake.input.mask, snakemake.params.sensitivity_threshold,
                              snakemake.params.lesion_rules, snakemake.params.sheet, snakemake.params.lesion_maps,
                              list(zip(snakemake.input.get("sums", []), snakemake.input.get("infos", []))),
                              snakemake.input.get("batches", []), snakemake.output)
