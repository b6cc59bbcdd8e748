"""Entry script of rule report_software: the config used and the software versions."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.report.provenance import write_config, write_versions

    write_versions(snakemake.output.versions, snakemake.input.envs)
    write_config(dict(snakemake.config), snakemake.output.config)
