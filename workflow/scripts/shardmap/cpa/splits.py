"""The train / valid / test split of the cells, from the config (``split_key`` or
``holdout``) and a seeded random split."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .conditions import canonical_conditions, condition_class, parse_condition

SPLITS = ("train", "valid", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "valid": "valid", "validation": "valid",
                 "val": "valid", "test": "test", "ood": "test"}


def assign_splits(obs, cfg):
    """train / valid / test label of every cell.

    With ``split_key``, that obs column (train, valid, test or ood). Otherwise cells of
    the ``holdout`` conditions (matched by their set of drugs, whatever the order and
    dose) are test; the rest is split 85 / 15 into train / valid with ``train.seed``.
    """
    split = _split_labels(obs, cfg)
    if not (split == "train").any():
        raise InputError("no cell is in the train split; check cpa.split_key or cpa.holdout.")
    return split


def _split_labels(obs, cfg):
    control = cfg["control_group"]
    if cfg.get("split_key"):
        raw = obs[cfg["split_key"]].astype(str).str.lower()
        unknown = sorted(set(raw) - set(SPLIT_ALIASES))
        if unknown:
            raise InputError(f"obs['{cfg['split_key']}'] holds {unknown[:5]}; split labels must be one of "
                             f"{sorted(SPLIT_ALIASES)}.")
        return raw.map(SPLIT_ALIASES).to_numpy()
    classes = canonical_conditions(obs, cfg)[0]
    held = set()
    for condition in cfg.get("holdout") or []:
        pairs = parse_condition(condition, "+".join(["1"] * len(str(condition).split("+"))), control,
                                where="cpa.holdout: ")
        held.add(condition_class(pairs, control))
    missing = sorted(held - set(classes))
    if missing:
        raise InputError(f"cpa.holdout names {missing}, which no cell has; holdout entries are "
                         f"conditions of obs['{cfg['perturbation_key']}'].")
    rng = np.random.default_rng(int(cfg.get("train", {}).get("seed", 0)))
    split = np.where(rng.random(len(obs)) < 0.85, "train", "valid").astype(object)
    split[np.isin(classes, list(held))] = "test"
    return split
