"""Task cpa_evaluate: R^2 of predicted vs observed expression of the held-out conditions."""

from __future__ import annotations

import csv
import logging

import anndata as ad
import numpy as np
import pandas as pd

from ...atomic import atomic_open
from .. import h5ad_rows
from ..conditions import canonical_conditions
from ..config_keys import obs_keys
from ..model_folder import load_model
from ..scores import r_squared
from ..splits import EXCLUDED

log = logging.getLogger(__name__)
NORMALISED_LIBRARY = 1e4


def _normalise(matrix, count_data):
    values = np.asarray(matrix.todense() if hasattr(matrix, "todense") else matrix, dtype=np.float64)
    if not count_data:
        return values
    library = values.sum(1, keepdims=True)
    return np.log1p(values / np.maximum(library, 1.0) * NORMALISED_LIBRARY)


METRIC_COLUMNS = ["condition", "dosage", "covariates", "n_cells", "n_control_cells", "r2_mean_all",
                  "r2_var_all", "r2_mean_deg20", "r2_var_deg20", "baseline_r2_mean_all",
                  "baseline_r2_mean_deg20", "deg20", "selected_epoch", "disentanglement_basal",
                  "disentanglement_chance"]


def selected_check(model_dir):
    """The model selection's kept epoch and its disentanglement scores, from history.json
    (empty values for a model trained without validation cells)."""
    import json
    from pathlib import Path

    path = Path(model_dir) / "history.json"
    history = json.loads(path.read_text()) if path.exists() else {}
    selection, epoch = history.get("selection") or {}, history.get("selected_epoch")
    if not epoch or epoch not in selection.get("epoch", []):
        return {"selected_epoch": "", "disentanglement_basal": "", "disentanglement_chance": ""}
    i = selection["epoch"].index(epoch)
    return {"selected_epoch": epoch, "disentanglement_basal": float(selection["disentanglement_basal"][i]),
            "disentanglement_chance": float(selection["disentanglement_chance"][i])}


class _GroupMoments:
    """Running sums of normalised expression of the cells of one group."""

    def __init__(self, n_genes):
        self.n = 0
        self.total = np.zeros(n_genes)
        self.squares = np.zeros(n_genes)

    def add(self, values):
        self.n += values.shape[0]
        self.total += values.sum(0)
        self.squares += (values ** 2).sum(0)

    def mean(self):
        return self.total / max(self.n, 1)

    def var(self):
        return np.maximum(self.squares / max(self.n, 1) - self.mean() ** 2, 0.0)


def evaluate(model_dir, adata_path, cfg, splits_path, out_path, max_control_cells=2000, n_degs=20,
             chunk_rows=20_000, means_path=None):
    """R^2 of predicted vs observed mean and variance for every held-out condition.

    Groups are (condition, dosage, covariate values) of the held-out ("test") cells, or
    of the validation cells when nothing is held out. Expression is log1p of counts
    normalised to 1e4 per cell (counts) or as stored (gauss). The prediction for a group
    is one draw of the likelihood for each of up to ``max_control_cells`` control cells
    of the same covariates, under the group's perturbation. DEGs: the ``n_degs`` genes
    with the largest |observed mean - control mean|, computed once per group and written
    in the table. The baseline predicts the control cells' own expression.

    The file is streamed in chunks of rows; memory holds per-group sums and the sampled
    control cells, never all held-out cells. With ``means_path``, the per-gene observed,
    predicted and control means of every group (and its DEGs) are saved there (.npz), for
    the predicted-vs-observed figure.
    """
    cfg_keys = obs_keys(cfg)
    obs = h5ad_rows.read_obs(adata_path, cfg_keys)
    splits = pd.read_csv(splits_path, sep="\t", index_col=0)["split"].to_numpy()
    control = cfg["control_group"]
    cov_keys = list(cfg.get("covariate_keys") or [])
    evaluated = "test" if (splits == "test").any() else "valid"
    cov_label = (obs[cov_keys].astype(str).agg("/".join, axis=1) if cov_keys
                 else pd.Series("all", index=obs.index)).to_numpy()
    conditions, dosages = canonical_conditions(obs, cfg)
    targets = (splits == evaluated) & (conditions != control)
    groups = sorted({(conditions[i], dosages[i], cov_label[i]) for i in np.flatnonzero(targets)})
    group_index = {g: k for k, g in enumerate(groups)}
    cell_group = np.full(len(obs), -1)
    for i in np.flatnonzero(targets):
        cell_group[i] = group_index[(conditions[i], dosages[i], cov_label[i])]
    rng = np.random.default_rng(0)
    sampled = np.zeros(len(obs), dtype=bool)
    for label in sorted({g[2] for g in groups}):
        rows = np.flatnonzero((conditions == control) & (cov_label == label))
        sampled[rng.permutation(rows)[:max_control_cells]] = True
    count_data = (cfg.get("model") or {}).get("recon_loss", "nb") in ("nb", "zinb")
    genes = h5ad_rows.var_names(adata_path)
    observed = [_GroupMoments(len(genes)) for _ in groups]
    control_moments = {label: _GroupMoments(len(genes)) for label in {g[2] for g in groups}}
    control_parts = {label: [] for label in control_moments}
    for start in range(0, len(obs), chunk_rows):
        stop = min(start + chunk_rows, len(obs))
        wanted = (cell_group[start:stop] >= 0) | sampled[start:stop]
        if not wanted.any():
            continue
        chunk = h5ad_rows.read_rows(adata_path, start, stop, cfg_keys, cfg.get("layer"))
        matrix = chunk.layers[cfg["layer"]] if cfg.get("layer") else chunk.X
        for k in np.unique(cell_group[start:stop][cell_group[start:stop] >= 0]):
            rows = np.flatnonzero(cell_group[start:stop] == k)
            observed[k].add(_normalise(matrix[rows], count_data))
        for label in control_moments:
            rows = np.flatnonzero(sampled[start:stop] & (cov_label[start:stop] == label))
            if rows.size:
                control_moments[label].add(_normalise(matrix[rows], count_data))
                control_parts[label].append(chunk[rows].copy())
    model = None
    rows_out = []
    selection = selected_check(model_dir)  # the same for every group: read history.json once
    means = {}
    for label, parts in control_parts.items():
        if not parts:
            continue
        controls = ad.concat(parts, merge="same") if len(parts) > 1 else parts[0]
        if model is None:
            model = load_model(model_dir, controls)
        for k, (condition, dosage, group_label) in enumerate(groups):
            if group_label != label:
                continue
            # One draw of the likelihood per control cell, normalised like the observations,
            # so that the predicted variance includes the noise model as the observed one does.
            predicted = _normalise(model.predict(controls, perturbation=condition, dosage=dosage, sample=True),
                                   count_data)
            obs_mean, obs_var = observed[k].mean(), observed[k].var()
            base_mean = control_moments[label].mean()
            degs = np.argsort(-np.abs(obs_mean - base_mean))[:n_degs]
            means[(condition, dosage, group_label)] = (obs_mean, predicted.mean(0), base_mean, degs)
            rows_out.append({
                "condition": condition, "dosage": dosage, "covariates": label, "n_cells": observed[k].n,
                "n_control_cells": controls.n_obs,
                "r2_mean_all": r_squared(predicted.mean(0), obs_mean),
                "r2_var_all": r_squared(predicted.var(0), obs_var),
                "r2_mean_deg20": r_squared(predicted.mean(0)[degs], obs_mean[degs]),
                "r2_var_deg20": r_squared(predicted.var(0)[degs], obs_var[degs]),
                "baseline_r2_mean_all": r_squared(base_mean, obs_mean),
                "baseline_r2_mean_deg20": r_squared(base_mean[degs], obs_mean[degs]),
                "deg20": ",".join(genes[degs]),
                **selection,
            })
        model.release(controls)
    rows_out.sort(key=lambda row: (row["condition"], row["dosage"], row["covariates"]))
    excluded = excluded_rows(splits, conditions, dosages, cov_label, control, cov_keys)
    columns = METRIC_COLUMNS + (["note"] if excluded else [])
    with atomic_open(out_path, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, delimiter="\t", lineterminator="\n", restval="")
        writer.writeheader()
        for row in rows_out + excluded:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    if excluded:
        log.warning("%d (condition, dosage, covariate) group(s) of cells whose covariate category has no training "
                    "cell were left out of the evaluation (cpa.unseen_covariates: exclude); metrics.tsv lists them",
                    len(excluded))
    if means_path is not None:
        write_group_means(means_path, means, genes, n_degs,
                          "log1p(CP10k)" if count_data else "expression as stored")
    log.info("evaluated %d (condition, dosage, covariate) groups of the %s split", len(rows_out), evaluated)
    return rows_out


def excluded_rows(splits, conditions, dosages, cov_label, control, cov_keys):
    """A metrics row (no metrics, a note) per (condition, dosage, covariates) group of the
    perturbed cells that the split excluded (cpa.unseen_covariates: exclude)."""
    cells = np.flatnonzero((splits == EXCLUDED) & (conditions != control))
    counts = {}
    for i in cells:
        key = (conditions[i], dosages[i], cov_label[i])
        counts[key] = counts.get(key, 0) + 1
    keys = "/".join(cov_keys)
    return [{"condition": condition, "dosage": dosage, "covariates": label, "n_cells": n,
             "note": f"not evaluated: its {keys} category has no training cell (cpa.unseen_covariates: exclude)"}
            for (condition, dosage, label), n in sorted(counts.items())]


def write_group_means(path, means, genes, n_degs, unit):
    """Per evaluated group (sorted like metrics.tsv): observed, predicted and control mean
    of every gene (float32) and the indices of its DEGs (-1 pads groups with fewer genes)."""
    keys = sorted(means)
    stack = lambda i: np.array([means[k][i] for k in keys], dtype=np.float32).reshape(len(keys), len(genes))  # noqa: E731
    degs = np.full((len(keys), n_degs), -1, dtype=np.int64)
    for row, key in enumerate(keys):
        degs[row, :len(means[key][3])] = means[key][3]
    with atomic_open(path) as handle:
        np.savez(handle, condition=np.array([k[0] for k in keys], dtype=str),
                 dosage=np.array([k[1] for k in keys], dtype=str), covariates=np.array([k[2] for k in keys], dtype=str),
                 genes=np.asarray(genes, dtype=str), observed=stack(0), predicted=stack(1), control=stack(2),
                 degs=degs, unit=np.array(unit))
