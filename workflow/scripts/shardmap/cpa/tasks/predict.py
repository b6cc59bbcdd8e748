"""Task cpa_predict: a counterfactual for every control cell, streamed in chunks of rows."""

from __future__ import annotations

import logging

import anndata as ad
import h5py
import numpy as np
import pandas as pd

from ...atomic import atomic_path
from ...errors import InputError
from .. import h5ad_rows
from ..config_keys import obs_keys
from ..model_folder import load_model

log = logging.getLogger(__name__)


def predict_counterfactual(model_dir, adata_path, cfg, perturbation, dosage, out_path, chunk_rows):
    """Mean expression of every control cell under ``perturbation`` at ``dosage``.

    Streams the file in chunks of rows; the output X is preallocated on disk and filled
    chunk by chunk.
    """
    control = cfg["control_group"]
    obs = h5ad_rows.read_obs(adata_path, obs_keys(cfg))
    is_control = np.asarray(obs[cfg["perturbation_key"]] == control)
    n_control = int(is_control.sum())
    if n_control == 0:
        raise InputError(f"cpa.adata has no cell of the control group '{control}' to predict from.")
    obs = obs[is_control]
    genes = h5ad_rows.var_names(adata_path)
    model = None
    with atomic_path(out_path) as tmp:
        result = ad.AnnData(obs=obs, var=pd.DataFrame(index=genes))
        result.uns["counterfactual"] = {"perturbation": perturbation, "dosage": str(dosage),
                                        "source": str(adata_path)}
        result.write_h5ad(tmp)
        with h5py.File(tmp, "r+") as out:
            if "X" in out:
                del out["X"]
            matrix = out.create_dataset("X", shape=(n_control, len(genes)), dtype="float32")
            matrix.attrs["encoding-type"] = "array"
            matrix.attrs["encoding-version"] = "0.2.0"
            written = 0
            for start in range(0, is_control.size, chunk_rows):
                stop = min(start + chunk_rows, is_control.size)
                rows = np.flatnonzero(is_control[start:stop])
                if rows.size == 0:
                    continue  # no control cell here: the rows are not even read
                chunk = h5ad_rows.read_rows(adata_path, start, stop, obs_keys(cfg), cfg.get("layer"))
                if model is None:
                    model = load_model(model_dir, chunk, (cfg.get("infer") or {}).get("device", "cpu"))
                mean = model.predict(chunk, indices=rows, perturbation=perturbation, dosage=dosage)
                model.release(chunk)
                matrix[written:written + rows.size] = mean
                written += rows.size
                log.info("control cells %d/%d predicted (rows up to %d/%d read)", written, n_control, stop,
                         is_control.size)
    log.info("%s at %s: %d control cells predicted", perturbation, dosage, n_control)
