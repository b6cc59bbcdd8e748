"""The learned embeddings of a trained CPA: drugs (at a dose) and covariate categories.

A cell's latent state is its basal state plus, for each of its drugs, the drug's vector
scaled by the drug's learned dose response at its dose, plus one vector per covariate
value. ``drug_embeddings`` returns those scaled drug vectors (the shift a drug alone
gives at ``dose``), ``covariate_embeddings`` the covariate vectors; users compare drugs
by the cosine similarity of their embeddings.

Both take single drugs: a combination's shift is the sum of its drugs' shifts at their
doses. cpa-tools' argument names (``dosage``, ``pert``, ``covariate``) get a message
naming ours (``cpa_tools_names``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..errors import InputError
from . import cpa_tools_names
from .conditions import SEPARATOR


# What get_drug_embeddings says of a combination.
COMBINATION_EMBEDDING = ("a combination's latent shift is the sum of its drugs' embeddings, each at its own dose "
                         "(get_drug_embeddings(dose=d, drugs=[drug]) per drug)")


def _latent_columns(n_latent):
    return [f"latent_{i}" for i in range(n_latent)]


def drug_indices(model, drugs, method="get_drug_embeddings", combination_hint=None):
    """Indices of ``drugs`` (all of the model's when None) in the model's vocabulary.

    A combination ('drugA+drugB') is refused with a message that ``method`` takes single
    drugs, naming the drugs of the combination, and ``combination_hint`` (what to call
    for a combination instead; ``{combination}`` and ``{dosage}`` in it are filled in with
    the first combination and a dose of 1 per drug) when given."""
    vocabulary = model.drugs
    if drugs is None:
        return list(vocabulary), list(range(len(vocabulary)))
    drugs = [drugs] if isinstance(drugs, str) else list(drugs)
    combined = [drug for drug in drugs if SEPARATOR in str(drug) and drug not in vocabulary]
    if combined:
        parts = {drug: [part.strip() for part in str(drug).split(SEPARATOR)] for drug in combined}
        named = "; ".join(f"'{drug}' combines {', '.join(repr(part) for part in found)}"
                          + ("" if set(found) <= set(vocabulary) else
                             f" (not in the model's vocabulary: {[p for p in found if p not in vocabulary]})")
                          for drug, found in parts.items())
        first = parts[combined[0]]
        hint = (combination_hint or "").format(combination=SEPARATOR.join(first),
                                               dosage=SEPARATOR.join(["1"] * len(first)))
        raise InputError(f"{method} takes single drugs: {named}. Ask for the drugs one by one"
                         + (f"; {hint}" if hint else "") + ".")
    unknown = [drug for drug in drugs if drug not in vocabulary]
    if unknown:
        raise InputError(f"drug(s) {unknown} are not in the model's vocabulary (it was trained on "
                         f"{vocabulary[:10]}{'...' if len(vocabulary) > 10 else ''}).")
    return drugs, [vocabulary.index(drug) for drug in drugs]


@torch.inference_mode()
def dose_responses(model, drugs=None, doses=(1.0,)):
    """The learned scalar dose response of each drug at each dose: a DataFrame with
    columns drug, dose, response (0 at dose 0)."""
    names, indices = drug_indices(model, drugs, "get_dose_response")
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
def drug_embeddings(model, dose=1.0, drugs=None, **kwargs):
    """(drugs x n_latent) DataFrame: each drug's vector scaled by its dose response at
    ``dose``, the latent shift the drug alone gives at that dose."""
    cpa_tools_names.check_keywords("get_drug_embeddings()", kwargs, cpa_tools_names.DRUG_EMBEDDINGS,
                                   ["dose", "drugs"])
    names, indices = drug_indices(model, drugs, "get_drug_embeddings", COMBINATION_EMBEDDING)
    module = model.module
    index = torch.as_tensor(indices, dtype=torch.long, device=module.device)
    vectors = module.drug_vectors(index)
    scale = module.doser(index, torch.full((len(indices),), float(dose), device=module.device))
    values = (vectors * scale[:, None]).cpu().numpy()
    return pd.DataFrame(values, index=pd.Index(names, name="drug"), columns=_latent_columns(values.shape[1]))


@torch.inference_mode()
def covariate_embeddings(model, **kwargs):
    """{covariate key: (categories x n_latent) DataFrame} of the covariate vectors."""
    cpa_tools_names.check_keywords("get_covariate_embeddings()", kwargs, cpa_tools_names.COVARIATE_EMBEDDINGS, [])
    from .categories import CategoricalCodesField
    from .codes import COVARIATES_KEY

    if COVARIATES_KEY not in model.adata_manager.data_registry:
        return {}
    categories = model.adata_manager.get_state_registry(COVARIATES_KEY)[CategoricalCodesField.CATEGORIES_KEY]
    tables = {}
    # The embeddings follow the setup's covariate_keys; the registry's dict may be sorted.
    keys = model.adata_manager._registry["setup_args"].get("covariate_keys") or list(categories)
    for key, embedding in zip(keys, model.module.covariate_embeddings):
        values = categories[key]
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
