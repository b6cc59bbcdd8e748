"""Entry script of rule lnm_maps_table: the sheet of every lesion's maps (lnm/maps.tsv)."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.lnm.maps_table import write_maps_table

    write_maps_table(snakemake.output.table, snakemake.input.qc, snakemake.params.maps, snakemake.params.connectome)
