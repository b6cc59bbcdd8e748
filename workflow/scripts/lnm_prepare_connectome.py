"""Entry script of rule lnm_prepare_connectome: write one subject shard (from NIfTI runs or
a connectome prepared by another tool) and, from the same pass over its subjects, the
shard's degree sums for the hub controls."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.lnm.connectome.shards import prepare_shard_files
    from shardmap.lnm.hubs.degree import DegreeSums

    source = snakemake.params.get("source", {"format": "nifti"})
    degree = DegreeSums()
    prepare_shard_files(snakemake.input.mask, snakemake.params.subjects, snakemake.output.data,
                        snakemake.output.norms, snakemake.output.info, snakemake.params.dtype,
                        on_subject=degree.add_subject, format=source["format"], path=source.get("path"),
                        run_frames=source.get("run_frames"))
    degree.save(snakemake.output.degree)
