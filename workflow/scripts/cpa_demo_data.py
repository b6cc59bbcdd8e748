"""Entry script of rule cpa_demo_data: simulate the demo perturbation screen."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.cpa.simulate import DEMO_SCREEN, write_screen

    write_screen(snakemake.output.adata, snakemake.params.n_cells, snakemake.params.n_genes, **DEMO_SCREEN)
