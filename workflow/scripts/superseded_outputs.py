"""Entry script of rule superseded_outputs: move aside the files of the earlier outputs list
that this config no longer asks for, then write this config's list in its place."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    import logging
    import os

    from shardmap.superseded import move_aside, superseded, write_outputs

    dropped = superseded(snakemake.output.outputs, snakemake.input)
    folder = move_aside(dropped, os.path.dirname(snakemake.output.outputs))  # the list lies at the top of outdir
    if folder:
        logging.getLogger("shardmap.superseded").warning(
            "%d output(s) of an earlier run that this config no longer asks for moved to %s: %s%s", len(dropped),
            folder, ", ".join(dropped[:5]), " ..." if len(dropped) > 5 else "")
    write_outputs(snakemake.output.outputs, snakemake.input)
