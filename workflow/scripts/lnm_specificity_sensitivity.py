"""Entry script of rule lnm_specificity_sensitivity: the cases' sensitivity maps of the conjunction."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.lnm.group.specificity import cases_sensitivity_files

    params = snakemake.params
    cases_sensitivity_files(params.design, params.spec, snakemake.input.mask, params.lesion_rules, params.sheet,
                            params.lesion_maps,
                            list(zip(snakemake.input.get("sums", []), snakemake.input.get("infos", []))),
                            snakemake.input.get("batches", []), params.threshold, snakemake.output)
