"""Task cpa_predict: a counterfactual for every control cell, streamed in blocks of rows
through the torch-only inference path (``inference_model``)."""

from __future__ import annotations

import logging
import time

import anndata as ad
import h5py
import numpy as np
import pandas as pd

from ...atomic import atomic_path
from ...errors import InputError
from .. import h5ad_rows
from ..codes import encode_override
from ..config_keys import obs_keys
from ..inference_model import InferenceModel
from ..model_folder import inference_device
from ..resources import INFER_BATCH

log = logging.getLogger(__name__)


def predict_counterfactual(model_dir, adata_path, cfg, perturbation, dosage, out_path, chunk_rows,
                           device="cpu", batch_size=INFER_BATCH):
    """Mean expression of every control cell under ``perturbation`` at ``dosage`` (None:
    every drug at dose 1), on ``device`` (cpa.infer.device).

    Streams the file in blocks of ``chunk_rows`` rows (blocks without a control cell are
    not read); the output X is preallocated on disk and filled block by block.
    """
    started = time.perf_counter()
    control = cfg["control_group"]
    model = InferenceModel.load(model_dir, inference_device(device))
    genes = h5ad_rows.var_names(adata_path)
    model.check_genes(genes, f"'{adata_path}'")
    override = encode_override(perturbation, dosage, model.perturbation_state, 1)
    obs = h5ad_rows.read_obs(adata_path, sorted(set(obs_keys(cfg)) | set(model.obs_columns)))
    is_control = np.asarray(obs[cfg["perturbation_key"]].astype(str) == str(control))
    n_control = int(is_control.sum())
    if n_control == 0:
        raise InputError(f"cpa.adata has no cell of the control group '{control}' to predict from.")
    layer = model.setup.get("layer")
    where = model.matrix_label(adata_path)
    with atomic_path(out_path) as tmp:
        result = ad.AnnData(obs=obs[is_control][list(dict.fromkeys(obs_keys(cfg)))], var=pd.DataFrame(index=genes))
        result.uns["counterfactual"] = {"perturbation": perturbation, "dosage": str(dosage),
                                        "source": str(adata_path)}
        result.write_h5ad(tmp)
        with h5py.File(tmp, "r+") as out:
            if "X" in out:
                del out["X"]
            matrix = out.create_dataset("X", shape=(n_control, len(genes)), dtype="float32")
            matrix.attrs["encoding-type"] = "array"
            matrix.attrs["encoding-version"] = "0.2.0"
            buffer = np.empty((min(chunk_rows, n_control), len(genes)), dtype=np.float32)
            written = 0
            for block in h5ad_rows.row_blocks(adata_path, 0, is_control.size, chunk_rows, layer, wanted=is_control):
                rows = np.flatnonzero(is_control[block.start:block.stop])
                block_codes = model.encode_obs(obs.iloc[block.start:block.stop])
                model.predict_mean(block, block_codes, override, rows, buffer, batch_size, where, adata_path)
                matrix[written:written + rows.size] = buffer[:rows.size]
                written += rows.size
                log.info("control cells %d/%d predicted (rows up to %d/%d read)", written, n_control, block.stop,
                         is_control.size)
    seconds = time.perf_counter() - started
    log.info("%s at %s: %d control cells predicted in %.1f s", perturbation, dosage, n_control, seconds)
