"""Entry script of rule lnm_qc_table: one QC row per lesion."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.lnm.lesions import concat_qc_tables

    concat_qc_tables(snakemake.input.qc, snakemake.output.table)
