"""Task cpa_infer: the latents of one shard of rows, read alone from the file.

The rows stream through the model in blocks (``h5ad_rows.row_blocks``) on the
torch-only inference path (``inference_model``): no scvi-tools import, no AnnData.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ...atomic import atomic_open
from .. import h5ad_rows
from ..inference_model import InferenceModel
from ..model_folder import inference_device
from ..network import LATENT_KEYS
from ..resources import INFER_BATCH, INFER_ROWS_PER_BLOCK

log = logging.getLogger(__name__)


def infer_shard(model_dir, adata_path, start, stop, out_path, device="cpu", batch_size=INFER_BATCH,
                rows_per_block=INFER_ROWS_PER_BLOCK):
    """Latents of rows start:stop, read alone from the file, written as one .npz; on
    ``device`` (cpa.infer.device: cpu, cuda or auto)."""
    started = time.perf_counter()
    model = InferenceModel.load(model_dir, inference_device(device))
    model.check_genes(h5ad_rows.var_names(adata_path), f"'{adata_path}'")
    shard_codes = model.read_codes(adata_path, start, stop)
    n_latent = model.network.n_latent
    latents = {key: np.empty((stop - start, n_latent), dtype=np.float32) for key in LATENT_KEYS}
    layer = model.setup.get("layer")
    where = model.matrix_label(adata_path)
    for block in h5ad_rows.row_blocks(adata_path, start, stop, rows_per_block, layer):
        at = block.start - start
        block_codes = {k: None if v is None else v[at:at + block.n_rows] for k, v in shard_codes.items()}
        model.latents(block, block_codes, latents, at, batch_size, where, adata_path)
    with atomic_open(out_path) as handle:
        np.savez(handle, start=start, stop=stop, **latents)
    seconds = time.perf_counter() - started
    log.info("rows %d-%d: latents (%d x %d) in %.1f s, %.0f cells/s", start, stop, stop - start, n_latent,
             seconds, (stop - start) / max(seconds, 1e-9))
