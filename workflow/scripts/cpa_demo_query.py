"""Entry script of rule cpa_demo_query: simulate a lab's own control cells to apply the
demo's trained model to (the demo's query data set)."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.cpa.simulate import DEMO_SCREEN, write_lab_controls

    write_lab_controls(snakemake.output.query, snakemake.params.n_cells, snakemake.params.n_genes, **DEMO_SCREEN)
