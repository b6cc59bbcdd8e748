"""Task cpa_infer: the latents of one shard of rows, read alone from the file."""

from __future__ import annotations

import logging

import numpy as np

from ...atomic import atomic_open
from .. import h5ad_rows
from ..config_keys import obs_keys
from ..model_folder import load_model

log = logging.getLogger(__name__)


def infer_shard(model_dir, adata_path, cfg, start, stop, out_path, batch_size=4096):
    """Latents of rows start:stop, read alone from the file, written as one .npz; on the
    device of ``cfg["infer"]["device"]`` (default the CPU)."""
    shard = h5ad_rows.read_rows(adata_path, start, stop, obs_keys(cfg), cfg.get("layer"))
    model = load_model(model_dir, shard, (cfg.get("infer") or {}).get("device", "cpu"))
    latents = model.get_latent_representation(shard, batch_size=batch_size)
    with atomic_open(out_path) as handle:
        np.savez(handle, start=start, stop=stop, **latents)
    log.info("rows %d-%d: latents %s", start, stop, {k: v.shape for k, v in latents.items()})
