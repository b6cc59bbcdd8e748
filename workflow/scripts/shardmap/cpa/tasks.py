"""The perturbation arm's workflow tasks: validate and train, infer a shard, merge,
predict counterfactuals, evaluate held-out conditions.

Every task that touches cells reads only its rows (``h5ad_rows``) and writes into
arrays preallocated for its output; files appear under their final names only when
complete.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd

from ..atomic import atomic_open, atomic_path
from ..errors import InputError
from . import h5ad_rows
from .conditions import condition_class, parse_condition, parse_obs
from .scores import r_squared  # noqa: F401 (also part of this module's interface)
from .values import check_values

log = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "valid": "valid", "validation": "valid",
                 "val": "valid", "test": "test", "ood": "test"}
LATENT_OBSM = {"z_basal": "X_cpa_basal", "z": "X_cpa", "z_corrected": "X_cpa_corrected"}
NORMALISED_LIBRARY = 1e4


def setup_kwargs(cfg):
    return {"perturbation_key": cfg["perturbation_key"], "dosage_key": cfg["dosage_key"],
            "control_group": cfg["control_group"], "covariate_keys": list(cfg.get("covariate_keys") or []),
            "batch_key": cfg.get("batch_key"), "smiles_key": cfg.get("smiles_key"),
            "layer": cfg.get("layer")}


def obs_keys(cfg):
    keys = [cfg["perturbation_key"], cfg["dosage_key"]] + list(cfg.get("covariate_keys") or [])
    keys += [k for k in (cfg.get("batch_key"), cfg.get("smiles_key"), cfg.get("split_key")) if k]
    return keys


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
    """InputError naming the first configured obs column with missing values."""
    for key in obs_keys(cfg):
        n_missing = int(obs[key].isna().sum())
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
    names known drugs with one dose each; the matrix is finite and, for a count
    likelihood (nb, zinb), holds non-negative integers.
    """
    control = cfg["control_group"]
    if not Path(adata_path).exists():
        raise InputError(f"cpa.adata '{adata_path}' does not exist; fix the path in the config.")
    total = h5ad_rows.n_obs(adata_path)
    if total == 0:
        raise InputError(f"cpa.adata '{adata_path}' has no cells.")
    obs = h5ad_rows.read_obs(adata_path, obs_keys(cfg))
    check_no_missing_values(obs, cfg, adata_path)
    parsed, _ = parse_obs(obs, cfg["perturbation_key"], cfg["dosage_key"], control)
    if not any(len(p) == 0 for p in parsed):
        raise InputError(f"cpa.adata '{adata_path}': no cell of obs['{cfg['perturbation_key']}'] is the "
                         f"control group '{control}'; set cpa.control_group to the label of unperturbed "
                         f"cells (labels: {sorted(obs[cfg['perturbation_key']].astype(str).unique())[:10]}).")
    drugs = {drug for pairs in parsed for drug, _ in pairs}
    if not drugs:
        raise InputError(f"cpa.adata '{adata_path}': every cell is in the control group '{control}'; "
                         "there is no perturbation to model.")
    splits = assign_splits(obs, cfg)
    for number, item in enumerate(cfg.get("counterfactuals") or []):
        if item["perturbation"] == control:
            continue
        pairs = parse_condition(item["perturbation"], item.get("dosage") or "", control,
                                where=f"cpa.counterfactuals[{number}]: ")
        unknown = sorted({drug for drug, _ in pairs} - drugs)
        if unknown:
            raise InputError(f"cpa.counterfactuals[{number}] names {unknown}, which no cell of cpa.adata "
                             f"was treated with; known drugs: {sorted(drugs)[:20]}.")
    count_data = (cfg.get("model") or {}).get("recon_loss", "nb") in ("nb", "zinb")
    where = f"cpa.adata '{adata_path}' " + (f"layers['{cfg['layer']}']" if cfg.get("layer") else "X")
    n_genes = 0
    for start in range(0, total, rows_per_chunk):
        stop = min(start + rows_per_chunk, total)
        block = h5ad_rows.read_matrix(adata_path, start, stop, cfg.get("layer"))
        n_genes = block.shape[1]
        check_values(block, count_data, where=where, obs_names=obs.index[start:stop])
    if n_genes == 0:
        raise InputError(f"{where} has no genes.")
    summary = {"cells": total, "genes": n_genes, "drugs": len(drugs),
               "conditions": len(parsed), "train_cells": int((splits == "train").sum()),
               "valid_cells": int((splits == "valid").sum()), "test_cells": int((splits == "test").sum())}
    with atomic_open(out_path, "w") as handle:
        handle.write("".join(f"{key}\t{value}\n" for key, value in summary.items()))
    log.info("cpa.adata '%s' checked: %s", adata_path, summary)
    return summary


def train_model(adata_path, cfg, model_dir, splits_path, accelerator="auto"):
    """Validate the data, train CPA on the train split, save the model and the split."""
    from .model import CPA

    adata = load_and_validate(adata_path, cfg)
    splits = assign_splits(adata.obs, cfg)
    import scvi

    CPA.setup_anndata(adata, **setup_kwargs(cfg))
    train_cfg = dict(cfg.get("train") or {})
    scvi.settings.seed = int(train_cfg.get("seed", 0))  # the initial weights too
    model = CPA(adata, **dict(cfg.get("model") or {}))
    train_idx = np.flatnonzero(splits == "train")
    valid_idx = np.flatnonzero(splits == "valid")
    log.info("training on %d cells, validating on %d, holding out %d", train_idx.size, valid_idx.size,
             int((splits == "test").sum()))
    model.train(max_epochs=int(train_cfg.get("max_epochs", 100)), batch_size=int(train_cfg.get("batch_size", 512)),
                accelerator=accelerator, devices=1, train_indices=train_idx, validation_indices=valid_idx,
                seed=train_cfg.get("seed", 0), num_workers=int(train_cfg.get("num_workers", 0)),
                prefetch_factor=int(train_cfg.get("prefetch_factor", 2)),
                persistent_workers=bool(train_cfg.get("persistent_workers", False)),
                plan_kwargs=train_cfg.get("plan"))
    history = {k: v.iloc[:, 0].astype(float).tolist() for k, v in model.history.items()}
    # The model folder appears with model.pt and history.json together, or not at all.
    save_model_atomically(model, model_dir, {"history.json": json.dumps(history)})
    with atomic_open(splits_path, "w") as handle:
        pd.DataFrame({"split": splits}, index=adata.obs_names).to_csv(handle, sep="\t", index_label="cell")
    return model


def save_model_atomically(model, model_dir, extra_files=None):
    """Save into a temporary folder beside ``model_dir`` (with ``extra_files``, {name:
    text}) and rename it into place."""
    model_dir = Path(model_dir)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{model_dir.name}.tmp-"
    for stale in model_dir.parent.glob(prefix + "*"):  # left by a killed task
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=model_dir.parent))
    try:
        model.save(str(tmp), overwrite=True, save_anndata=False)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        for path in tmp.iterdir():
            with open(path, "rb+") as handle:
                os.fsync(handle.fileno())
        if model_dir.exists():
            shutil.rmtree(model_dir)
        os.replace(tmp, model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_model(model_dir, adata):
    from .model import CPA

    return CPA.load(str(model_dir), adata=adata, accelerator="cpu")


def infer_shard(model_dir, adata_path, cfg, start, stop, out_path, batch_size=4096):
    """Latents of rows start:stop, read alone from the file, written as one .npz."""
    shard = h5ad_rows.read_rows(adata_path, start, stop, obs_keys(cfg), cfg.get("layer"))
    model = load_model(model_dir, shard)
    latents = model.get_latent_representation(shard, batch_size=batch_size)
    with atomic_open(out_path) as handle:
        np.savez(handle, start=start, stop=stop, **latents)
    log.info("rows %d-%d: latents %s", start, stop, {k: v.shape for k, v in latents.items()})


def open_shard(path):
    """np.load of a shard file written by infer_shard, or InputError if it is damaged."""
    try:
        return np.load(path)
    except (OSError, ValueError, EOFError) as err:
        raise InputError(f"shard file '{path}' is empty or damaged ({err}); delete it and rerun to "
                         "infer the shard again.") from None


def merge_latents(adata_path, shard_paths, out_path):
    """Write latents.h5ad: the input's obs (copied on disk) and the three latent matrices,
    preallocated and filled shard by shard; no X."""
    total = h5ad_rows.n_obs(adata_path)
    with atomic_path(out_path) as tmp:
        ad.AnnData(obs=pd.DataFrame(index=pd.Index([], dtype=str))).write_h5ad(tmp)
        with h5py.File(tmp, "r+") as out, h5ad_rows.open_h5ad(adata_path) as source:
            del out["obs"]
            source.copy(source["obs"], out, "obs")
            datasets = {}
            filled = 0
            for path in shard_paths:
                with open_shard(path) as shard:
                    start, stop = int(shard["start"]), int(shard["stop"])
                    if start != filled:
                        raise InputError(f"shard '{path}' starts at row {start}, expected {filled}; "
                                         "delete the shard files and rerun.")
                    for key, name in LATENT_OBSM.items():
                        if name not in datasets:
                            datasets[name] = out["obsm"].create_dataset(
                                name, shape=(total, shard[key].shape[1]), dtype="float32")
                            datasets[name].attrs["encoding-type"] = "array"
                            datasets[name].attrs["encoding-version"] = "0.2.0"
                        datasets[name][start:stop] = shard[key]
                    filled = stop
            if filled != total:
                raise InputError(f"the shards cover rows 0-{filled} of {total}; rerun the missing shards.")


def predict_counterfactual(model_dir, adata_path, cfg, perturbation, dosage, out_path, chunk_rows):
    """Mean expression of every control cell under ``perturbation`` at ``dosage``.

    Streams the file in chunks of rows; the output X is preallocated on disk and filled
    chunk by chunk.
    """
    control = cfg["control_group"]
    obs = h5ad_rows.read_obs(adata_path, obs_keys(cfg))
    is_control = np.asarray(obs[cfg["perturbation_key"]] == control)
    n_control = int(is_control.sum())
    if n_control == 0:
        raise InputError(f"cpa.adata has no cell of the control group '{control}' to predict from.")
    obs = obs[is_control]
    genes = h5ad_rows.var_names(adata_path)
    model = None
    with atomic_path(out_path) as tmp:
        result = ad.AnnData(obs=obs, var=pd.DataFrame(index=genes))
        result.uns["counterfactual"] = {"perturbation": perturbation, "dosage": str(dosage),
                                        "source": str(adata_path)}
        result.write_h5ad(tmp)
        with h5py.File(tmp, "r+") as out:
            if "X" in out:
                del out["X"]
            matrix = out.create_dataset("X", shape=(n_control, len(genes)), dtype="float32")
            matrix.attrs["encoding-type"] = "array"
            matrix.attrs["encoding-version"] = "0.2.0"
            written = 0
            for start in range(0, is_control.size, chunk_rows):
                stop = min(start + chunk_rows, is_control.size)
                rows = np.flatnonzero(is_control[start:stop])
                if rows.size == 0:
                    continue  # no control cell here: the rows are not even read
                chunk = h5ad_rows.read_rows(adata_path, start, stop, obs_keys(cfg), cfg.get("layer"))
                if model is None:
                    model = load_model(model_dir, chunk)
                mean = model.predict(chunk, indices=rows, perturbation=perturbation, dosage=dosage)
                model.release(chunk)
                matrix[written:written + rows.size] = mean
                written += rows.size
                log.info("control cells %d/%d predicted (rows up to %d/%d read)", written, n_control, stop,
                         is_control.size)
    log.info("%s at %s: %d control cells predicted", perturbation, dosage, n_control)


def _normalise(matrix, count_data):
    values = np.asarray(matrix.todense() if hasattr(matrix, "todense") else matrix, dtype=np.float64)
    if not count_data:
        return values
    library = values.sum(1, keepdims=True)
    return np.log1p(values / np.maximum(library, 1.0) * NORMALISED_LIBRARY)


METRIC_COLUMNS = ["condition", "dosage", "covariates", "n_cells", "n_control_cells", "r2_mean_all",
                  "r2_var_all", "r2_mean_deg20", "r2_var_deg20", "baseline_r2_mean_all",
                  "baseline_r2_mean_deg20", "deg20"]


def canonical_conditions(obs, cfg):
    """Per cell: its drugs joined by '+' in sorted order and their doses in the same order,
    so that "B+A" at "0.5+1" and "A+B" at "1+0.5" are one condition."""
    control = cfg["control_group"]
    keys = obs[[cfg["perturbation_key"], cfg["dosage_key"]]].astype(str)
    cache = {}
    labels = np.empty((len(obs), 2), dtype=object)
    for i, key in enumerate(keys.itertuples(index=False)):
        if key not in cache:
            pairs = parse_condition(key[0], key[1], control)
            cache[key] = ((condition_class(pairs, control), "+".join(f"{dose:g}" for _, dose in pairs))
                          if pairs else (control, ""))
        labels[i] = cache[key]
    return labels[:, 0], labels[:, 1]


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
            })
        model.release(controls)
    rows_out.sort(key=lambda row: (row["condition"], row["dosage"], row["covariates"]))
    with atomic_open(out_path, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for row in rows_out:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    if means_path is not None:
        write_group_means(means_path, means, genes, n_degs,
                          "log1p(CP10k)" if count_data else "expression as stored")
    log.info("evaluated %d (condition, dosage, covariate) groups of the %s split", len(rows_out), evaluated)
    return rows_out


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
