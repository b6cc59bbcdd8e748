"""The train / valid / test split of the cells, from the config (``split_key`` or
``holdout``) and a seeded random split."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .conditions import SEPARATOR, canonical_conditions, condition_class, parse_condition, parse_obs

SPLITS = ("train", "valid", "test")
# The model selection (and early stopping) scores the validation cells only when there are
# at least this many.
MIN_SELECTION_CELLS = 20
SPLIT_ALIASES = {"train": "train", "training": "train", "valid": "valid", "validation": "valid",
                 "val": "valid", "test": "test", "ood": "test"}


def assign_splits(obs, cfg):
    """train / valid / test label of every cell, or excluded (see below).

    With ``split_key``, that obs column (train, valid, test or ood). Otherwise cells of
    the ``holdout`` conditions (matched by their set of drugs, whatever the order and
    dose) are test; the rest is split 85 / 15 into train / valid with ``train.seed``.
    Cells of a covariate category that no training cell has are refused, or, with
    ``unseen_covariates: exclude``, labelled excluded: neither trained on, nor validated,
    nor evaluated (``check_every_covariate_is_trained``).
    """
    split = _split_labels(obs, cfg)
    if not (split == "train").any():
        raise InputError("no cell is in the train split; check cpa.split_key or cpa.holdout.")
    check_every_drug_is_trained(obs, cfg, split)
    split = check_every_covariate_is_trained(obs, cfg, split)
    check_validation_cells(cfg, split)
    return split


EXCLUDED = "excluded"


def split_source(cfg):
    """What made the split, for messages: the split column, or the holdout."""
    return f"obs['{cfg['split_key']}']" if cfg.get("split_key") else "cpa.holdout (and the random valid split)"


def untrained_categories(obs, cfg, split):
    """{covariate key: sorted categories that no training cell has}."""
    found = {}
    for key in cfg.get("covariate_keys") or []:
        values = obs[key].astype(str).to_numpy()
        unseen = sorted(set(values[split != "train"]) - set(values[split == "train"]))
        if unseen:
            found[key] = unseen
    return found


def check_every_covariate_is_trained(obs, cfg, split):
    """The split, with the cells of covariate categories that no training cell has labelled
    excluded when cpa.unseen_covariates is 'exclude'; otherwise such a category is an
    InputError naming it. The model would never learn its embedding, yet its cells' latents
    and the evaluation of its held-out cells would use it."""
    unseen = untrained_categories(obs, cfg, split)
    if not unseen:
        return split
    cells = np.zeros(len(obs), dtype=bool)
    for key, values in unseen.items():
        cells |= np.isin(obs[key].astype(str).to_numpy(), values)
    if cfg.get("unseen_covariates", "refuse") == "exclude":
        split = np.asarray(split, dtype=object).copy()
        split[cells] = EXCLUDED
        return split
    named = "; ".join(f"obs['{key}'] {values}" for key, values in unseen.items())
    counts = ", ".join(f"{label} {int((split[cells] == label).sum())}" for label in ("valid", "test")
                       if (split[cells] == label).any())
    how = split_source(cfg)
    raise InputError(f"{how} leaves covariate categor(ies) {named} without any training cell ({int(cells.sum())} "
                     f"cells: {counts}): the model would never learn their embedding, yet the latents and the "
                     "evaluation of those cells would use it. Hold out fewer conditions, so that every category has "
                     "training cells, or set cpa.unseen_covariates: exclude to keep those cells out of training, "
                     "validation and the evaluation (metrics.tsv lists them).")


def check_validation_cells(cfg, split):
    """InputError when cpa.train.early_stopping is on but the split leaves fewer validation
    cells than the model selection scores (it would stop in the training task, after the
    check), with the fix in the workflow's terms."""
    if not (cfg.get("train") or {}).get("early_stopping"):
        return
    n_valid = int((split == "valid").sum())
    if n_valid >= MIN_SELECTION_CELLS:
        return
    how = (f"label at least {MIN_SELECTION_CELLS} cells 'valid' in obs['{cfg['split_key']}']"
           if cfg.get("split_key") else "use a larger screen, or give cpa.split_key with 'valid' cells")
    raise InputError(f"cpa.train.early_stopping is true, but the split has {n_valid} validation cell(s) and the model "
                     f"is scored on at least {MIN_SELECTION_CELLS}; {how}, or set cpa.train.early_stopping: false.")


def check_every_drug_is_trained(obs, cfg, split):
    """InputError naming every drug without a training cell, and where it would be used:
    its embedding and dose response would never be trained, so the held-out conditions,
    the evaluated groups and the counterfactuals that contain it would be predicted from
    the initial random weights."""
    control = cfg["control_group"]
    parsed, codes = parse_obs(obs, cfg["perturbation_key"], cfg.get("dosage_key"), control)
    drugs_of = [{drug for drug, _ in pairs} for pairs in parsed]
    trained = set().union(*(drugs_of[code] for code in np.unique(codes[split == "train"])))
    untrained = sorted(set().union(*drugs_of) - trained)
    if not untrained:
        return
    uses = sorted({condition_class(parsed[code], control) for code in np.unique(codes[split != "train"])
                   if drugs_of[code] & set(untrained)})
    for number, item in enumerate(cfg.get("counterfactuals") or []):
        drugs = {drug.strip() for drug in str(item["perturbation"]).split(SEPARATOR)}
        if item["perturbation"] != control and drugs & set(untrained):
            uses.append(f"cpa.counterfactuals[{number}] ({item['perturbation']})")
    how = split_source(cfg)
    raise InputError(f"{how} leaves drug(s) {untrained} without any training cell: their embeddings would "
                     f"never be trained, yet {uses[:10]}{' ...' if len(uses) > 10 else ''} use them. Hold out "
                     "fewer conditions, so that every drug is in the train split alone or in another "
                     "combination.")


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
