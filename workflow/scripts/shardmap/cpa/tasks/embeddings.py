"""Task cpa_embeddings: the trained model's drug and covariate embeddings as one .h5ad."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd

from ...atomic import atomic_path
from .. import h5ad_rows
from ..config_keys import obs_keys
from ..model_folder import load_model

log = logging.getLogger(__name__)


def placeholder_cell(model_dir):
    """One control cell the saved model can be loaded with (``CPA.load`` sets a model up
    for an AnnData): a count in every gene, the first category of each covariate and batch.
    What the model learned does not depend on it; it stands in for a training file a model
    trained elsewhere comes without."""
    from ..inference_model import InferenceModel

    vocabulary = InferenceModel.load(model_dir).vocabulary
    setup = vocabulary.setup
    obs = {setup["perturbation_key"]: [vocabulary.control_group]}
    if setup.get("dosage_key"):
        obs[setup["dosage_key"]] = ["0"]
    for key in vocabulary.covariate_keys + ([vocabulary.batch_key] if vocabulary.batch_key else []):
        obs[key] = [vocabulary.categories(key)[0]]
    matrix = np.ones((1, vocabulary.var_names.size), dtype=np.float32)
    cell = ad.AnnData(X=matrix, obs=pd.DataFrame(obs, index=["placeholder"]),
                      var=pd.DataFrame(index=vocabulary.var_names))
    if setup.get("layer"):
        cell.layers[setup["layer"]] = matrix
    return cell


def write_embeddings(model_dir, adata_path, cfg, out_path, dose=1.0):
    """One row per drug (its vector scaled by its dose response at ``dose``) and per
    covariate category; obs says which (kind: drug or the covariate key; name); uns holds
    the drugs' cosine similarity and their learned dose responses. ``adata_path`` None (a
    model trained elsewhere, no training file): the model is loaded with a placeholder cell."""
    from ..embeddings import cosine_similarity

    cell = (placeholder_cell(model_dir) if adata_path is None
            else h5ad_rows.read_rows(adata_path, 0, 1, obs_keys(cfg), cfg.get("layer")))
    model = load_model(model_dir, cell)
    drugs = model.get_drug_embeddings(dose=dose)
    tables = [("drug", drugs)] + list(model.get_covariate_embeddings().items())
    values = np.concatenate([table.to_numpy() for _, table in tables]).astype(np.float32)
    obs = pd.DataFrame({"kind": [kind for kind, table in tables for _ in range(len(table))],
                        "name": [str(name) for _, table in tables for name in table.index]})
    obs.index = [f"{kind}:{name}" for kind, name in zip(obs["kind"], obs["name"])]
    result = ad.AnnData(X=values, obs=obs, var=pd.DataFrame(index=drugs.columns))
    result.uns["drug_dose"] = float(dose)
    result.uns["drug_cosine_similarity"] = cosine_similarity(drugs).to_numpy()
    result.uns["drugs"] = np.asarray(drugs.index, dtype=str)
    curves = model.get_dose_response(doses=np.geomspace(1e-3, 10, 25))
    result.uns["dose_response"] = {"dose": curves["dose"].to_numpy(), "response": curves["response"].to_numpy(),
                                   "drug": curves["drug"].to_numpy(dtype=str)}
    with atomic_path(out_path) as tmp:
        result.write_h5ad(tmp)
    log.info("%d drug and %d covariate embeddings of size %d", len(drugs), len(obs) - len(drugs), values.shape[1])
    return result
