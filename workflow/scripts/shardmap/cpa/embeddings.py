"""The learned embeddings of a trained CPA: drugs (at a dose) and covariate categories.

A cell's latent state is its basal state plus, for each of its drugs, the drug's vector
scaled by the drug's learned dose response at its dose, plus one vector per covariate
value. ``drug_embeddings`` returns those scaled drug vectors (the shift a drug alone
gives at ``dose``), ``covariate_embeddings`` the covariate vectors; users compare drugs
by the cosine similarity of their embeddings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..errors import InputError


def _latent_columns(n_latent):
    return [f"latent_{i}" for i in range(n_latent)]


def drug_indices(model, drugs):
    """Indices of ``drugs`` (all of the model's when None) in the model's vocabulary."""
    vocabulary = model.drugs
    if drugs is None:
        return list(vocabulary), list(range(len(vocabulary)))
    drugs = [drugs] if isinstance(drugs, str) else list(drugs)
    unknown = [drug for drug in drugs if drug not in vocabulary]
    if unknown:
        raise InputError(f"drug(s) {unknown} are not in the model's vocabulary (it was trained on "
                         f"{vocabulary[:10]}{'...' if len(vocabulary) > 10 else ''}).")
    return drugs, [vocabulary.index(drug) for drug in drugs]


@torch.inference_mode()
def dose_responses(model, drugs=None, doses=(1.0,)):
    """The learned scalar dose response of each drug at each dose: a DataFrame with
    columns drug, dose, response (0 at dose 0)."""
    names, indices = drug_indices(model, drugs)
    module = model.module
    rows = []
    for dose in doses:
        if not np.isfinite(float(dose)) or float(dose) < 0:
            raise InputError(f"dose {dose!r} must be a finite number >= 0.")
        index = torch.as_tensor(indices, dtype=torch.long, device=module.device)
        scale = module.doser(index, torch.full((len(indices),), float(dose), device=module.device))
        rows += [(name, float(dose), float(value)) for name, value in zip(names, scale.cpu().numpy())]
    return pd.DataFrame(rows, columns=["drug", "dose", "response"])


@torch.inference_mode()
def drug_embeddings(model, dose=1.0, drugs=None):
    """(drugs x n_latent) DataFrame: each drug's vector scaled by its dose response at
    ``dose``, the latent shift the drug alone gives at that dose."""
    names, indices = drug_indices(model, drugs)
    module = model.module
    index = torch.as_tensor(indices, dtype=torch.long, device=module.device)
    vectors = module.drug_vectors(index)
    scale = module.doser(index, torch.full((len(indices),), float(dose), device=module.device))
    values = (vectors * scale[:, None]).cpu().numpy()
    return pd.DataFrame(values, index=pd.Index(names, name="drug"), columns=_latent_columns(values.shape[1]))


@torch.inference_mode()
def covariate_embeddings(model):
    """{covariate key: (categories x n_latent) DataFrame} of the covariate vectors."""
    from .categories import CategoricalCodesField
    from .codes import COVARIATES_KEY

    if COVARIATES_KEY not in model.adata_manager.data_registry:
        return {}
    categories = model.adata_manager.get_state_registry(COVARIATES_KEY)[CategoricalCodesField.CATEGORIES_KEY]
    tables = {}
    for (key, values), embedding in zip(categories.items(), model.module.covariate_embeddings):
        weights = embedding.weight.detach().cpu().numpy()
        tables[key] = pd.DataFrame(weights, index=pd.Index([str(v) for v in values], name=key),
                                   columns=_latent_columns(weights.shape[1]))
    return tables


def cosine_similarity(table):
    """Cosine similarity between the rows of an embedding DataFrame (0 for a zero row)."""
    values = table.to_numpy(dtype=np.float64)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    unit = np.divide(values, norms, out=np.zeros_like(values), where=norms > 0)
    return pd.DataFrame(unit @ unit.T, index=table.index, columns=table.index)
