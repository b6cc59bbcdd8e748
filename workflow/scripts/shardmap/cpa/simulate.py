"""A perturbation screen with known truth, for the demo and the tests.

Cells of a few cell types have a basal latent state (type centre plus noise). Each drug
moves the latent state along its own direction by a sigmoid of log-dose (a Hill curve);
a combination adds the effects of its drugs. Genes are a log-linear read-out of the
latent state, and counts are negative binomial with cell-specific library sizes.

Single drugs are given at doses (0.5, 1, 2) around EC50s of 0.6-1.2, so that a drug at
dose 1 gives about half its maximum effect and the combinations ("1+1", "0.5+1") ask for
shifts within the range the single drugs cover: a model can interpolate them, instead
of extrapolating from saturated single doses.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse


def simulate_screen(n_cells=6000, n_genes=200, n_drugs=10, n_cell_types=3, n_latent=8, doses=(0.5, 1.0, 2.0),
                    combinations=(("drug00", "drug01"), ("drug02", "drug03"), ("drug04", "drug05"),
                                  ("drug01", "drug06"), ("drug07", "drug08")),
                    control_fraction=0.2, dispersion=5.0, seed=0, basal_noise=0.25, effect_sd=0.7,
                    library_size=2000, type_sd=1.0, loading_sd=0.6, ec50_range=(0.6, 1.2)):
    """Return an AnnData with raw counts in X and obs columns condition, dose, cell_type,
    plus ``uns["truth"]`` (drug directions, EC50s, gene loadings)."""
    rng = np.random.default_rng(seed)
    drugs = [f"drug{i:02d}" for i in range(n_drugs)]
    directions = rng.normal(0, effect_sd, (n_drugs, n_latent))
    ec50 = rng.uniform(*ec50_range, n_drugs)
    hill = rng.uniform(1.5, 3.0, n_drugs)
    type_centres = rng.normal(0, type_sd, (n_cell_types, n_latent))
    loadings = rng.normal(0, loading_sd, (n_latent, n_genes))
    baseline = rng.normal(0, 1.0, n_genes)

    conditions = [("control", "0")]
    for drug in drugs:
        conditions += [(drug, f"{d:g}") for d in doses]
    for a, b in combinations:
        conditions += [(f"{a}+{b}", "1+1"), (f"{b}+{a}", "0.5+1")]
    n_control = int(n_cells * control_fraction)
    weights = np.r_[[n_control], np.full(len(conditions) - 1, (n_cells - n_control) / (len(conditions) - 1))]
    picks = rng.choice(len(conditions), size=n_cells, p=weights / weights.sum())
    cell_type = rng.integers(0, n_cell_types, n_cells)

    def response(drug_index, dose):
        return dose ** hill[drug_index] / (dose ** hill[drug_index] + ec50[drug_index] ** hill[drug_index])

    latent = type_centres[cell_type] + rng.normal(0, basal_noise, (n_cells, n_latent))
    for cell, pick in enumerate(picks):
        condition, dosage = conditions[pick]
        if condition == "control":
            continue
        for drug, dose in zip(condition.split("+"), dosage.split("+")):
            index = drugs.index(drug)
            latent[cell] += response(index, float(dose)) * directions[index]
    logits = latent @ loadings + baseline
    rates = np.exp(logits - logits.max(axis=1, keepdims=True))
    rates /= rates.sum(axis=1, keepdims=True)
    library = rng.lognormal(np.log(library_size), 0.3, n_cells)
    mu = rates * library[:, None]
    counts = rng.negative_binomial(dispersion, dispersion / (dispersion + mu)).astype(np.float32)

    obs = pd.DataFrame({
        "condition": pd.Categorical([conditions[p][0] for p in picks]),
        "dose": pd.Categorical([conditions[p][1] for p in picks]),
        "cell_type": pd.Categorical([f"type{t}" for t in cell_type]),
    }, index=[f"cell{i:06d}" for i in range(n_cells)])
    adata = ad.AnnData(X=sparse.csr_matrix(counts), obs=obs,
                       var=pd.DataFrame(index=[f"gene{g:04d}" for g in range(n_genes)]))
    adata.uns["truth"] = {"drugs": drugs, "directions": directions, "ec50": ec50, "hill": hill,
                          "loadings": loadings}
    return adata


def write_screen(path, n_cells, n_genes, seed=0):
    """Simulate a screen and write it as .h5ad, atomically (``uns['truth']`` dropped)."""
    from ..atomic import atomic_path

    adata = simulate_screen(n_cells=n_cells, n_genes=n_genes, seed=seed)
    del adata.uns["truth"]
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
    return adata


def simulate_lab_controls(n_cells, n_genes, seed=0, n_extra_genes=8, renamed=(("type2", "t2"),)):
    """A lab's own control cells for a model trained on ``simulate_screen(seed=seed)``:
    untreated cells of the same cell types and gene programme (the same truth), stored the
    way another lab's file would be: no perturbation or dose column, the genes in reverse
    order with ``n_extra_genes`` genes the screen does not measure, and cell types named
    differently (``renamed``: (screen name, lab name) pairs)."""
    rng = np.random.default_rng(seed + 1)
    cells = simulate_screen(n_cells=n_cells, n_genes=n_genes, seed=seed, control_fraction=1.0)
    del cells.uns["truth"]
    names = dict(renamed)
    extra = rng.poisson(3.0, (n_cells, n_extra_genes)).astype(np.float32)
    matrix = sparse.hstack([sparse.csr_matrix(extra), cells.X[:, ::-1]]).tocsr()
    genes = [f"lab_gene{i:02d}" for i in range(n_extra_genes)] + list(cells.var_names[::-1])
    obs = pd.DataFrame({"cell_type": pd.Categorical([names.get(t, t) for t in cells.obs["cell_type"].astype(str)])},
                       index=[f"lab{i:06d}" for i in range(n_cells)])
    return ad.AnnData(X=matrix, obs=obs, var=pd.DataFrame(index=genes))


def write_lab_controls(path, n_cells, n_genes, seed=0):
    """Simulate a lab's control cells (``simulate_lab_controls``) and write them, atomically."""
    from ..atomic import atomic_path

    adata = simulate_lab_controls(n_cells, n_genes, seed)
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
    return adata
