"""Figures of the perturbation arm.

- ``training_figure``: every loss term per epoch (one panel each) and the adversaries'
  accuracies, from ``model/history.json``.
- ``umap_figure``: UMAPs of a seeded subsample of latents.h5ad, one panel per colouring
  (perturbation, dose, each covariate).
- ``query_umap``: the basal latents of the query data sets beside the training cells'.
- ``prediction_figure``: predicted vs observed mean expression per held-out group, from
  the means ``cpa_evaluate`` writes, with R^2 in each title.
- ``baselines_figure``: the model beside the no-change, additive and train-mean
  baselines on every held-out group and every score of metrics.tsv, with the count of
  groups where the model beats the additive baseline.
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np

from ..errors import InputError
from .plotting import plt, save_png

log = logging.getLogger(__name__)

LOSS_LABELS = {
    "train_loss": "autoencoder loss (reconstruction - adversarial term)",
    "reconstruction_loss": "reconstruction loss, per cell",
    "validation_loss": "validation reconstruction loss, per cell",
    "kl_local": "KL divergence, per cell",
    "adv_loss": "adversary loss (cross-entropy)",
    "adv_penalty": "adversary gradient penalty",
}


def _accuracy_label(key, covariate_keys):
    if key == "acc_perturbation":
        return "perturbation"
    if key.startswith("acc_covariate_"):
        index = int(key.rsplit("_", 1)[1])
        return covariate_keys[index] if index < len(covariate_keys) else key
    return key.removeprefix("acc_")


def training_figure(history_path, out_png, covariate_keys=()):
    """One panel per loss term, one for the adversaries' accuracies, per epoch, and one for
    the model selection's validation checks; a dashed line marks the epoch kept."""
    with open(history_path) as handle:
        history = json.load(handle)
    selection = history.pop("selection", None) or {}
    selected = history.pop("selected_epoch", None)
    if not history:
        raise InputError(f"training history '{history_path}' is empty; retrain the model.")
    losses = [k for k in history if not k.startswith("acc_")]
    losses.sort(key=lambda k: list(LOSS_LABELS).index(k) if k in LOSS_LABELS else len(LOSS_LABELS))
    accuracies = sorted(k for k in history if k.startswith("acc_"))
    panels = len(losses) + (1 if accuracies else 0) + (1 if selection.get("epoch") else 0)
    columns = min(3, panels)
    rows = math.ceil(panels / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False,
                                constrained_layout=True)
    figure.suptitle("CPA training", fontsize=14, fontweight="bold")
    axes = axes.ravel()
    for ax, key in zip(axes, losses):
        values = np.asarray(history[key], dtype=float)
        ax.plot(np.arange(1, values.size + 1), values, marker="o", markersize=2.5, lw=1.3)
        ax.set_title(LOSS_LABELS.get(key, key), fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    if accuracies:
        ax = axes[len(losses)]
        for key in accuracies:
            values = np.asarray(history[key], dtype=float)
            ax.plot(np.arange(1, values.size + 1), values, lw=1.3, label=_accuracy_label(key, list(covariate_keys)))
        ax.set_ylim(0, 1)
        ax.set_title("adversary accuracy on z_basal (lower = better disentangled)", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=8, title="predicts", title_fontsize=8)
        ax.grid(alpha=0.3)
    if selection.get("epoch"):
        ax = axes[panels - 1]
        for key, label in (("valid_r2_mean", "validation R^2 of condition means"),
                           ("disentanglement_basal", "condition classifier on z_basal"),
                           ("disentanglement_chance", "its chance level"),
                           ("selection_score", "selection score")):
            ax.plot(selection["epoch"], selection[key], marker="o", markersize=3, lw=1.3, label=label)
        ax.set_title("model selection on the validation cells", fontsize=10)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if selected:
        for ax in axes[:panels]:
            ax.axvline(selected, color="black", linestyle="--", lw=1, alpha=0.7)
        figure.suptitle(f"CPA training (dashed: epoch {selected}, the weights kept)", fontsize=14,
                        fontweight="bold")
    for ax in axes[panels:]:
        ax.axis("off")
    save_png(figure, out_png)


def subsample(n_cells, max_cells, seed=0):
    """Sorted row indices of at most ``max_cells`` cells, drawn without replacement (seeded)."""
    if n_cells <= max_cells:
        return np.arange(n_cells)
    return np.sort(np.random.default_rng(seed).choice(n_cells, size=max_cells, replace=False))


def read_latent_sample(latents_path, obsm_keys, obs_columns, max_cells=20_000, seed=0):
    """Obs columns and the chosen latent matrices of a seeded subsample, read from the file
    by rows (never the whole matrices)."""
    import h5py

    from ..cpa import h5ad_rows

    obs = h5ad_rows.read_obs(latents_path, obs_columns)
    rows = subsample(len(obs), max_cells, seed)
    with h5py.File(latents_path, "r") as handle:
        missing = [k for k in obsm_keys if k not in handle.get("obsm", {})]
        if missing:
            raise InputError(f"'{latents_path}' has no obsm {missing}; rerun cpa_merge.")
        latents = {k: handle["obsm"][k][rows] for k in obsm_keys}
    return obs.iloc[rows], latents


def embed(latent, seed=0):
    import umap

    n_neighbors = int(min(15, max(2, latent.shape[0] - 1)))
    return umap.UMAP(n_neighbors=n_neighbors, min_dist=0.3, random_state=seed, n_jobs=1).fit_transform(latent)


def _scatter_categories(ax, xy, labels, title, control=None, max_legend=24):
    labels = np.asarray(labels, dtype=str)
    categories = sorted(set(labels), key=lambda c: (c != control, c))
    palette = plt.get_cmap("tab20" if len(categories) > 10 else "tab10")
    order = np.random.default_rng(0).permutation(len(labels))  # no category painted last on top
    colours = {c: ("lightgrey" if c == control else palette(i % palette.N)) for i, c in enumerate(categories)}
    ax.scatter(xy[order, 0], xy[order, 1], s=3, linewidths=0, c=[colours[c] for c in labels[order]],
               rasterized=True)
    ax.set_title(f"{title} ({len(categories)} categories)", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    if len(categories) <= max_legend:
        handles = [plt.Line2D([], [], ls="", marker="o", markersize=5, color=colours[c]) for c in categories]
        ax.legend(handles, categories, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
                  ncol=1 if len(categories) <= 12 else 2)


def umap_figure(xy, obs, colour_by, out_png, title, control=None):
    """A UMAP panel per obs column of ``colour_by`` ({column: panel title})."""
    panels = len(colour_by)
    columns = min(2, panels)
    rows = math.ceil(panels / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(7.5 * columns, 5.5 * rows), squeeze=False,
                                constrained_layout=True)
    figure.suptitle(f"{title} ({xy.shape[0]} cells)", fontsize=14, fontweight="bold")
    axes = axes.ravel()
    for ax, (column, label) in zip(axes, colour_by.items()):
        _scatter_categories(ax, xy, obs[column].astype(str).to_numpy(), label,
                            control=control if column == "__perturbation__" else None)
    for ax in axes[panels:]:
        ax.axis("off")
    save_png(figure, out_png)


LATENT_TITLES = {"X_cpa_basal": "UMAP of the basal latent (perturbation and covariates removed)",
                 "X_cpa": "UMAP of the full latent (basal + perturbation + covariates)"}


def latent_umaps(latents_path, cfg, out_pngs, max_cells=20_000, seed=0):
    """The UMAP figures of ``out_pngs`` ({obsm key: PNG path}), coloured by perturbation,
    dose and every covariate (and the batch)."""
    keys = {cfg["perturbation_key"]: "perturbation"}
    if cfg.get("dosage_key"):
        keys[cfg["dosage_key"]] = "dose"
    for key in list(cfg.get("covariate_keys") or []) + ([cfg["batch_key"]] if cfg.get("batch_key") else []):
        keys[key] = key
    obs, latents = read_latent_sample(latents_path, list(out_pngs), list(keys), max_cells, seed)
    obs = obs.rename(columns={cfg["perturbation_key"]: "__perturbation__"})
    colour_by = {("__perturbation__" if k == cfg["perturbation_key"] else k): v for k, v in keys.items()}
    for name, path in out_pngs.items():
        log.info("UMAP of %s: %d cells x %d dimensions", name, *latents[name].shape)
        xy = embed(latents[name], seed)
        umap_figure(xy, obs, colour_by, path, LATENT_TITLES.get(name, name), control=cfg["control_group"])


TRAINING_SOURCE = "cpa.adata (training)"


def query_umap(sources, covariate_keys, out_png, max_cells=20_000, seed=0):
    """One UMAP of the basal latents of every source ({label: (latents.h5ad, covariate
    rules)}: the training file and each query, at most ``max_cells`` cells each, seeded)
    embedded together, coloured by source and by each covariate as the model read it (a
    query's values renamed by its cpa.query covariates rules, or its one category)."""
    import pandas as pd

    parts, basal = [], []
    for label, (path, rules) in sources.items():
        from ..cpa import h5ad_rows

        present = [key for key in covariate_keys if key in h5ad_rows.obs_columns(path)]
        obs, latents = read_latent_sample(path, ["X_cpa_basal"], present, max_cells, seed)
        obs = obs.copy()
        for key in covariate_keys:
            rule = (rules or {}).get(key)
            if isinstance(rule, str):
                obs[key] = rule
            elif key in obs:
                obs[key] = obs[key].astype(str).map(lambda value, rule=rule or {}: rule.get(value, value))
            else:
                obs[key] = "(not given)"
        obs["__source__"] = label
        parts.append(obs[list(covariate_keys) + ["__source__"]].reset_index(drop=True))
        basal.append(latents["X_cpa_basal"])
    obs = pd.concat(parts, ignore_index=True)
    latent = np.concatenate(basal)
    log.info("UMAP of the basal latents of %d sources: %d cells", len(sources), latent.shape[0])
    xy = embed(latent, seed)
    colour_by = {"__source__": "data set", **{key: key for key in covariate_keys}}
    umap_figure(xy, obs, colour_by, out_png, "Query data sets beside the training cells: UMAP of the basal latent")


def prediction_figure(means_path, out_png, max_panels=36):
    """Predicted vs observed mean (log-normalised) expression of every gene, one panel per
    evaluated (condition, dosage, covariates) group, top-20 DEGs highlighted, R^2 in the title."""
    from ..cpa.scores import r_squared

    with np.load(means_path, allow_pickle=False) as data:
        groups = list(zip(data["condition"], data["dosage"], data["covariates"]))
        observed, predicted, degs = data["observed"], data["predicted"], data["degs"]
        unit = str(data["unit"]) if "unit" in data else "log1p(CP10k)"
    if observed.shape != predicted.shape:
        raise InputError(f"'{means_path}': observed {observed.shape} and predicted {predicted.shape} "
                         "differ in shape; rerun cpa_evaluate.")
    shown = min(len(groups), max_panels)
    columns = max(1, min(4, shown))
    rows = max(1, math.ceil(shown / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 4.2 * rows), squeeze=False,
                                constrained_layout=True)
    more = f" (first {shown} of {len(groups)} groups)" if shown < len(groups) else ""
    figure.suptitle(f"Held-out conditions: predicted vs observed mean expression{more}", fontsize=13,
                    fontweight="bold")
    axes = axes.ravel()
    for k, ax in enumerate(axes[:shown]):
        condition, dosage, covariates = groups[k]
        x, y = observed[k], predicted[k]
        top = degs[k][degs[k] >= 0]
        ax.scatter(x, y, s=6, color="tab:blue", alpha=0.6, linewidths=0, label="all genes", rasterized=True)
        ax.scatter(x[top], y[top], s=14, color="tab:red", linewidths=0, label="top-20 DEGs")
        low, high = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        ax.plot([low, high], [low, high], color="black", lw=0.8, ls="--")
        ax.set_title(f"{condition} at {dosage}, {covariates}\n"
                     f"R² all = {r_squared(y, x):.2f}, R² DEGs = {r_squared(y[top], x[top]):.2f}", fontsize=9)
        ax.set_xlabel(f"observed mean, {unit}")
        ax.set_ylabel(f"predicted mean, {unit}")
        ax.grid(alpha=0.3)
        if k == 0:
            ax.legend(fontsize=7, loc="upper left")
    if not groups:
        axes[0].text(0.5, 0.5, "no held-out group was evaluated", ha="center", va="center")
    for ax in axes[max(shown, 1):]:
        ax.axis("off")
    save_png(figure, out_png)


#: (column of metrics.tsv without the predictor prefix, axis label, True where higher is better)
BASELINE_PANELS = [
    ("r2_mean_deg20", "R² of the mean, top-20 DEGs", True),
    ("r2_mean_all", "R² of the mean, all genes", True),
    ("pearson_delta_deg20", "Pearson-delta, top-20 DEGs", True),
    ("pearson_delta_all", "Pearson-delta, all genes", True),
    ("mae_all", "MAE of the mean, all genes", False),
    ("e_distance", "E-distance to the observed cells", False),
    ("deg_overlap20", "DEG overlap at 20", True),
    ("deg_direction20", "DEG direction agreement at 20", True),
    ("discrimination", "discrimination score", True),
]
PREDICTOR_STYLES = [("model", "", "CPA", "tab:red", "o"), ("additive", "additive_", "additive", "tab:blue", "s"),
                    ("train_mean", "train_mean_", "train mean", "tab:green", "^"),
                    ("no_change", "no_change_", "no change", "tab:gray", "v")]


def beats_additive(table, score="r2_mean_deg20"):
    """(wins, groups) of ``shardmap.cpa.baselines.beats_additive`` on a metrics.tsv table."""
    from ..cpa.baselines import beats_additive as count

    return count(table[score], table[f"additive_{score}"])


def baselines_figure(metrics_path, out_png):
    """One panel per score: the model and the three baselines on every evaluated group
    (x axis), from metrics.tsv; the title says on how many groups the model beats the
    additive baseline (top-20-DEG R^2 and Pearson-delta)."""
    import pandas as pd

    table = pd.read_csv(metrics_path, sep="\t", dtype=str, keep_default_na=False)
    if "additive_r2_mean_deg20" not in table:
        raise InputError(f"'{metrics_path}' has no baseline columns (written before they existed); rerun "
                         "cpa_evaluate.")
    if "note" in table:  # groups left out of the evaluation have no scores
        table = table[table["note"] == ""]
    table = table.replace({"NA": "nan", "": "nan"})
    labels = [f"{c} at {d}\n{v}" for c, d, v in zip(table["condition"], table["dosage"], table["covariates"])]
    x = np.arange(len(table))
    columns = 3
    rows = math.ceil(len(BASELINE_PANELS) / columns)
    width = max(4.5, 0.45 * len(table) + 1.5)
    figure, axes = plt.subplots(rows, columns, figsize=(width * columns, 3.6 * rows), squeeze=False,
                                constrained_layout=True)
    wins, total = beats_additive(table)
    wins_pd, total_pd = beats_additive(table, "pearson_delta_all")
    figure.suptitle(f"Held-out conditions: the model against the baselines. The model beats additive on {wins} of "
                    f"{total} groups (top-20-DEG R²) and on {wins_pd} of {total_pd} (Pearson-delta, all genes)",
                    fontsize=12, fontweight="bold")
    for ax, (score, label, higher) in zip(axes.ravel(), BASELINE_PANELS):
        for k, (_, prefix, name, colour, marker) in enumerate(PREDICTOR_STYLES):
            column = prefix + score
            if column not in table:
                continue
            values = table[column].astype(float).to_numpy()
            ax.scatter(x + (k - 1.5) * 0.12, values, s=22, color=colour, marker=marker, label=name, zorder=3)
        ax.set_title(f"{label} ({'higher' if higher else 'lower'} is better)", fontsize=9)
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=90, fontsize=6)
        ax.grid(alpha=0.3)
    axes.ravel()[0].legend(fontsize=7, loc="lower left")
    if not len(table):
        axes[0, 0].text(0.5, 0.5, "no held-out group was evaluated", ha="center", va="center")
    for ax in axes.ravel()[len(BASELINE_PANELS):]:
        ax.axis("off")
    save_png(figure, out_png)


def drug_similarity_figure(embeddings_path, out_png):
    """Heatmap of the cosine similarity between the drugs' embeddings (at the dose recorded
    in the file), drugs ordered by hierarchical clustering; and each drug's learned scalar
    dose response against log dose."""
    import anndata as ad
    from scipy.cluster.hierarchy import leaves_list, linkage

    embeddings = ad.read_h5ad(embeddings_path)
    for key in ("drug_cosine_similarity", "drugs", "dose_response"):
        if key not in embeddings.uns:
            raise InputError(f"'{embeddings_path}' has no uns['{key}']; rerun rule cpa_embeddings.")
    similarity = np.asarray(embeddings.uns["drug_cosine_similarity"], dtype=float)
    drugs = [str(d) for d in embeddings.uns["drugs"]]
    order = leaves_list(linkage(1 - similarity[np.triu_indices(len(drugs), 1)], "average")) if len(drugs) > 2 \
        else np.arange(len(drugs))
    size = min(12.0, 3 + 0.35 * len(drugs))
    figure, (left, right) = plt.subplots(1, 2, figsize=(2 * size + 1, size), constrained_layout=True)
    image = left.imshow(similarity[np.ix_(order, order)], cmap="RdBu_r", vmin=-1, vmax=1)
    left.set_xticks(range(len(drugs)), [drugs[i] for i in order], rotation=90, fontsize=8)
    left.set_yticks(range(len(drugs)), [drugs[i] for i in order], fontsize=8)
    left.set_title(f"cosine similarity of the drug embeddings (dose {embeddings.uns['drug_dose']:g})", fontsize=10)
    figure.colorbar(image, ax=left, shrink=0.8, label="cosine similarity")
    curves = embeddings.uns["dose_response"]
    for drug in drugs:
        rows = np.asarray(curves["drug"]).astype(str) == drug
        right.plot(np.asarray(curves["dose"])[rows], np.asarray(curves["response"])[rows], lw=1.2, label=drug)
    right.set_xscale("log")
    right.set_xlabel("dose")
    right.set_ylabel("learned dose response (scale of the drug's embedding)")
    right.set_title("learned dose response of each drug", fontsize=10)
    if len(drugs) <= 20:
        right.legend(fontsize=7, ncol=2)
    right.grid(alpha=0.3)
    figure.suptitle("CPA drug embeddings", fontsize=14, fontweight="bold")
    save_png(figure, out_png)


def dose_response_figure(table_path, out_png, n_genes=6):
    """For each drug, the predicted change from control of its ``n_genes`` most responsive
    genes (largest |change| at the highest dose, over the covariate groups) against dose
    (log scale; dose 0 is left out), one line per gene and covariate group."""
    import pandas as pd

    table = pd.read_csv(table_path, sep="\t")
    required = {"drug", "dose", "gene", "mean", "change"}
    if not required <= set(table.columns) or table.empty:
        raise InputError(f"dose-response table '{table_path}' lacks columns {sorted(required - set(table.columns))} "
                         "or rows; rerun rule cpa_dose_response.")
    groups = [c for c in table.columns if c not in required]
    drugs = list(dict.fromkeys(table["drug"]))
    columns = min(3, len(drugs))
    rows = math.ceil(len(drugs) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 4 * rows), squeeze=False,
                                constrained_layout=True)
    for ax, drug in zip(axes.ravel(), drugs):
        part = table[(table["drug"] == drug) & (table["dose"] > 0)]
        top = part[part["dose"] == part["dose"].max()].groupby("gene")["change"].apply(lambda v: v.abs().max())
        genes = list(top.sort_values(ascending=False).index[:n_genes])
        colours = dict(zip(genes, plt.cm.tab10.colors))
        for keys, curve in part[part["gene"].isin(genes)].groupby(["gene", *groups]):
            keys = keys if isinstance(keys, tuple) else (keys,)
            curve = curve.sort_values("dose")
            ax.plot(curve["dose"], curve["change"], marker="o", markersize=3, lw=1.1, color=colours[keys[0]],
                    label=keys[0] if all(k == g for k, g in zip(keys[1:], part[groups].iloc[0])) else None)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(f"{drug}: top {len(genes)} genes" + (f" (one line per {', '.join(groups)})" if groups else ""),
                     fontsize=10)
        ax.set_xlabel("dose")
        ax.set_ylabel("predicted change from control")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(drugs):]:
        ax.axis("off")
    figure.suptitle("Predicted dose response", fontsize=14, fontweight="bold")
    save_png(figure, out_png)
