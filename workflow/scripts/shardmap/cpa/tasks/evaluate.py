"""Task cpa_evaluate: the model and the field's baselines scored on the held-out conditions."""

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
from ..baselines import BASELINES, additive_shift, beats_additive, single_drugs
from ..scores import (de_overlap, direction_agreement, discrimination_scores, e_distance, mean_absolute_error,
                      pearson_delta, r_squared, top_changed_genes)
from ..selection import disentanglement_keys
from ..splits import EXCLUDED

log = logging.getLogger(__name__)
NORMALISED_LIBRARY = 1e4


def _normalise(matrix, count_data):
    values = np.asarray(matrix.todense() if hasattr(matrix, "todense") else matrix, dtype=np.float64)
    if not count_data:
        return values
    library = values.sum(1, keepdims=True)
    return np.log1p(values / np.maximum(library, 1.0) * NORMALISED_LIBRARY)


PREDICTORS = ("model",) + BASELINES
#: Per predictor, on every evaluated group (config/README.md, "cpa/metrics.tsv", has the formulas).
SCORES = ("r2_mean_all", "r2_mean_deg20", "pearson_delta_all", "pearson_delta_deg20", "mae_all",
          "e_distance", "deg_overlap20", "deg_direction20", "discrimination")
GROUP_COLUMNS = ["condition", "dosage", "covariates", "n_cells", "n_control_cells"]


def metric_columns(covariate_keys=()):
    """The columns of metrics.tsv: the group, the model's scores (unprefixed, as before the
    baselines came), each baseline's scores prefixed by its name, the DEGs and the model
    selection's disentanglement of the perturbation and of every covariate."""
    model = ["r2_mean_all", "r2_var_all", "r2_mean_deg20", "r2_var_deg20"] + [
        s for s in SCORES if s not in ("r2_mean_all", "r2_mean_deg20")]
    baselines = [f"{b}_{s}" for b in BASELINES for s in SCORES]
    selection = ["selected_epoch"] + disentanglement_keys(covariate_keys)
    return GROUP_COLUMNS + model + baselines + ["additive_note", "deg20"] + selection


def selected_check(model_dir, covariate_keys=()):
    """The model selection's kept epoch and its disentanglement scores (kNN accuracy of the
    perturbation and of each covariate from z_basal, with chance levels), from
    history.json; empty values for a model trained without validation cells."""
    import json
    from pathlib import Path

    path = Path(model_dir) / "history.json"
    history = json.loads(path.read_text()) if path.exists() else {}
    selection, epoch = history.get("selection") or {}, history.get("selected_epoch")
    keys = disentanglement_keys(covariate_keys)
    if not epoch or epoch not in selection.get("epoch", []):
        return {"selected_epoch": "", **{key: "" for key in keys}}
    i = selection["epoch"].index(epoch)
    return {"selected_epoch": epoch, **{key: float(selection[key][i]) if key in selection else "" for key in keys}}


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


def _sample(mask, labels, max_cells, rng):
    """A random subset of at most ``max_cells`` of the cells in ``mask`` for every label."""
    chosen = np.zeros(mask.size, dtype=bool)
    for label in np.unique(labels[mask]):
        rows = np.flatnonzero(mask & (labels == label))
        chosen[rng.permutation(rows)[:max_cells]] = True
    return chosen


def evaluate(model_dir, adata_path, cfg, splits_path, out_path, max_control_cells=2000, n_degs=20,
             chunk_rows=20_000, means_path=None, max_distance_cells=500, block_rows=2048):
    """Scores of the model and of three baselines on every held-out group.

    Groups are (condition, dosage, covariate values) of the held-out ("test") cells, or
    of the validation cells when nothing is held out. Expression is log1p of counts
    normalised to 1e4 per cell (counts) or as stored (gauss). Predictors:

    * the model: one draw of the likelihood for each of up to ``max_control_cells``
      control cells of the same covariates, under the group's perturbation (normalised
      like the observations, so that its variance includes the noise model);
    * the baselines of :mod:`shardmap.cpa.baselines` (no change, additive, train mean),
      from the same control cells and from the training split's cells.

    Scores (``SCORES``, from :mod:`shardmap.cpa.scores`): R^2 of the mean on all genes
    and on the group's top-20 DEGs (largest |observed mean - control mean|, written in
    the table), Pearson-delta on both, MAE, E-distance between predicted and observed
    cells (at most ``max_distance_cells`` of each), DEG overlap and direction agreement
    at 20, and the discrimination score across the evaluated groups. The file is
    streamed in chunks of rows, normalised ``block_rows`` at a time; memory holds
    per-group sums and the sampled cells, never all cells. With ``means_path``, the
    per-gene means of every group (observed, model, control, additive, train mean) and
    its DEGs are saved there (.npz), for the figures.
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
    groups = sorted(set(_keys(conditions, dosages, cov_label, np.flatnonzero(targets))))
    labels = sorted({g[2] for g in groups})
    cell_group = _index_of(groups, conditions, dosages, cov_label, np.flatnonzero(targets))
    # The single drugs the additive baseline needs, each at its dose and covariates.
    singles = sorted({(drug, dose, label) for condition, dosage, label in groups
                      for drug, dose in single_drugs(condition, dosage)})
    single_index = {key: k for k, key in enumerate(singles)}
    training = splits == "train"
    trained_perturbed = training & (conditions != control) & np.isin(cov_label, labels)
    cell_single = _index_of(singles, conditions, dosages, cov_label, np.flatnonzero(trained_perturbed))
    # Integer codes of the covariate labels: the streamed blocks compare these per label.
    label_codes = np.full(len(obs), -1)
    label_codes[np.isin(cov_label, labels)] = np.searchsorted(labels, cov_label[np.isin(cov_label, labels)])
    rng = np.random.default_rng(0)
    sampled = _sample((conditions == control) & np.isin(cov_label, labels), cov_label, max_control_cells, rng)
    trained_sample = _sample(trained_perturbed, cov_label, max_distance_cells, rng)
    observed_sample = _sample(targets, cell_group, max_distance_cells, rng)
    count_data = (cfg.get("model") or {}).get("recon_loss", "nb") in ("nb", "zinb")
    genes = h5ad_rows.var_names(adata_path)
    n_genes = len(genes)
    observed = [_GroupMoments(n_genes) for _ in groups]
    observed_cells = [[] for _ in groups]
    single_moments = [_GroupMoments(n_genes) for _ in singles]
    control_moments = {label: _GroupMoments(n_genes) for label in labels}
    trained_moments = {label: _GroupMoments(n_genes) for label in labels}
    trained_cells = {label: [] for label in labels}
    control_parts = {label: [] for label in labels}
    wanted_rows = (cell_group >= 0) | sampled | trained_perturbed
    for start in range(0, len(obs), chunk_rows):
        stop = min(start + chunk_rows, len(obs))
        if not wanted_rows[start:stop].any():
            continue
        chunk = h5ad_rows.read_rows(adata_path, start, stop, cfg_keys, cfg.get("layer"))
        matrix = chunk.layers[cfg["layer"]] if cfg.get("layer") else chunk.X
        for block in range(start, stop, block_rows):
            rows = np.flatnonzero(wanted_rows[block:min(block + block_rows, stop)]) + block
            if rows.size == 0:
                continue
            values = _normalise(matrix[rows - start], count_data)
            for k in np.unique(cell_group[rows][cell_group[rows] >= 0]):
                mine = cell_group[rows] == k
                observed[k].add(values[mine])
                observed_cells[k].append(values[mine & observed_sample[rows]].astype(np.float32))
            for k in np.unique(cell_single[rows][cell_single[rows] >= 0]):
                single_moments[k].add(values[cell_single[rows] == k])
            for code, label in enumerate(labels):
                here = label_codes[rows] == code
                if (here & sampled[rows]).any():
                    control_moments[label].add(values[here & sampled[rows]])
                    control_parts[label].append(chunk[rows[here & sampled[rows]] - start].copy())
                if (here & trained_perturbed[rows]).any():
                    trained_moments[label].add(values[here & trained_perturbed[rows]])
                    trained_cells[label].append(
                        values[here & trained_perturbed[rows] & trained_sample[rows]].astype(np.float32))
    single_means = {key: single_moments[k].mean() for key, k in single_index.items() if single_moments[k].n}
    model = None
    rows_out = []
    selection = selected_check(model_dir, cov_keys)  # the same for every group: read history.json once
    means, effects = {}, {p: [None] * len(groups) for p in PREDICTORS}
    observed_effects = [None] * len(groups)
    distance_rng = np.random.default_rng(1)
    for label in labels:
        parts = control_parts[label]
        if not parts:
            continue
        controls = ad.concat(parts, merge="same") if len(parts) > 1 else parts[0]
        if model is None:
            model = load_model(model_dir, controls)
        control_mean = control_moments[label].mean()
        # The same random subset of the control cells for the E-distance of the model (their
        # counterfactuals) and of the baselines built on them.
        distance_rows = np.sort(distance_rng.choice(controls.n_obs, min(controls.n_obs, max_distance_cells),
                                                    replace=False))
        control_cells = _normalise((controls.layers[cfg["layer"]] if cfg.get("layer") else controls.X)[distance_rows],
                                   count_data)
        trained = np.concatenate(trained_cells[label]) if trained_cells[label] else np.zeros((0, n_genes))
        for k, (condition, dosage, group_label) in enumerate(groups):
            if group_label != label:
                continue
            # One draw of the likelihood per control cell, normalised like the observations,
            # so that the predicted variance includes the noise model as the observed one does.
            predicted = _normalise(model.predict(controls, perturbation=condition, dosage=dosage, sample=True),
                                   count_data)
            obs_mean, obs_var = observed[k].mean(), observed[k].var()
            obs_cells = np.concatenate(observed_cells[k])
            degs = top_changed_genes(obs_mean, control_mean, n_degs)
            shift, additive_note = additive_shift(condition, dosage, label, control_mean, single_means)
            if not trained_moments[label].n:
                train_mean = None
            else:
                train_mean = trained_moments[label].mean()
            predictions = {
                "model": (predicted.mean(0), predicted[distance_rows]),
                "no_change": (control_mean, control_cells),
                "additive": (None, None) if shift is None else (control_mean + shift,
                                                                _shifted(control_cells, shift, count_data)),
                "train_mean": (train_mean, trained if trained.shape[0] else None),
            }
            row = {"condition": condition, "dosage": dosage, "covariates": label, "n_cells": observed[k].n,
                   "n_control_cells": controls.n_obs,
                   "r2_var_all": r_squared(predicted.var(0), obs_var),
                   "r2_var_deg20": r_squared(predicted.var(0)[degs], obs_var[degs]),
                   "additive_note": additive_note, "deg20": ",".join(genes[degs]), **selection}
            for name, (mean, cells) in predictions.items():
                prefix = "" if name == "model" else f"{name}_"
                scores = _scores(mean, cells, obs_mean, obs_cells, control_mean, degs)
                row.update({prefix + key: value for key, value in scores.items()})
                effects[name][k] = None if mean is None else mean - control_mean
            observed_effects[k] = obs_mean - control_mean
            means[(condition, dosage, group_label)] = (obs_mean, predicted.mean(0), control_mean, degs,
                                                       predictions["additive"][0], train_mean)
            rows_out.append(row)
        model.release(controls)
    _add_discrimination(rows_out, groups, effects, observed_effects)
    rows_out.sort(key=lambda row: (row["condition"], row["dosage"], row["covariates"]))
    excluded = excluded_rows(splits, conditions, dosages, cov_label, control, cov_keys)
    columns = metric_columns(cov_keys) + (["note"] if excluded else [])
    with atomic_open(out_path, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, delimiter="\t", lineterminator="\n", restval="")
        writer.writeheader()
        for row in rows_out + excluded:
            writer.writerow({k: _cell(v) for k, v in row.items()})
    if excluded:
        log.warning("%d (condition, dosage, covariate) group(s) of cells whose covariate category has no training "
                    "cell were left out of the evaluation (cpa.unseen_covariates: exclude); metrics.tsv lists them",
                    len(excluded))
    if means_path is not None:
        write_group_means(means_path, means, genes, n_degs,
                          "log1p(CP10k)" if count_data else "expression as stored")
    log.info("evaluated %d (condition, dosage, covariate) groups of the %s split; %s", len(rows_out), evaluated,
             beats_additive_line(rows_out))
    return rows_out


def _cell(value):
    """A metrics.tsv cell: floats with 6 significant digits, NaN as NA (what pandas and R read)."""
    if isinstance(value, float):
        return "NA" if np.isnan(value) else f"{value:.6g}"
    return value


def _scores(mean, cells, obs_mean, obs_cells, control_mean, degs):
    """Every score of ``SCORES`` but the discrimination score, of one predictor on one
    group; NaN for a predictor without a prediction (an undefined baseline)."""
    nan = float("nan")
    if mean is None:
        return {key: nan for key in SCORES if key != "discrimination"}
    return {
        "r2_mean_all": r_squared(mean, obs_mean),
        "r2_mean_deg20": r_squared(mean[degs], obs_mean[degs]),
        "pearson_delta_all": pearson_delta(mean, obs_mean, control_mean),
        "pearson_delta_deg20": pearson_delta(mean, obs_mean, control_mean, genes=degs),
        "mae_all": mean_absolute_error(mean, obs_mean),
        "e_distance": nan if cells is None or not len(obs_cells) else e_distance(cells, obs_cells),
        "deg_overlap20": de_overlap(mean, obs_mean, control_mean, k=len(degs)),
        "deg_direction20": direction_agreement(mean, obs_mean, control_mean, k=len(degs)),
    }


def _add_discrimination(rows, groups, effects, observed_effects):
    """The discrimination score of each predictor: how its predicted change of a group
    ranks the group's observed change among those of the evaluated groups of the same
    covariates (L1; cell-eval ranks within one cell line). A predictor undefined on some
    groups is scored on the groups it predicts, against the observed changes of all."""
    for label in sorted({g[2] for g in groups}):
        _add_discrimination_within([k for k, g in enumerate(groups) if g[2] == label], rows, groups, effects,
                                   observed_effects)


def _add_discrimination_within(members, rows, groups, effects, observed_effects):
    order = {(row["condition"], row["dosage"], row["covariates"]): row for row in rows}
    done = [k for k in members if groups[k] in order]
    if not done:
        return
    observed = np.array([observed_effects[k] for k in done])
    for name in PREDICTORS:
        column = "discrimination" if name == "model" else f"{name}_discrimination"
        for position, k in enumerate(done):
            order[groups[k]][column] = float("nan")
        defined = [position for position, k in enumerate(done) if effects[name][k] is not None]
        if not defined:
            continue
        # Put the defined groups first so that their rows of observed effects line up.
        ranked = defined + [position for position in range(len(done)) if position not in defined]
        predicted = np.array([effects[name][done[p]] for p in defined])
        scores = discrimination_scores(predicted, observed[ranked])
        for position, score in zip(defined, scores):
            order[groups[done[position]]][column] = float(score)


def beats_additive_line(rows, score="r2_mean_deg20"):
    """'beats additive on N of M groups' (top-20-DEG R^2; groups where both are defined)."""
    wins, total = beats_additive([row[score] for row in rows], [row[f"additive_{score}"] for row in rows])
    return f"the model beats the additive baseline on {wins} of {total} groups (top-20-DEG R^2)"


def _keys(conditions, dosages, labels, cells):
    """(condition, dosage, covariates) of each cell of ``cells``."""
    return list(zip(conditions[cells], dosages[cells], labels[cells]))


def _index_of(keys, conditions, dosages, labels, cells):
    """Per cell of the file: the position in ``keys`` of its (condition, dosage,
    covariates) for the cells ``cells``, -1 elsewhere and for keys not listed."""
    found = np.full(len(conditions), -1)
    if len(keys) and len(cells):
        index = pd.MultiIndex.from_tuples(keys)
        found[cells] = index.get_indexer(pd.MultiIndex.from_arrays([conditions[cells], dosages[cells],
                                                                      labels[cells]]))
    return found


def _shifted(cells, shift, count_data):
    """Control cells moved by the additive shift; log-normalised counts cannot go below
    0, so a negative shift stops there (a zero stays a zero)."""
    moved = cells + shift
    return np.maximum(moved, 0.0) if count_data else moved


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
    """Per evaluated group (sorted like metrics.tsv; ``means`` maps each to (observed,
    predicted, control, DEG indices[, additive, train mean])): the observed, predicted (model),
    control, additive and train-mean means of every gene (float32; NaN rows where a
    baseline is undefined) and the indices of its DEGs (-1 pads groups with fewer genes)."""
    keys = sorted(means)

    def stack(i):
        # A group without baselines (the additive and train-mean means) gets NaN rows.
        rows = [means[k][i] if len(means[k]) > i and means[k][i] is not None else np.full(len(genes), np.nan)
                for k in keys]
        return np.array(rows, dtype=np.float32).reshape(len(keys), len(genes))

    degs = np.full((len(keys), n_degs), -1, dtype=np.int64)
    for row, key in enumerate(keys):
        degs[row, :len(means[key][3])] = means[key][3]
    with atomic_open(path) as handle:
        np.savez(handle, condition=np.array([k[0] for k in keys], dtype=str),
                 dosage=np.array([k[1] for k in keys], dtype=str), covariates=np.array([k[2] for k in keys], dtype=str),
                 genes=np.asarray(genes, dtype=str), observed=stack(0), predicted=stack(1), control=stack(2),
                 additive=stack(4), train_mean=stack(5), degs=degs, unit=np.array(unit))
