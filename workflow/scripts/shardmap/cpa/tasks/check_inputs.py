"""Task cpa_check_inputs: cpa.adata checked against the config before anything is trained."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad

from ...atomic import atomic_open
from ...errors import InputError
from .. import h5ad_rows
from ..conditions import parse_obs
from ..config_keys import obs_keys
from ..named_drugs import check_named_drugs
from ..splits import EXCLUDED, assign_splits
from ..values import (check_values, duplicate_entry_message, empty_cells, empty_cells_message,
                      first_duplicate_entry)

log = logging.getLogger(__name__)


def load_and_validate(adata_path, cfg):
    """Read the training AnnData and check it against the config (clear errors)."""
    if not Path(adata_path).exists():
        raise InputError(f"cpa.adata '{adata_path}' does not exist; fix the path in the config.")
    try:
        adata = ad.read_h5ad(adata_path)
    except Exception as err:
        raise InputError(f"cpa.adata '{adata_path}' cannot be read as .h5ad ({err}).") from err
    if adata.n_obs == 0:
        raise InputError(f"cpa.adata '{adata_path}' has no cells.")
    missing = [k for k in obs_keys(cfg) if k not in adata.obs]
    if missing:
        raise InputError(f"cpa.adata '{adata_path}': obs lacks {missing} (configured as keys); "
                         f"obs columns are {list(adata.obs.columns)}.")
    check_no_missing_values(adata.obs, cfg, adata_path)
    return adata


def check_no_missing_values(obs, cfg, adata_path):
    """InputError naming the first configured obs column with missing values. A control
    cell's dose is never used, so it may be missing (screens often leave it empty)."""
    control = obs[cfg["perturbation_key"]].astype(str).str.strip() == cfg["control_group"]
    for key in obs_keys(cfg):
        missing = obs[key].isna()
        if key == cfg.get("dosage_key"):
            missing &= ~control
        n_missing = int(missing.sum())
        if n_missing:
            raise InputError(f"cpa.adata '{adata_path}': obs['{key}'] has missing values in {n_missing} "
                             "cells; fill or drop them.")


def check_inputs(adata_path, cfg, out_path, rows_per_chunk=20_000):
    """Check cpa.adata against the config before anything is trained; write a summary TSV.

    Reads the configured obs columns whole and the matrix in chunks of rows, so memory is
    bounded by a chunk whatever the file's size. Checks, each with an error naming the
    key or value: the obs keys exist and have no missing values; every condition and
    dosage parses (one dose per drug, numbers >= 0); the control group is present and is
    not every cell; the holdout conditions and split labels exist; every counterfactual
    names known drugs with one dose each, and cpa.dose_response.drugs known single drugs
    (``named_drugs``); every drug has training cells; the matrix is
    finite and, for a count likelihood (nb, zinb), holds non-negative integers and no cell
    whose counts are all 0.
    """
    control = cfg["control_group"]
    if not Path(adata_path).exists():
        raise InputError(f"cpa.adata '{adata_path}' does not exist; fix the path in the config.")
    total = h5ad_rows.n_obs(adata_path)
    if total == 0:
        raise InputError(f"cpa.adata '{adata_path}' has no cells.")
    obs = h5ad_rows.read_obs(adata_path, obs_keys(cfg))
    check_no_missing_values(obs, cfg, adata_path)
    parsed, _ = parse_obs(obs, cfg["perturbation_key"], cfg.get("dosage_key"), control)
    if not any(len(p) == 0 for p in parsed):
        raise InputError(f"cpa.adata '{adata_path}': no cell of obs['{cfg['perturbation_key']}'] is the "
                         f"control group '{control}'; set cpa.control_group to the label of unperturbed "
                         f"cells (labels: {sorted(obs[cfg['perturbation_key']].astype(str).unique())[:10]}).")
    drugs = {drug for pairs in parsed for drug, _ in pairs}
    if not drugs:
        raise InputError(f"cpa.adata '{adata_path}': every cell is in the control group '{control}'; "
                         "there is no perturbation to model.")
    splits = assign_splits(obs, cfg)
    check_named_drugs(drugs, cfg.get("counterfactuals"), (cfg.get("dose_response") or {}).get("drugs"), control,
                      adata_path)
    count_data = (cfg.get("model") or {}).get("recon_loss", "nb") in ("nb", "zinb")
    where = f"cpa.adata '{adata_path}' " + (f"layers['{cfg['layer']}']" if cfg.get("layer") else "X")
    n_genes, n_empty, first_empty = 0, 0, None
    for start in range(0, total, rows_per_chunk):
        stop = min(start + rows_per_chunk, total)
        block = h5ad_rows.read_matrix(adata_path, start, stop, cfg.get("layer"))
        n_genes = block.shape[1]
        check_values(block, count_data, where=where, obs_names=obs.index[start:stop], empty_cells_allowed=True)
        duplicate = first_duplicate_entry(block)
        if duplicate is not None:
            raise InputError(duplicate_entry_message(where, obs.index[start + duplicate[0]], duplicate[1]))
        n, first = empty_cells(block, obs.index, start)
        n_empty, first_empty = n_empty + n, first_empty if first_empty is not None else first
    if n_genes == 0:
        raise InputError(f"{where} has no genes.")
    if count_data and n_empty:
        raise InputError(empty_cells_message(where, n_empty, first_empty))
    summary = {"cells": total, "genes": n_genes, "drugs": len(drugs),
               "conditions": len(parsed), "train_cells": int((splits == "train").sum()),
               "valid_cells": int((splits == "valid").sum()), "test_cells": int((splits == "test").sum())}
    if (splits == EXCLUDED).any():  # cpa.unseen_covariates: exclude
        summary["excluded_cells"] = int((splits == EXCLUDED).sum())
    with atomic_open(out_path, "w") as handle:
        handle.write("".join(f"{key}\t{value}\n" for key, value in summary.items()))
    log.info("cpa.adata '%s' checked: %s", adata_path, summary)
    return summary
