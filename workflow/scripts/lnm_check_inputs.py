"""Entry script of rule lnm_check_inputs: check every run's header (NIfTI runs, or the files
of a prepared connectome) before any shard is prepared, and write the run inventory."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    source = snakemake.params.get("source", {"format": "nifti"})
    if source["format"] == "nifti":
        from shardmap.lnm.connectome.runs import check_run_headers_files

        check_run_headers_files(snakemake.input.mask, snakemake.params.subjects, snakemake.output.runs)
    else:
        from shardmap.lnm.connectome.formats import check_connectome_files

        check_connectome_files(source["format"], source["path"], source.get("run_frames"), snakemake.input.mask,
                               snakemake.params.subjects, snakemake.output.runs)
