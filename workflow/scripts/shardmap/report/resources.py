"""Cluster requests of the report's figure tasks: memory (MB) and runtime (minutes).

Standard library only: these functions run in the Snakemake process when a job is
scheduled. The formulas are documented in config/README.md.
"""

from __future__ import annotations

import math

from ..lnm.resources import nifti_header
from ..resources import request_mb, runtime_minutes

# The report's figures. Matplotlib and nilearn's plotting add about 250 MB to the task's
# Python; a brain figure holds the MNI152 template (2 mm), the map on the mask grid and
# nilearn's resampled copies for display, about 40 bytes per grid voxel of each.
PLOTTING_MB = 250
TEMPLATE_VOXELS = 91 * 109 * 91
# Seconds per lesion figure inside a job (the template is loaded once per job), with
# margin for a slow filesystem; the first figure also pays the imports.
LESION_FIGURE_SECONDS = 20
UMAP_MAX_CELLS = 20_000
UMAP_RUNTIME_MIN = 15  # two UMAPs of at most 20k cells (about a minute each on one core) and numba's compilation
UMAP_LIBRARY_MB = 450  # umap-learn, pynndescent and numba loaded


def brain_figure_mem_mb(mask_info, *lesion_paths):
    """Plotting libraries, the template and the map (and the largest lesion on its own
    grid: a job draws one figure at a time)."""
    grid = math.prod(mask_info["shape"])
    lesion = max((math.prod(nifti_header(path)[0][:3]) for path in lesion_paths), default=0)
    return request_mb(PLOTTING_MB * 1e6 + 40 * (TEMPLATE_VOXELS + grid + lesion))


def lesion_figures_runtime(n_figures):
    return runtime_minutes(n_figures * LESION_FIGURE_SECONDS)


def lesion_summary_mem_mb(stats_info):
    """Plotting libraries and one lesion's statistics and maps at a time (float64)."""
    return request_mb(PLOTTING_MB * 1e6 + 12 * 8 * stats_info["n_voxels"])


def umap_mem_mb(n_cells, n_latent):
    """The obs columns of every cell (about 64 bytes each), two latents of the subsample
    as float32 and float64, UMAP's neighbour graph (15 neighbours x 16 bytes x 4 copies)."""
    sample = min(n_cells, UMAP_MAX_CELLS)
    working = 64 * n_cells + sample * n_latent * 12 * 2 + sample * 15 * 16 * 4
    return request_mb((PLOTTING_MB + UMAP_LIBRARY_MB) * 1e6 + working)
