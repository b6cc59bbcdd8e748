"""Entry script of rule report_cpa_umap: UMAPs of the basal and the full latent."""
from shardmap.task import snakemake_task

with snakemake_task(snakemake):
    from shardmap.report.cpa_figures import latent_umaps

    pngs = {obsm: snakemake.output[name] for obsm, name in snakemake.params.figures.items()}
    latent_umaps(snakemake.input.latents, snakemake.params.cfg, pngs, max_cells=snakemake.params.max_cells)
