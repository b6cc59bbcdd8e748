"""Task cpa_predict: a counterfactual for every control cell of the training file or of a
query data set, streamed in blocks of rows through the torch-only inference path
(``inference_model``)."""

from __future__ import annotations

import logging
import time

import anndata as ad
import h5py
import numpy as np
import pandas as pd

from ...atomic import atomic_path
from ...errors import InputError
from ..codes import encode_override
from ..config_keys import obs_keys
from ..inference_model import InferenceModel
from ..model_folder import inference_device
from ..model_input import ModelInput
from ..resources import INFER_BATCH

log = logging.getLogger(__name__)


def predict_counterfactual(model_dir, adata_path, cfg, perturbation, dosage, out_path, chunk_rows,
                           device="cpu", batch_size=INFER_BATCH, query=None):
    """Mean expression of every control cell under ``perturbation`` at ``dosage`` (None:
    every drug at dose 1), on ``device`` (cpa.infer.device).

    ``query``: the cpa.query entry ``adata_path`` belongs to (None: the training file).
    Control cells are those of the model's control group in its perturbation column;
    every cell of a query without that column. The output holds the model's genes (a
    query's genes matched by name) and the obs columns the model read, as the file holds
    them. Streams the file in blocks of ``chunk_rows`` rows (blocks without a control
    cell are not read); the output X is preallocated on disk and filled block by block.
    """
    started = time.perf_counter()
    model = InferenceModel.load(model_dir, inference_device(device))
    source = ModelInput(model.vocabulary, adata_path, query)
    override = encode_override(perturbation, dosage, model.perturbation_state, 1)
    genes = model.var_names
    obs = source.obs()
    is_control = source.control_mask(obs)
    n_control = int(is_control.sum())
    if n_control == 0:
        raise InputError(f"{source.label} has no cell of the control group '{model.vocabulary.control_group}' "
                         f"(obs['{source.perturbation_key}']) to predict from.")
    shown_columns = obs_keys(cfg) if query is None else model.obs_columns
    shown = source.read_obs(shown_columns)
    with atomic_path(out_path) as tmp:
        result = ad.AnnData(obs=shown[is_control], var=pd.DataFrame(index=pd.Index(genes)))
        result.uns["counterfactual"] = {"perturbation": perturbation, "dosage": str(dosage),
                                        "source": str(adata_path)}
        if query is not None:
            result.uns["counterfactual"].update(query=query["name"], **source.alignment.summary())
        result.write_h5ad(tmp)
        with h5py.File(tmp, "r+") as out:
            if "X" in out:
                del out["X"]
            matrix = out.create_dataset("X", shape=(n_control, len(genes)), dtype="float32")
            matrix.attrs["encoding-type"] = "array"
            matrix.attrs["encoding-version"] = "0.2.0"
            buffer = np.empty((min(chunk_rows, n_control), len(genes)), dtype=np.float32)
            written = 0
            for block in source.blocks(0, is_control.size, chunk_rows, wanted=is_control):
                rows = np.flatnonzero(is_control[block.start:block.stop])
                block_codes = model.encode_obs(obs.iloc[block.start:block.stop])
                model.predict_mean(block, block_codes, override, rows, buffer, batch_size, source.where, adata_path)
                matrix[written:written + rows.size] = buffer[:rows.size]
                written += rows.size
                log.info("control cells %d/%d predicted (rows up to %d/%d read)", written, n_control, block.stop,
                         is_control.size)
    seconds = time.perf_counter() - started
    log.info("%s at %s: %d control cells predicted in %.1f s (%.0f cells/s)", perturbation, dosage, n_control,
             seconds, n_control / max(seconds, 1e-9))
