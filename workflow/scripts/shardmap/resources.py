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


# The perturbation arm. Training holds the AnnData in memory (about 3 x the .h5ad size
# for a sparse matrix) plus the network; inference holds one shard densified.
CPA_TRAIN_CELLS_PER_S = 2000  # cells x epochs per second on one CPU core, measured low on purpose
CPA_INFER_CELLS_PER_S = 5000


# PyTorch, Lightning and scvi-tools loaded, on top of BASE_MB.
TORCH_MB = 700
ANNDATA_MB = 200  # anndata, pandas and h5py, for the tasks that never load the model


def cpa_train_mem_mb(adata_size_mb, cfg):
    return request_mb(3 * adata_size_mb * 1e6 + 2 * cfg["train"]["batch_size"] * 40_000 * 4) + TORCH_MB


def cpa_train_runtime(n_cells, cfg):
    seconds = n_cells * cfg["train"]["max_epochs"] / (CPA_TRAIN_CELLS_PER_S * max(1, cfg["threads"]))
    return runtime_minutes(seconds)


def cpa_shard_mem_mb(cfg, adata_path, with_output=False, copies=1):
    """One shard of rows: sparse rows as read (about 12 bytes per stored value), their
    dense float32 copy per batch, and the latents (or predictions) of the shard;
    `copies` = 2 for the evaluation (observed and predicted side by side)."""
    import os

    n_cells, n_genes = _h5ad_shape(adata_path)
    rows = min(cfg["shard_size"], n_cells)
    stored = os.path.getsize(adata_path) * rows / max(n_cells, 1)
    dense_batch = 4096 * n_genes * 4 * 3
    latents = rows * cfg["model"]["n_latent"] * 4 * 3
    output = rows * n_genes * 4 if with_output else 0
    return request_mb(copies * (3 * stored + dense_batch + latents + output)) + TORCH_MB


def cpa_check_mem_mb(cfg, adata_path, rows_per_chunk=20_000):
    """The configured obs columns of every cell (about 100 bytes per value as strings)
    and one chunk of rows of the matrix, as read and as the checks' boolean copies."""
    import os

    n_cells, n_genes = _h5ad_shape(adata_path)
    n_keys = 2 + len(cfg.get("covariate_keys") or []) + sum(
        1 for k in ("batch_key", "smiles_key", "split_key") if cfg.get(k))
    rows = min(rows_per_chunk, max(n_cells, 1))
    chunk = os.path.getsize(adata_path) * rows / max(n_cells, 1)
    return request_mb(n_cells * 100 * (n_keys + 1) + 4 * chunk) + ANNDATA_MB


def cpa_check_runtime(n_cells):
    """The matrix read once, in chunks (at least 50k cells per second from disk)."""
    return runtime_minutes(n_cells / 50_000)


def cpa_infer_runtime(cfg, n_cells=None):
    rows = cfg["shard_size"] if n_cells is None else n_cells
    return runtime_minutes(rows / CPA_INFER_CELLS_PER_S)


def _h5ad_shape(path):
    try:
        import h5py

        with h5py.File(path, "r") as handle:
            obs, var = handle["obs"], handle["var"]
            return int(obs[obs.attrs["_index"]].shape[0]), int(var[var.attrs["_index"]].shape[0])
    except Exception:  # unreadable: let the task report it
        return 1_000_000, 40_000


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
