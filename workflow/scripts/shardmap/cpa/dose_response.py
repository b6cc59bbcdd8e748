"""Predicted dose-response curves: each drug's effect on every gene across doses.

For each drug and dose, every sampled control cell is predicted under the drug at that
dose (a counterfactual: its basal state and covariates are kept), at a fixed library
size so that cells compare; the curve is the mean over the control cells of each
covariate group, and the change from the same cells predicted as controls.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import InputError

# Predictions of count models are scaled to this library size (counts per 10k).
LIBRARY_SIZE = 1e4
# What predict_dose_response says of a combination ({combination}, {dosage}: one dose per drug).
COMBINATION_HINT = ("for a combination, predict cells under it at the doses you choose: model.predict(adata, "
                    "indices=..., perturbation='{combination}', dosage='{dosage}')")


def control_cells(obs, perturbation_key, control_group, covariates, n_cells, seed=0):
    """{covariate values tuple: row indices} of up to ``n_cells`` control cells of each
    combination of ``covariates`` (group k of the sorted combinations drawn with the seed
    [seed, k]); one group () without covariates. The workflow's task draws with it which
    rows to read, and predict_dose_response which cells to predict."""
    is_control = obs[perturbation_key].astype(str).str.strip().to_numpy() == str(control_group)
    if not is_control.any():
        raise InputError(f"no cell of obs['{perturbation_key}'] is the control group "
                         f"'{control_group}', so there is nothing to predict from.")
    missing = [key for key in covariates if key not in obs]
    if missing:
        raise InputError(f"covariates {missing} are not obs columns (columns: {list(obs.columns)}).")
    positions = np.flatnonzero(is_control)
    keys = ([tuple(row) for row in obs.iloc[positions][list(covariates)].astype(str).itertuples(index=False)]
            if covariates else [()] * positions.size)
    groups = {}
    for k, label in enumerate(sorted(set(keys))):  # group k draws from (seed, k): its own stream
        rows = positions[np.array([key == label for key in keys])]
        groups[label] = np.sort(np.random.default_rng([seed, k]).permutation(rows)[:n_cells])
    return groups


def predict_dose_response(model, drugs, doses, adata=None, covariates=None, n_cells=500, seed=0,
                          library_size=LIBRARY_SIZE):
    """A tidy table of predicted expression across doses.

    Parameters
    ----------
    drugs : drug names (each alone; combinations are counterfactuals of ``predict``).
    doses : the dose grid (>= 0; 0 gives the control prediction).
    covariates : obs columns to group the control cells by (default: the model's
        covariate keys); one curve per combination of their values.
    n_cells : control cells sampled per group (seeded by ``seed``).

    Returns
    -------
    DataFrame with columns drug, dose, the covariate columns, gene, mean (predicted mean
    expression at ``library_size`` for count models) and change (mean minus the same
    cells' control prediction).
    """
    from .embeddings import drug_indices

    adata = model._validate_anndata(adata)
    setup = model.adata_manager._registry["setup_args"]
    covariates = list(setup.get("covariate_keys") or []) if covariates is None else list(covariates)
    names, _ = drug_indices(model, drugs, "predict_dose_response", COMBINATION_HINT)
    doses = [float(d) for d in doses]
    if any(not np.isfinite(d) or d < 0 for d in doses):
        raise InputError(f"doses {doses} must be finite numbers >= 0.")
    library = library_size if model.module.count_data else None
    genes = np.asarray(adata.var_names)
    frames = []
    groups = control_cells(adata.obs, setup["perturbation_key"], setup["control_group"], covariates, n_cells, seed)
    for label, rows in groups.items():
        control = model.predict(adata, indices=rows, perturbation=setup["control_group"],
                                library_size=library).mean(0)
        for drug in names:
            for dose in doses:
                mean = model.predict(adata, indices=rows, perturbation=drug, dosage=f"{dose:g}",
                                     library_size=library).mean(0)
                frame = pd.DataFrame({"drug": drug, "dose": dose, "gene": genes, "mean": mean,
                                      "change": mean - control})
                for key, value in zip(covariates, label):
                    frame[key] = value
                frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    return table[["drug", "dose", *covariates, "gene", "mean", "change"]]
