"""Entry script of rule lnm_demo_data: write the embedded demo's mask, runs and lesions."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.lnm.demo import write_demo_from_sheets

    write_demo_from_sheets(snakemake.output.mask, snakemake.input.subjects, snakemake.input.lesions)
