"""The condition and dosage strings of a perturbation screen, parsed.

A cell's condition is a string of drugs joined by ``+`` ("drugA+drugB"), its dosage a
string of as many numbers ("0.1+1.0"); the i-th dose belongs to the i-th drug; the
control group has no drug. Without a dosage (no dose column: ``dosage_key=None``, as
cpa-tools allows) every drug is at dose 1. Only NumPy and pandas are needed, so the workflow's input
check and merge tasks parse conditions without loading torch.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..errors import InputError

SEPARATOR = "+"


def parse_condition(condition, dosage, control_group, where="", dose_where=None):
    """Parse one condition and dosage string into a sorted tuple of (drug, dose) pairs.

    The control group gives (). Doses must be finite and >= 0, there must be as many
    doses as drugs, and a drug may appear once per cell. ``where`` prefixes messages about
    the condition, ``dose_where`` (default ``where``) those about a dose's value.
    """
    dose_where = where if dose_where is None else dose_where
    condition = str(condition).strip()
    if condition == control_group:
        return ()
    drugs = [d.strip() for d in condition.split(SEPARATOR)]
    doses = ["1"] * len(drugs) if dosage is None else [d.strip() for d in str(dosage).split(SEPARATOR)]
    if any(not d for d in drugs):
        raise InputError(f"{where}condition '{condition}' has an empty drug name; join drugs with a "
                         f"single '{SEPARATOR}'.")
    if len(doses) != len(drugs):
        raise InputError(f"{where}condition '{condition}' has {len(drugs)} drug(s) but dosage "
                         f"'{dosage}' has {len(doses)} part(s); give one dose per drug, joined by "
                         f"'{SEPARATOR}' in the same order.")
    values = []
    for drug, dose in zip(drugs, doses):
        try:
            value = float(dose)
        except ValueError:
            raise InputError(f"{dose_where}dosage '{dosage}' of condition '{condition}': '{dose}' is not "
                             "a number.") from None
        if not math.isfinite(value) or value < 0:
            raise InputError(f"{dose_where}dosage '{dosage}' of condition '{condition}': dose {value} "
                             "must be finite and >= 0.")
        values.append(value)
    if len(set(drugs)) != len(drugs):
        raise InputError(f"{where}condition '{condition}' names a drug twice.")
    return tuple(sorted(zip(drugs, values)))


def condition_class(pairs, control_group):
    """The adversary's class of a cell: its set of drugs, whatever the doses."""
    return SEPARATOR.join(drug for drug, _ in pairs) if pairs else control_group


def parse_obs(obs, perturbation_key, dosage_key, control_group):
    """Parse every distinct (condition, dosage) of ``obs`` once; returns
    (unique pairs list, per-cell index into it). With ``dosage_key`` None every drug is
    at dose 1."""
    for key in (perturbation_key, dosage_key):
        if key is not None and key not in obs:
            raise InputError(f"obs has no column '{key}'; available columns: {list(obs.columns)}. "
                             "Set perturbation_key / dosage_key to existing columns (dosage_key: null "
                             "puts every drug at dose 1).")
    conditions = obs[perturbation_key].astype(str).to_numpy()
    dosages = obs[dosage_key].astype(str).to_numpy() if dosage_key is not None else np.full(len(obs), "1")
    keys = pd.MultiIndex.from_arrays([conditions, dosages])
    codes, uniques = pd.factorize(keys)
    parsed = [parse_condition(c, d if dosage_key is not None else None, control_group,
                              where=f"obs['{perturbation_key}']: ", dose_where=f"obs['{dosage_key}']: ")
              for c, d in uniques]
    return parsed, codes


def canonical_conditions(obs, cfg):
    """Per cell: its drugs joined by '+' in sorted order and their doses in the same order,
    so that "B+A" at "0.5+1" and "A+B" at "1+0.5" are one condition."""
    control = cfg["control_group"]
    dosage_key = cfg.get("dosage_key")
    conditions = obs[cfg["perturbation_key"]].astype(str)
    dosages = obs[dosage_key].astype(str) if dosage_key is not None else pd.Series(None, index=obs.index)
    cache = {}
    labels = np.empty((len(obs), 2), dtype=object)
    for i, key in enumerate(zip(conditions, dosages)):
        if key not in cache:
            pairs = parse_condition(key[0], key[1], control)
            cache[key] = ((condition_class(pairs, control), "+".join(f"{dose:g}" for _, dose in pairs))
                          if pairs else (control, ""))
        labels[i] = cache[key]
    return labels[:, 0], labels[:, 1]
