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
    # Each column factorised alone, then the pairs of codes: millions of cells have a
    # handful of distinct conditions, and hashing strings once per column is the cost.
    condition_codes, conditions = _factorize_strings(obs[perturbation_key])
    if dosage_key is None:
        dosage_codes, dosages = np.zeros(len(obs), dtype=np.int64), np.array([None], dtype=object)
    else:
        dosage_codes, dosages = _factorize_strings(obs[dosage_key])
    codes, pairs = pd.factorize(condition_codes * len(dosages) + dosage_codes)
    parsed = [parse_condition(conditions[pair // len(dosages)], dosages[pair % len(dosages)], control_group,
                              where=f"obs['{perturbation_key}']: ", dose_where=f"obs['{dosage_key}']: ")
              for pair in pairs]
    return parsed, codes


def _factorize_strings(column):
    """(per-cell codes, distinct values as strings) of an obs column; categorical columns
    by their codes, without building a string per cell."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        categories = column.cat.categories.astype(str).to_numpy(dtype=object)
        cell_codes = column.cat.codes.to_numpy().astype(np.int64)
        if (cell_codes < 0).any():  # a missing value reads as 'nan', as astype(str) gives
            categories = np.append(categories, "nan")
            cell_codes = np.where(cell_codes < 0, categories.size - 1, cell_codes)
        # Categories that are distinct objects but equal strings (1 and '1') become one value.
        unique_codes, values = pd.factorize(categories)
        return unique_codes[cell_codes], values.astype(object)
    cell_codes, values = pd.factorize(column.astype(str).to_numpy())
    return cell_codes.astype(np.int64), np.asarray(values, dtype=object)


def canonical_conditions(obs, cfg):
    """Per cell: its drugs joined by '+' in sorted order and their doses in the same order,
    so that "B+A" at "0.5+1" and "A+B" at "1+0.5" are one condition."""
    control = cfg["control_group"]
    dosage_key = cfg.get("dosage_key")
    conditions = obs[cfg["perturbation_key"]].astype(str)
    # Without a dose column every drug is at dose 1: a dosage of None, never a float NaN (what
    # pd.Series(None) holds), which would read as the dose 'nan'.
    dosages = obs[dosage_key].astype(str) if dosage_key is not None else [None] * len(obs)
    cache = {}
    labels = np.empty((len(obs), 2), dtype=object)
    for i, key in enumerate(zip(conditions, dosages)):
        if key not in cache:
            pairs = parse_condition(key[0], key[1], control)
            cache[key] = ((condition_class(pairs, control), "+".join(f"{dose:g}" for _, dose in pairs))
                          if pairs else (control, ""))
        labels[i] = cache[key]
    return labels[:, 0], labels[:, 1]
