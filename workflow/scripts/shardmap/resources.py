"""Honest cluster requests, the arithmetic both arms share: memory (MB) and runtime
(minutes) from a task's working set and expected seconds.

Standard library only: the formulas run in the Snakemake process when a job is
scheduled. Each arm's own formulas are in ``lnm.resources``, ``cpa.resources`` and
``report.resources``; all are documented in config/README.md.
"""

from __future__ import annotations

import json
import math

# Python, NumPy and nibabel loaded, before any data.
BASE_MB = 300
# A cluster job also holds Snakemake itself, twice: the process the executor starts in
# the job (slurm-jobstep) and the one it starts for the task, about 145 MB each
# (measured with Snakemake 9.27). The request covers the whole job, so it counts them.
SNAKEMAKE_MB = 300
# Safety factor on the computed working set (allocator slack, temporaries).
SLACK = 1.25
MIN_RUNTIME_MIN = 5


def request_mb(n_bytes):
    """Request for a task whose data take n_bytes: Snakemake's processes in the job, the
    task's interpreter and libraries, and the data with slack."""
    return int(math.ceil(SNAKEMAKE_MB + BASE_MB + SLACK * n_bytes / 1e6))


def fixed_mb(working_mb):
    """Request for a task with a fixed working set (MB)."""
    return request_mb(working_mb * 1e6)


def runtime_minutes(seconds):
    """Request for a task expected to take ``seconds``: 1.5 x that, at least MIN_RUNTIME_MIN."""
    return max(MIN_RUNTIME_MIN, int(math.ceil(1.5 * seconds / 60)))


def read_json(path):
    with open(path) as handle:
        return json.load(handle)


# The report's figures. Matplotlib and nilearn's plotting add about 250 MB to the task's
# Python; a brain figure holds the MNI152 template (2 mm), the map on the mask grid and
# nilearn's resampled copies for display, about 40 bytes per grid voxel of each.
PLOTTING_MB = 250
TEMPLATE_VOXELS = 91 * 109 * 91
FIGURE_RUNTIME_MIN = 3  # seconds of work per lesion figure; margin for a slow filesystem
UMAP_MAX_CELLS = 20_000
UMAP_RUNTIME_MIN = 15  # two UMAPs of at most 20k cells (about a minute each on one core) and numba's compilation
UMAP_LIBRARY_MB = 450  # umap-learn, pynndescent and numba loaded


def brain_figure_mem_mb(mask_info, lesion_path=None):
    """Plotting libraries, the template and the map (and the lesion on its own grid)."""
    from .lnm.resources import nifti_header

    grid = math.prod(mask_info["shape"])
    lesion = math.prod(nifti_header(lesion_path)[0][:3]) if lesion_path else 0
    return request_mb(PLOTTING_MB * 1e6 + 40 * (TEMPLATE_VOXELS + grid + lesion))


def umap_mem_mb(n_cells, n_latent):
    """The obs columns of every cell (about 64 bytes each), two latents of the subsample
    as float32 and float64, UMAP's neighbour graph (15 neighbours x 16 bytes x 4 copies)."""
    sample = min(n_cells, UMAP_MAX_CELLS)
    working = 64 * n_cells + sample * n_latent * 12 * 2 + sample * 15 * 16 * 4
    return request_mb((PLOTTING_MB + UMAP_LIBRARY_MB) * 1e6 + working)
