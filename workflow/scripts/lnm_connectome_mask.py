"""Entry script of rule lnm_connectome_mask: write the mask a prepared connectome stores as
a NIfTI (the mask the maps are written on when lnm.connectome.mask is left out)."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.lnm.connectome.formats import write_connectome_mask

    write_connectome_mask(snakemake.params.source["format"], snakemake.params.source["path"],
                          snakemake.output.mask)
