"""The codes a trained CPA gives each cell: its perturbation as (drug index, dose) pairs
and its covariates and batch as category indices, from the vocabularies the model
recorded in its registry.

Only NumPy and pandas: the registry fields (``perturbations``, ``categories``) encode
through these functions while scvi-tools sets up an AnnData, and the inference tasks
(``inference_model``) encode a shard's obs with the same functions without importing
scvi-tools.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import InputError
from .conditions import condition_class, parse_condition, parse_obs

# Registry keys of the three encoded fields (the names the saved model's registry uses).
PERTURBATION_KEY = "perturbation"
COVARIATES_KEY = "covariates"
BATCH_KEY = "batch"
# Keys of the perturbation field's state in the registry.
DRUGS = "drugs"
CONDITIONS = "conditions"
MAX_DRUGS = "max_drugs"
CONTROL = "control_group"
# Key of a categorical field's state; the column name of a field that encodes no column.
CATEGORIES = "categories"
NO_BATCH = "_no_batch"


def encode(parsed, codes, drug_index, condition_index, max_drugs, control_group):
    """Encode cells as an (n, 2K + 1) float32 array: K drug indices (padding = n_drugs),
    K doses (padding 0), and the condition class (-1 when not among the known classes).

    ``parsed`` holds the distinct (drug, dose) tuples and ``codes`` each cell's index into
    it (``conditions.parse_obs``)."""
    n_drugs = len(drug_index)
    table = np.zeros((len(parsed), 2 * max_drugs + 1), dtype=np.float32)
    table[:, :max_drugs] = n_drugs
    for row, pairs in enumerate(parsed):
        if len(pairs) > max_drugs:
            raise InputError(f"a cell has {len(pairs)} drugs ({condition_class(pairs, control_group)}) "
                             f"but the model handles at most {max_drugs} per cell.")
        for k, (drug, dose) in enumerate(pairs):
            if drug not in drug_index:
                raise InputError(f"drug '{drug}' is not in the model's vocabulary "
                                 f"({sorted(drug_index)[:10]}...); the model cannot predict drugs it "
                                 "was not trained on.")
            table[row, k] = drug_index[drug]
            table[row, max_drugs + k] = dose
        table[row, -1] = condition_index.get(condition_class(pairs, control_group), -1)
    return table[codes]


def split_encoded(tensor):
    """(drug indices long, doses float, condition class long) from an encoded batch tensor."""
    max_drugs = (tensor.shape[1] - 1) // 2
    return (tensor[:, :max_drugs].long(), tensor[:, max_drugs:2 * max_drugs],
            tensor[:, 2 * max_drugs].long())


def encode_parsed(parsed, codes, state):
    """The encoding of parsed cells against the model's perturbation ``state``."""
    drug_index = {d: i for i, d in enumerate(state[DRUGS])}
    condition_index = {c: i for i, c in enumerate(state[CONDITIONS])}
    # Wider than the training data's K where a cell combines more drugs: the network
    # reads K from the width of the encoding.
    max_drugs = max([state[MAX_DRUGS]] + [len(p) for p in parsed])
    return encode(parsed, codes, drug_index, condition_index, max_drugs, state[CONTROL])


def encode_perturbations(obs, perturbation_key, dosage_key, state):
    """The encoding of each cell's condition and dosage columns in ``obs``."""
    parsed, codes = parse_obs(obs, perturbation_key, dosage_key, state[CONTROL])
    return encode_parsed(parsed, codes, state)


def encode_override(perturbation, dosage, state, n_cells):
    """Encode one perturbation given by the user (a counterfactual) for ``n_cells`` cells."""
    control = state[CONTROL]
    pairs = parse_condition(perturbation, dosage, control, where="counterfactual: ") if perturbation != control else ()
    max_drugs = max(1, len(pairs))
    drug_index = {d: i for i, d in enumerate(state[DRUGS])}
    condition_index = {c: i for i, c in enumerate(state[CONDITIONS])}
    row = encode([pairs], np.zeros(1, dtype=np.int64), drug_index, condition_index, max_drugs, control)
    return np.repeat(row, n_cells, axis=0)


def check_categories_present(obs, keys):
    """Raise InputError unless every column of ``keys`` is in ``obs`` without missing values."""
    for key in keys:
        if key not in obs:
            raise InputError(f"adata.obs has no column '{key}' (columns: {list(obs.columns)}).")
        if obs[key].isna().any():
            raise InputError(f"adata.obs['{key}'] has missing values in {int(obs[key].isna().sum())} "
                             "cells; fill or drop them.")


def encode_categories(obs, keys, categories):
    """(n, len(keys)) float32 codes of the columns ``keys`` against the model's sorted
    ``categories`` ({key: values}); no keys gives every cell code 0 (one category)."""
    if not keys:
        return np.zeros((len(obs), 1), dtype=np.float32)
    codes = np.empty((len(obs), len(keys)), dtype=np.float32)
    for column, key in enumerate(keys):
        index = {value: i for i, value in enumerate(categories[key])}
        # Distinct values are looked up once: a shard of millions of cells has a handful.
        inverse, values = pd.factorize(obs[key].astype(str).to_numpy())
        unseen = sorted(v for v in values if v not in index)
        if unseen:
            raise InputError(f"obs['{key}'] has the value '{unseen[0]}' that the model was not trained "
                             f"on (known: {categories[key][:10]}); the model cannot embed unseen "
                             "categories.")
        codes[:, column] = np.array([index[v] for v in values], dtype=np.float32)[inverse]
    return codes
