"""Cluster requests of the perturbation arm's tasks: memory (MB) and runtime (minutes).

Standard library only (h5py, when installed, to read the .h5ad's shape): these
functions run in the Snakemake process when a job is scheduled. Training holds the
AnnData in memory (about 3 x the .h5ad size for a sparse matrix) plus the network;
the inference tasks hold two blocks of rows and their outputs. The formulas are
documented in config/README.md.
"""

from __future__ import annotations

import os

from ..resources import request_mb, runtime_minutes

TRAIN_CELLS_PER_S = 2000  # cells x epochs per second on one CPU core, measured low on purpose
INFER_CELLS_PER_S = 5000

# PyTorch, Lightning and scvi-tools loaded, on top of BASE_MB.
TORCH_MB = 700
# PyTorch alone: cpa_infer and cpa_predict run the network without scvi-tools (312 MB
# peak for the whole process with the model loaded, measured).
INFERENCE_TORCH_MB = 300
# Rows cpa_infer reads at a time (large enough that h5py's cost per call is small: about
# 8 MB per 1000 cells at G = 2000 and 26 % non-zeros) and cells per batch of the network.
INFER_ROWS_PER_BLOCK = 16384
INFER_BATCH = 4096
ANNDATA_MB = 200  # anndata, pandas and h5py, for the tasks that never load the model


def train_mem_mb(adata_size_mb, cfg):
    return request_mb(3 * adata_size_mb * 1e6 + 2 * cfg["train"]["batch_size"] * 40_000 * 4) + TORCH_MB


def train_runtime(n_cells, cfg):
    seconds = n_cells * cfg["train"]["max_epochs"] / (TRAIN_CELLS_PER_S * max(1, cfg["threads"]))
    return runtime_minutes(seconds)


def shard_mem_mb(cfg, adata_path, with_output=False, copies=1):
    """One shard of rows: sparse rows as read (about 12 bytes per stored value), their
    dense float32 copy per batch, and the latents (or predictions) of the shard;
    `copies` = 2 for the evaluation (observed and predicted side by side)."""
    n_cells, n_genes = _h5ad_shape(adata_path)
    rows = min(cfg["shard_size"], n_cells)
    stored = os.path.getsize(adata_path) * rows / max(n_cells, 1)
    dense_batch = 4096 * n_genes * 4 * 3
    latents = rows * cfg["model"]["n_latent"] * 4 * 3
    output = rows * n_genes * 4 if with_output else 0
    return request_mb(copies * (3 * stored + dense_batch + latents + output)) + TORCH_MB


def infer_mem_mb(cfg, adata_path):
    """cpa_infer: the shard's obs columns, two blocks of rows as read (the one being
    inferred and the next being read), three dense-sized temporaries of a batch and the
    shard's three latents."""
    n_cells, n_genes = _h5ad_shape(adata_path)
    rows = min(cfg["shard_size"], n_cells)
    block = _stored_rows_bytes(adata_path, min(INFER_ROWS_PER_BLOCK, rows), n_cells)
    obs = rows * 100 * (len(_obs_keys(cfg)) + 1)
    latents = rows * cfg["model"]["n_latent"] * 4 * 3
    return request_mb(obs + 2 * block + 3 * INFER_BATCH * n_genes * 4 + latents) + INFERENCE_TORCH_MB


def predict_mem_mb(cfg, adata_path):
    """cpa_predict: the obs columns of every cell, two blocks of shard_size rows as read,
    the block's predictions and three dense-sized temporaries of a batch."""
    n_cells, n_genes = _h5ad_shape(adata_path)
    rows = min(cfg["shard_size"], n_cells)
    block = _stored_rows_bytes(adata_path, rows, n_cells)
    obs = n_cells * 100 * (len(_obs_keys(cfg)) + 1)
    return request_mb(obs + 2 * block + rows * n_genes * 4 + 3 * INFER_BATCH * n_genes * 4) + INFERENCE_TORCH_MB


def _stored_rows_bytes(adata_path, rows, n_cells):
    """3 x the file's bytes per row x ``rows``: a block as read, with room for a
    compressed file's values unpacked."""
    return 3 * os.path.getsize(adata_path) * rows / max(n_cells, 1)


def _obs_keys(cfg):
    keys = [cfg["perturbation_key"]] + list(cfg.get("covariate_keys") or [])
    return keys + [cfg[k] for k in ("dosage_key", "batch_key", "smiles_key", "split_key") if cfg.get(k)]


def check_mem_mb(cfg, adata_path, rows_per_chunk=20_000):
    """The configured obs columns of every cell (about 100 bytes per value as strings)
    and one chunk of rows of the matrix, as read and as the checks' boolean copies."""
    n_cells, n_genes = _h5ad_shape(adata_path)
    n_keys = 2 + len(cfg.get("covariate_keys") or []) + sum(
        1 for k in ("batch_key", "smiles_key", "split_key") if cfg.get(k))
    rows = min(rows_per_chunk, max(n_cells, 1))
    chunk = os.path.getsize(adata_path) * rows / max(n_cells, 1)
    return request_mb(n_cells * 100 * (n_keys + 1) + 4 * chunk) + ANNDATA_MB


def check_runtime(n_cells):
    """The matrix read once, in chunks (at least 50k cells per second from disk)."""
    return runtime_minutes(n_cells / 50_000)


def infer_runtime(cfg, n_cells=None):
    rows = cfg["shard_size"] if n_cells is None else n_cells
    return runtime_minutes(rows / INFER_CELLS_PER_S)


def _h5ad_shape(path):
    try:
        import h5py

        with h5py.File(path, "r") as handle:
            obs, var = handle["obs"], handle["var"]
            return int(obs[obs.attrs["_index"]].shape[0]), int(var[var.attrs["_index"]].shape[0])
    except Exception:  # unreadable: let the task report it
        return 1_000_000, 40_000


def dose_response_mem_mb(cfg, adata_path, n_cells=None):
    """The obs columns of every cell, one chunk of 20,000 rows as read, the sampled control
    cells (n_cells per covariate group, at most every cell) dense, their predictions
    (three copies of cells x genes) and the table (about 80 bytes per row)."""
    total, n_genes = _h5ad_shape(adata_path)
    spec = cfg["dose_response"]
    groups = max(1, 3 ** len(cfg.get("covariate_keys") or []))  # a guess at the combinations
    cells = min(total, int(spec["n_cells"]) * groups)
    chunk = os.path.getsize(adata_path) * min(20_000, total) / max(total, 1)
    rows = len(spec["drugs"]) * len(spec["doses"]) * groups * n_genes
    return request_mb(total * 100 * 4 + 3 * chunk + 4 * cells * n_genes * 4 + rows * 80) + TORCH_MB


def dose_response_runtime(cfg, n_cells):
    """One prediction of the sampled control cells per drug and dose, plus reading the file."""
    spec = cfg["dose_response"]
    cells = min(n_cells, int(spec["n_cells"]) * max(1, 3 ** len(cfg.get("covariate_keys") or [])))
    predictions = cells * (1 + len(spec["drugs"]) * len(spec["doses"]))
    return runtime_minutes(predictions / INFER_CELLS_PER_S + n_cells / 50_000)


def query_check_mem_mb(cfg, adata_path, loads_model):
    """cpa_query_check: as cpa_check_inputs, plus a chunk with the model's genes (a query's
    genes matched by name) and, when the model is read from its folder, PyTorch."""
    n_cells, _ = _h5ad_shape(adata_path)
    chunk = os.path.getsize(adata_path) * min(20_000, max(n_cells, 1)) / max(n_cells, 1)
    return check_mem_mb(cfg, adata_path) + request_mb(2 * chunk) + (INFERENCE_TORCH_MB if loads_model else 0)


def query_infer_mem_mb(cfg, adata_path):
    """cpa_query_infer: cpa_infer's request plus the block in the model's genes."""
    n_cells, _ = _h5ad_shape(adata_path)
    block = _stored_rows_bytes(adata_path, min(INFER_ROWS_PER_BLOCK, cfg["shard_size"], max(n_cells, 1)), n_cells)
    return infer_mem_mb(cfg, adata_path) + request_mb(block)


def query_predict_mem_mb(cfg, adata_path):
    """cpa_query_predict: cpa_predict's request plus the block in the model's genes."""
    n_cells, _ = _h5ad_shape(adata_path)
    block = _stored_rows_bytes(adata_path, min(cfg["shard_size"], max(n_cells, 1)), n_cells)
    return predict_mem_mb(cfg, adata_path) + request_mb(block)
