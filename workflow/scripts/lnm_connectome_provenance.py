"""Entry script of rule lnm_connectome_provenance: the sidecar saying which connectome made the maps."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    import json

    from shardmap.lnm.connectome.provenance import write_provenance

    with open(snakemake.input.mask_info) as handle:
        mask_info = json.load(handle)
    write_provenance(snakemake.output.record, snakemake.params.source, snakemake.params.name, mask_info,
                     snakemake.input.infos, snakemake.params.subjects_sheet)
