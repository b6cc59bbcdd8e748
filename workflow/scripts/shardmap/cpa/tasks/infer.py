"""Task cpa_infer: the latents of one shard of rows, read alone from the file (the
training file, or a query data set of cpa.query).

The rows stream through the model in blocks (``model_input.ModelInput.blocks``: a
query's genes matched to the model's) on the torch-only inference path
(``inference_model``): no scvi-tools import, no AnnData.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ...atomic import atomic_open
from ..inference_model import InferenceModel
from ..model_folder import inference_device
from ..model_input import ModelInput
from ..network import LATENT_KEYS
from ..resources import INFER_BATCH, INFER_ROWS_PER_BLOCK

log = logging.getLogger(__name__)


def infer_shard(model_dir, adata_path, start, stop, out_path, device="cpu", batch_size=INFER_BATCH,
                rows_per_block=INFER_ROWS_PER_BLOCK, query=None):
    """Latents of rows start:stop, read alone from the file, written as one .npz (with the
    task's seconds); on ``device`` (cpa.infer.device: cpu, cuda or auto). ``query``: the
    cpa.query entry the file belongs to (None: the training file)."""
    started = time.perf_counter()
    model = InferenceModel.load(model_dir, inference_device(device))
    source = ModelInput(model.vocabulary, adata_path, query)
    shard_codes = model.encode_obs(source.obs(start, stop, names=False))
    n_latent = model.network.n_latent
    latents = {key: np.empty((stop - start, n_latent), dtype=np.float32) for key in LATENT_KEYS}
    for block in source.blocks(start, stop, rows_per_block):
        at = block.start - start
        block_codes = {k: None if v is None else v[at:at + block.n_rows] for k, v in shard_codes.items()}
        model.latents(block, block_codes, latents, at, batch_size, source.where, adata_path)
    seconds = time.perf_counter() - started
    with atomic_open(out_path) as handle:
        np.savez(handle, start=start, stop=stop, seconds=seconds, **latents)
    log.info("rows %d-%d: latents (%d x %d) in %.1f s, %.0f cells/s", start, stop, stop - start, n_latent,
             seconds, (stop - start) / max(seconds, 1e-9))
