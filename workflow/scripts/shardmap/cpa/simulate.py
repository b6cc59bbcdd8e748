"""A perturbation screen with known truth, for the demo and the tests.

Cells of a few cell types have a basal latent state (type centre plus noise). Each drug
moves the latent state along its own direction by a sigmoid of log-dose (a Hill curve);
a combination adds the effects of its drugs. Counts are negative binomial with
cell-specific library sizes, around rates read out of the latent state in one of two ways:

* ``readout="log_linear"`` (the additive screen): a gene's log rate is linear in the
  latent state, so drug effects add in log expression and the additive baseline (control
  plus the single drugs' shifts) is nearly the truth;
* ``readout="saturating"`` (the demo's screen): a gene's log rate is
  ``ceiling * tanh(activation / ceiling)`` of its linear activation, with a ceiling
  drawn per gene from ``ceiling_range``, so strong effects saturate and two drugs that each move a gene by
  1 move it by less than 2 together. Effects still add in the latent state, so a model
  that learns the read-out from single drugs can predict combinations, where adding the
  single drugs' shifts in gene space overshoots.

``synergy`` names combinations whose drugs interact: when both are given, the latent
state moves by an extra random direction (``synergy_sd`` times as large as a drug's
direction, on average), scaled by the product of the two drugs' responses (0-1 each).
Nothing in the single drugs tells of it, so no model trained without the combination
can predict it.

Measured on 60k cells of the demo's screen (``DEMO_SCREEN``, noise-free means up to
sampling), the additive baseline's top-20-DEG R^2 for the combinations at "1+1" is
0.97-0.99 without synergy and 0.53-0.78 for the synergistic drug04+drug05.

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

READOUTS = ("log_linear", "saturating")
#: The demo's screen: a saturating read-out, and one combination with a true interaction.
DEMO_SCREEN = {"readout": "saturating", "ceiling_range": (0.3, 0.8), "synergy": (("drug04", "drug05"),),
               "synergy_sd": 4.0}


def simulate_screen(n_cells=6000, n_genes=200, n_drugs=10, n_cell_types=3, n_latent=8, doses=(0.5, 1.0, 2.0),
                    combinations=(("drug00", "drug01"), ("drug02", "drug03"), ("drug04", "drug05"),
                                  ("drug01", "drug06"), ("drug07", "drug08")),
                    control_fraction=0.2, dispersion=5.0, seed=0, basal_noise=0.25, effect_sd=0.7,
                    library_size=2000, type_sd=1.0, loading_sd=0.6, ec50_range=(0.6, 1.2),
                    readout="log_linear", ceiling_range=(0.6, 1.5), synergy=(), synergy_sd=1.5):
    """Return an AnnData with raw counts in X and obs columns condition, dose, cell_type,
    plus ``uns["truth"]`` (drug directions, EC50s, Hill slopes, gene loadings, baseline,
    the read-out with its per-gene ceilings, the synergy directions)."""
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    unknown = [pair for pair in synergy if tuple(pair) not in {tuple(c) for c in combinations}]
    if unknown:
        raise ValueError(f"synergy names combinations that are not simulated: {unknown}")
    rng = np.random.default_rng(seed)
    drugs = [f"drug{i:02d}" for i in range(n_drugs)]
    directions = rng.normal(0, effect_sd, (n_drugs, n_latent))
    ec50 = rng.uniform(*ec50_range, n_drugs)
    hill = rng.uniform(1.5, 3.0, n_drugs)
    type_centres = rng.normal(0, type_sd, (n_cell_types, n_latent))
    loadings = rng.normal(0, loading_sd, (n_latent, n_genes))
    baseline = rng.normal(0, 1.0, n_genes)
    # Drawn after everything the log-linear screen draws, so that its cells are unchanged.
    ceiling = rng.uniform(*ceiling_range, n_genes) if readout == "saturating" else None
    synergy_directions = {f"{a}+{b}": rng.normal(0, effect_sd * synergy_sd, n_latent) for a, b in synergy}

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
        responses = []
        for drug, dose in zip(condition.split("+"), dosage.split("+")):
            index = drugs.index(drug)
            responses.append(response(index, float(dose)))
            latent[cell] += responses[-1] * directions[index]
        pair = "+".join(sorted(condition.split("+")))
        if pair in synergy_directions:
            latent[cell] += np.prod(responses) * synergy_directions[pair]
    activation = latent @ loadings
    if ceiling is not None:
        activation = ceiling * np.tanh(activation / ceiling)
    logits = activation + baseline
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
                          "loadings": loadings, "baseline": baseline, "readout": readout,
                          "ceiling": ceiling if ceiling is not None else np.full(n_genes, np.inf),
                          "synergy": synergy_directions}
    return adata


def write_screen(path, n_cells, n_genes, seed=0, **screen):
    """Simulate a screen and write it as .h5ad, atomically (``uns['truth']`` dropped).
    ``screen``: keyword arguments of ``simulate_screen`` (the demo passes DEMO_SCREEN)."""
    from ..atomic import atomic_path

    adata = simulate_screen(n_cells=n_cells, n_genes=n_genes, seed=seed, **screen)
    del adata.uns["truth"]
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
    return adata


def simulate_lab_controls(n_cells, n_genes, seed=0, n_extra_genes=8, renamed=(("type2", "t2"),), **screen):
    """A lab's own control cells for a model trained on ``simulate_screen(seed=seed)``:
    untreated cells of the same cell types and gene programme (the same truth), stored the
    way another lab's file would be: no perturbation or dose column, the genes in reverse
    order with ``n_extra_genes`` genes the screen does not measure, and cell types named
    differently (``renamed``: (screen name, lab name) pairs). ``screen``: the keyword
    arguments the screen was simulated with (its read-out)."""
    rng = np.random.default_rng(seed + 1)
    cells = simulate_screen(n_cells=n_cells, n_genes=n_genes, seed=seed, control_fraction=1.0, **screen)
    del cells.uns["truth"]
    names = dict(renamed)
    extra = rng.poisson(3.0, (n_cells, n_extra_genes)).astype(np.float32)
    matrix = sparse.hstack([sparse.csr_matrix(extra), cells.X[:, ::-1]]).tocsr()
    genes = [f"lab_gene{i:02d}" for i in range(n_extra_genes)] + list(cells.var_names[::-1])
    obs = pd.DataFrame({"cell_type": pd.Categorical([names.get(t, t) for t in cells.obs["cell_type"].astype(str)])},
                       index=[f"lab{i:06d}" for i in range(n_cells)])
    return ad.AnnData(X=matrix, obs=obs, var=pd.DataFrame(index=genes))


def write_lab_controls(path, n_cells, n_genes, seed=0, **screen):
    """Simulate a lab's control cells (``simulate_lab_controls``) and write them, atomically."""
    from ..atomic import atomic_path

    adata = simulate_lab_controls(n_cells, n_genes, seed, **screen)
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
    return adata
