"""Figures of the hub controls, drawn with nilearn on the MNI152 template.

- ``degree_figure``: the connectome's degree map in axial slices, with its histogram.
- ``hub_bias_figure``: each lesion's map-degree correlation against its site's degree, with
  the group maps' correlations.
- ``null_figure``: a group's real and null sensitivity maps side by side, and where the real
  one lies at or above the 95th percentile of the null groups'.
"""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np

from ..errors import InputError
from .lnm_figures import _template, _volume, axial_cuts, map_on_mask
from .plotting import label_colorbar, plt, save_png, skip_imported_objects_in_collections

log = logging.getLogger(__name__)
PERCENTILE_SHOWN = 95.0


def degree_figure(degree_path, mask_path, out_png, n_cuts=7):
    """The degree map (mean r of each voxel with all others) in axial slices and as a histogram."""
    from nilearn import plotting

    mask = _volume(mask_path, "brain mask")
    degree = map_on_mask(degree_path, "degree map", mask, mask_path)
    values = np.asarray(degree.dataobj)[np.asarray(mask.dataobj) > 0]
    skip_imported_objects_in_collections()
    figure = plt.figure(figsize=(15, 4.5))
    figure.suptitle("The connectome's degree map: each voxel's mean r with all other mask voxels",
                    fontsize=14, fontweight="bold")
    slices = figure.add_axes((0.0, 0.05, 0.74, 0.8))
    limit = float(np.abs(values).max()) or 1.0
    # A threshold far below any visible colour leaves the outside of the mask (0) transparent.
    display = plotting.plot_stat_map(degree, bg_img=_template(), display_mode="z", cut_coords=axial_cuts(mask, n_cuts),
                                     threshold=1e-4 * limit, vmin=-limit, vmax=limit, cmap="RdBu_r", colorbar=True,
                                     figure=figure, axes=slices, black_bg=False, cbar_tick_format="%.2f")
    label_colorbar(display, "mean r")
    histogram = figure.add_axes((0.79, 0.17, 0.19, 0.62))
    histogram.hist(values, bins=60, color="0.4")
    histogram.set_xlabel("degree (mean r)")
    histogram.set_ylabel("mask voxels")
    histogram.set_title(f"median {np.median(values):.3f}, 99th pct {np.percentile(values, 99):.3f}", fontsize=10)
    save_png(figure, out_png)
    log.info("degree figure %s", out_png)


def read_hub_bias(path):
    import pandas as pd

    table = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=["NA"], dtype={"group": str,
                                                                                      "lesion_id": str})
    missing = {"kind", "r_with_degree", "site_mean_degree", "group", "map"} - set(table.columns)
    if missing:
        raise InputError(f"hub-bias table '{path}' lacks the columns {sorted(missing)}; delete it and rerun.")
    return table


def hub_bias_figure(table_path, out_png):
    """Left: each lesion's map-degree correlation against its site's mean degree, coloured by
    group. Right: the group maps' correlations with the degree map."""
    table = read_hub_bias(table_path)
    lesions = table[table["kind"] == "lesion"]
    groups = table[table["kind"] == "group_map"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [3, 2]})
    figure.suptitle("Do the maps resemble the connectome's hubs?", fontsize=14, fontweight="bold")
    for label, rows in lesions.groupby(lesions["group"].replace("", "no group"), sort=True):
        left.scatter(rows["site_mean_degree"].astype(float), rows["r_with_degree"].astype(float), s=22,
                     alpha=0.8, label=f"{label} (n = {len(rows)})")
    left.axhline(0.0, color="0.6", linewidth=0.8)
    left.set_xlabel("lesion site's mean degree (mean r)")
    left.set_ylabel("r of the lesion's AvgR_Fz map with the degree map\n(mask voxels outside the lesion)")
    median = float(np.nanmedian(lesions["r_with_degree"].astype(float))) if len(lesions) else float("nan")
    left.set_title(f"{len(lesions)} lesions, median r = {median:.2f}", fontsize=11)
    if len(lesions):
        left.legend(fontsize=9, loc="best")
    names = list(dict.fromkeys(groups["map"]))
    labels = list(dict.fromkeys(groups["group"]))
    width = 0.8 / max(len(labels), 1)
    for offset, label in enumerate(labels):
        rows = groups[groups["group"] == label].set_index("map")
        heights = [float(rows.loc[name, "r_with_degree"]) if name in rows.index else np.nan for name in names]
        right.bar(np.arange(len(names)) + offset * width, np.nan_to_num(heights), width, label=label)
    right.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, fontsize=9)
    right.axhline(0.0, color="0.6", linewidth=0.8)
    right.set_ylim(-1, 1)
    right.set_ylabel("r with the degree map (whole mask)")
    right.set_title("group maps", fontsize=11)
    if labels:
        right.legend(fontsize=9, title="lesions")
    figure.tight_layout(rect=(0, 0, 1, 0.93))
    save_png(figure, out_png)
    log.info("hub-bias figure %s", out_png)


def null_figure(real_path, null_path, versus_path, mask_path, out_png, threshold, group=None, n_lesions=None,
                n_null=None, n_cuts=7):
    """Three rows of axial slices: the real positive sensitivity (% of lesions), the null
    lesions' (% of null lesions) on the same scale, and the real sensitivity's percentile
    among null groups where it is at least PERCENTILE_SHOWN."""
    from nilearn import plotting

    mask = _volume(mask_path, "brain mask")
    template = _template()
    skip_imported_objects_in_collections()
    cuts = axial_cuts(mask, n_cuts)
    who = f"group {group}" if group else "all lesions"
    figure = plt.figure(figsize=(14, 10))
    figure.suptitle(f"Real against random lesions, {who}", fontsize=15, fontweight="bold")
    rows = [figure.add_axes((0.0, 0.64, 1.0, 0.28)), figure.add_axes((0.0, 0.33, 1.0, 0.28)),
            figure.add_axes((0.0, 0.02, 1.0, 0.28))]
    percents = [nib.Nifti1Image(np.asarray(map_on_mask(path, what, mask, mask_path).dataobj) * 100.0, mask.affine)
                for path, what in ((real_path, "sensitivity map"), (null_path, "null sensitivity map"))]
    peak = max(float(np.asarray(img.dataobj).max()) for img in percents)
    titles = [f"real: % of {n_lesions or ''} lesions with T > {threshold:g}",
              f"null: % of {n_null or ''} random lesions of the same sizes with T > {threshold:g}"]
    for axes, img, title in zip(rows[:2], percents, titles):
        if peak <= 0:
            axes.axis("off")
            axes.text(0.5, 0.5, f"{title}: no voxel", ha="center", va="center", fontsize=14)
            continue
        # Every voxel above 0 coloured: with thousands of null lesions, fractions of 1 % matter.
        display = plotting.plot_stat_map(img, bg_img=template, display_mode="z", cut_coords=cuts, threshold=1e-3,
                                         vmin=0, vmax=max(peak, 1.0), cmap="Reds", symmetric_cbar=False,
                                         colorbar=True, figure=figure, axes=axes, title=title, black_bg=False,
                                         cbar_tick_format="%.0f")
        label_colorbar(display, "% of lesions")
    versus = map_on_mask(versus_path, "percentile map", mask, mask_path)
    values = np.asarray(versus.dataobj)
    shown = np.where(values >= PERCENTILE_SHOWN, values, 0.0)
    title = f"percentile of the real sensitivity among null groups (>= {PERCENTILE_SHOWN:g})"
    if not shown.any():
        rows[2].axis("off")
        rows[2].text(0.5, 0.5, f"no voxel where the real sensitivity is at or above the {PERCENTILE_SHOWN:g}th "
                     "percentile of the null's", ha="center", va="center", fontsize=14)
    else:
        display = plotting.plot_stat_map(nib.Nifti1Image(shown, mask.affine), bg_img=template, display_mode="z",
                                         cut_coords=cuts, threshold=PERCENTILE_SHOWN - 1e-3, vmin=PERCENTILE_SHOWN,
                                         vmax=100, cmap="viridis", symmetric_cbar=False, colorbar=True, figure=figure,
                                         axes=rows[2], title=title, black_bg=False, cbar_tick_format="%.0f")
        label_colorbar(display, "percentile")
    save_png(figure, out_png)
    log.info("null figure %s (%s)", out_png, who)
