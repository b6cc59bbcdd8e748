"""The baselines a perturbation model is held to (NumPy only).

The 2025 benchmarks (Ahlmann-Eltze et al., Nature Methods 2025; PerturBench;
scPerturBench; the Virtual Cell Challenge) score every model beside three predictions
that need no model, all in the same normalised expression as the observations:

* **no change**: the control cells of the group's covariates, as they are;
* **additive**: the control mean plus, for each drug of the group at its dose, the
  shift of that single drug at that dose from the control mean, measured on training
  cells of the same covariates. Undefined (NaN, with the reason) where a single drug at
  its dose has no training cell of those covariates;
* **train mean**: the mean of every perturbed training cell of the group's covariates.

For distributions (E-distance) each baseline also gives cells: the control cells
(no change), the control cells moved by the additive shift (additive), a sample of
the perturbed training cells (train mean).
"""

from __future__ import annotations

import numpy as np

BASELINES = ("no_change", "additive", "train_mean")


def single_drugs(condition, dosage):
    """The (drug, dose string) pairs of a canonical condition and dosage ("A+B", "1+0.5")."""
    return list(zip(condition.split("+"), dosage.split("+")))


def additive_shift(condition, dosage, covariates, control_mean, single_means):
    """(shift, reason): the sum over the group's drugs of (single-drug mean - control mean),
    or (None, why not) when a single drug at its dose has no training cells.

    ``single_means`` maps (drug, dose string, covariates label) to the mean expression of
    the training cells given that drug alone at that dose.
    """
    shift = np.zeros_like(control_mean)
    missing = []
    for drug, dose in single_drugs(condition, dosage):
        mean = single_means.get((drug, dose, covariates))
        if mean is None:
            missing.append(f"{drug} at {dose}")
        else:
            shift += mean - control_mean
    if missing:
        return None, (f"no training cells of {', '.join(missing)} alone with covariates {covariates}: the "
                      "additive baseline needs every single drug of the group at its dose")
    return shift, ""


def beats_additive(model_scores, additive_scores):
    """(wins, groups): the groups where the model's score is above the additive baseline's,
    among those where both are defined (finite). Scores are numbers or strings (as read
    from metrics.tsv; "NA" or "" for undefined)."""
    def number(value):
        try:
            return float(value)
        except (TypeError, ValueError):
            return float("nan")

    pairs = [(number(m), number(a)) for m, a in zip(model_scores, additive_scores)]
    pairs = [(m, a) for m, a in pairs if np.isfinite(m) and np.isfinite(a)]
    return sum(m > a for m, a in pairs), len(pairs)
