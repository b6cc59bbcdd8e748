"""Honest cluster requests: memory (MB) and runtime (minutes) of each task.

Standard library only: these functions run in the Snakemake process when a job is
scheduled, after its inputs exist, and read only small files (NIfTI headers and the
JSON written by earlier tasks). The formulas are documented in config/README.md.
"""

from __future__ import annotations

import gzip
import json
import math
import struct

# Python, NumPy and nibabel loaded, before any data.
BASE_MB = 300
# A cluster job also holds Snakemake itself, twice: the process the executor starts in
# the job (slurm-jobstep) and the one it starts for the task, about 145 MB each
# (measured with Snakemake 9.27). The request covers the whole job, so it counts them.
SNAKEMAKE_MB = 300
# Safety factor on the computed working set (allocator slack, temporaries).
SLACK = 1.25
# Effective whole-task speed of a mapping task per thread (matrix product plus the
# z transform and float64 accumulation), measured low on purpose: see docs/benchmarks.md.
MAPPING_FLOPS_PER_THREAD = 8e9
MAPPING_FLOPS_PER_GPU = 2e12
# Reading and decompressing NIfTI (gzip) in the preparation task, bytes per second.
PREPARE_BYTES_PER_S = 60e6
MIN_RUNTIME_MIN = 5


# Used when a header cannot be read: the task itself then stops with a clear message
# about the file, so the request only has to let it start.
UNREADABLE_HEADER = ((256, 256, 256, 1200), 4)


def nifti_header(path):
    """Shape and bytes per voxel of a NIfTI-1/2 file (.nii or .nii.gz), from its header only.

    A file that is missing or not NIfTI gives UNREADABLE_HEADER (a generous guess):
    resource requests must never hide the task's own error message behind a traceback.
    """
    try:
        return _read_nifti_header(path)
    except (OSError, EOFError, ValueError, struct.error):
        return UNREADABLE_HEADER


def _read_nifti_header(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        raw = handle.read(540)
    for order in "<>":
        size = struct.unpack(order + "i", raw[:4])[0]
        if size == 348:
            dims = struct.unpack(order + "8h", raw[40:56])
            bitpix = struct.unpack(order + "h", raw[72:74])[0]
            break
        if size == 540:
            bitpix = struct.unpack(order + "h", raw[14:16])[0]
            dims = struct.unpack(order + "8q", raw[16:80])
            break
    else:
        raise ValueError(f"'{path}' is not a NIfTI file")
    ndim = max(1, min(int(dims[0]), 7))
    return tuple(int(d) for d in dims[1:1 + ndim]), max(1, bitpix // 8)


def _mb(n_bytes):
    """Request for a task whose data take n_bytes: Snakemake's processes in the job, the
    task's interpreter and libraries, and the data with slack."""
    return int(math.ceil(SNAKEMAKE_MB + BASE_MB + SLACK * n_bytes / 1e6))


def fixed_mb(working_mb):
    """Request for a task with a fixed working set (MB)."""
    return _mb(working_mb * 1e6)


def _minutes(seconds):
    return max(MIN_RUNTIME_MIN, int(math.ceil(1.5 * seconds / 60)))


def read_json(path):
    with open(path) as handle:
        return json.load(handle)


def mask_info_mem_mb(mask_size_mb):
    """The mask read whole (a gzip-compressed mask expands by up to about 40 x)."""
    return _mb(40 * mask_size_mb * 1e6)


def check_runs_mem_mb(mask_info):
    """The mask as a boolean grid, its voxel coordinates, and one run header at a time."""
    grid = math.prod(mask_info["shape"])
    return _mb(grid * 9 + mask_info["n_voxels"] * 3 * 8)


def check_runs_runtime(run_paths):
    """A header read per run (a few ms each, also from a slow network filesystem)."""
    return _minutes(0.05 * len(run_paths))


def prepare_shard_mem_mb(mask_info, run_paths, n_subjects):
    """One run's whole 4D array (float64 after scaling) plus the subject's (V, T) float64
    copies (centred, unit, stored) and the shard's norms."""
    n_voxels = mask_info["n_voxels"]
    grid = math.prod(mask_info["shape"])
    shapes = [nifti_header(p)[0] for p in run_paths]
    frames = [shape[3] if len(shape) > 3 else 1 for shape in shapes]
    per_subject_frames = max(frames) * 2  # a subject has one or more runs; keep room for two
    working = grid * max(frames) * 8 + 4 * n_voxels * per_subject_frames * 8
    return _mb(working + n_subjects * 2 * n_voxels * 8)


def prepare_shard_runtime(run_paths):
    import os

    total = sum(os.path.getsize(p) for p in run_paths)
    return _minutes(total * 4 / PREPARE_BYTES_PER_S)  # gzip expands about 4 x


def lesion_batch_mem_mb(mask_info, lesion_paths):
    largest = max(math.prod(nifti_header(p)[0][:3]) for p in lesion_paths)
    return _mb(8 * (largest * 6 + math.prod(mask_info["shape"]) * 4 + mask_info["n_voxels"] * 8))


def mapping_mem_mb(shard_info, n_lesions, device="cpu"):
    """Two subjects' frames as float32 (plus the stored copies if float16: one is read
    while the other is computed), the float64 sums (L x 2 x V), on the CPU the float32
    running sums (L x 2 x V) and per-block scratch."""
    n_voxels = shard_info["n_voxels"]
    offsets = shard_info["frame_offsets"]
    max_frames = max(b - a for a, b in zip(offsets, offsets[1:]))
    float16 = shard_info["dtype"] == "float16"
    frames = 2 * max_frames * n_voxels * (6 if float16 else 4)
    sums = n_lesions * 2 * n_voxels * (8 if device == "cuda" else 12)
    torch_import = 400e6 if float16 or device == "cuda" else 0  # torch widens float16 / runs the GPU kernel
    return _mb(frames + sums + n_voxels * 8 * 6 + 32 * 2 ** 20 + torch_import)


def mapping_runtime(shard_info, n_lesions, threads=1, device="cpu"):
    """Matrix product at a low per-thread rate plus reading the shard at 200 MB/s; on a
    GPU (``device`` cuda) the product costs little and the read dominates."""
    n_voxels = shard_info["n_voxels"]
    frames = shard_info["frame_offsets"][-1]
    flop = 2.0 * frames * n_voxels * n_lesions
    rate = MAPPING_FLOPS_PER_GPU if device == "cuda" else MAPPING_FLOPS_PER_THREAD * max(1, threads)
    return _minutes(flop / rate + frames * n_voxels * 4 / 200e6)


def merge_mem_mb(n_lesions, n_voxels):
    return _mb(2 * n_lesions * 2 * n_voxels * 8)


def maps_mem_mb(mask_info, copies=1):
    """Per-voxel statistics (float64) and three maps on the whole grid (float32);
    `copies` = 2 for the group maps (running sums plus one lesion's maps)."""
    return _mb(copies * (12 * mask_info["n_voxels"] * 8 + 3 * math.prod(mask_info["shape"]) * 4))


# Writing one lesion's three maps takes seconds (one row of sums, three gzip-compressed
# images); one minute of margin more for a slow shared filesystem.
LESION_MAPS_RUNTIME_MIN = 2


# The perturbation arm. Training holds the AnnData in memory (about 3 x the .h5ad size
# for a sparse matrix) plus the network; inference holds one shard densified.
CPA_TRAIN_CELLS_PER_S = 2000  # cells x epochs per second on one CPU core, measured low on purpose
CPA_INFER_CELLS_PER_S = 5000


# PyTorch, Lightning and scvi-tools loaded, on top of BASE_MB.
TORCH_MB = 700
ANNDATA_MB = 200  # anndata, pandas and h5py, for the tasks that never load the model


def cpa_train_mem_mb(adata_size_mb, cfg):
    return _mb(3 * adata_size_mb * 1e6 + 2 * cfg["train"]["batch_size"] * 40_000 * 4) + TORCH_MB


def cpa_train_runtime(n_cells, cfg):
    seconds = n_cells * cfg["train"]["max_epochs"] / (CPA_TRAIN_CELLS_PER_S * max(1, cfg["threads"]))
    return _minutes(seconds)


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
    return _mb(copies * (3 * stored + dense_batch + latents + output)) + TORCH_MB


def cpa_check_mem_mb(cfg, adata_path, rows_per_chunk=20_000):
    """The configured obs columns of every cell (about 100 bytes per value as strings)
    and one chunk of rows of the matrix, as read and as the checks' boolean copies."""
    import os

    n_cells, n_genes = _h5ad_shape(adata_path)
    n_keys = 2 + len(cfg.get("covariate_keys") or []) + sum(
        1 for k in ("batch_key", "smiles_key", "split_key") if cfg.get(k))
    rows = min(rows_per_chunk, max(n_cells, 1))
    chunk = os.path.getsize(adata_path) * rows / max(n_cells, 1)
    return _mb(n_cells * 100 * (n_keys + 1) + 4 * chunk) + ANNDATA_MB


def cpa_check_runtime(n_cells):
    """The matrix read once, in chunks (at least 50k cells per second from disk)."""
    return _minutes(n_cells / 50_000)


def cpa_infer_runtime(cfg, n_cells=None):
    rows = cfg["shard_size"] if n_cells is None else n_cells
    return _minutes(rows / CPA_INFER_CELLS_PER_S)


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
    grid = math.prod(mask_info["shape"])
    lesion = math.prod(nifti_header(lesion_path)[0][:3]) if lesion_path else 0
    return _mb(PLOTTING_MB * 1e6 + 40 * (TEMPLATE_VOXELS + grid + lesion))


def umap_mem_mb(n_cells, n_latent):
    """The obs columns of every cell (about 64 bytes each), two latents of the subsample
    as float32 and float64, UMAP's neighbour graph (15 neighbours x 16 bytes x 4 copies)."""
    sample = min(n_cells, UMAP_MAX_CELLS)
    working = 64 * n_cells + sample * n_latent * 12 * 2 + sample * 15 * 16 * 4
    return _mb((PLOTTING_MB + UMAP_LIBRARY_MB) * 1e6 + working)
