"""Figures of the lesion network mapping arm, drawn with nilearn on the MNI152 template.

- ``lesion_figure``: one lesion on the template, its T map in slices through the lesion
  with the sensitivity threshold, and a glass brain of the T map beyond the threshold.
- ``sensitivity_figure``: a group's positive and negative sensitivity maps (% of lesions).
- ``qc_figure``: the QC table as bars (voxels in the mask, fraction outside it).
- ``lesion_summary_figure``: every lesion's peak |T| and map extent, from the merged sums
  (for studies where only some lesions get a figure of their own).
"""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np

from ..errors import InputError
from ..lnm.nifti import AFFINE_ATOL_MM, load_image, read_data, squeeze_to_3d
from .plotting import label_colorbar, plt, save_png, skip_imported_objects_in_collections

log = logging.getLogger(__name__)


def _template():
    from nilearn.datasets import load_mni152_template

    return load_mni152_template(resolution=2)  # shipped inside nilearn, no download


def _volume(path, what):
    img = load_image(path, what)
    data = squeeze_to_3d(read_data(img, path, what, np.float32), path, what)
    return nib.Nifti1Image(np.asarray(data, dtype=np.float32), img.affine)


def check_same_grid(img, reference, what, reference_what):
    """Raise InputError unless ``img`` lies on ``reference``'s grid (shape and affine)."""
    if img.shape[:3] != reference.shape[:3] or not np.allclose(img.affine, reference.affine,
                                                               atol=AFFINE_ATOL_MM):
        raise InputError(f"{what} (shape {img.shape[:3]}) is not on the grid of {reference_what} "
                         f"(shape {reference.shape[:3]}, or a different affine); the maps must be the "
                         "ones written for this mask: delete them and rerun.")


def map_on_mask(path, what, mask, mask_path):
    """The 3D volume at ``path``, checked to lie on the brain mask's grid."""
    img = _volume(path, what)
    check_same_grid(img, mask, f"{what} '{path}'", f"the brain mask '{mask_path}'")
    return img


def lesion_cut(lesion):
    """World coordinates (mm) of the lesion voxel nearest to the lesion's centre of mass, so
    that the cuts pass through the lesion even when it is not convex."""
    voxels = np.argwhere(np.asarray(lesion.dataobj) > 0)
    if voxels.size == 0:
        raise InputError("the lesion has no voxel > 0, so there is nothing to show.")
    world = nib.affines.apply_affine(lesion.affine, voxels)
    centre = world.mean(0)
    return tuple(float(c) for c in world[np.argmin(((world - centre) ** 2).sum(1))])


def lesion_figure(lesion_path, t_path, mask_path, out_png, lesion_id, threshold, n_subjects=None,
                  group=None):
    """Three rows: the lesion on the template, the T map in slices through the lesion
    (|T| <= threshold transparent), a glass brain of the T map beyond the threshold."""
    lesion_figures([(lesion_id, group, lesion_path, t_path, out_png)], mask_path, threshold, n_subjects)


def lesion_figures(items, mask_path, threshold, n_subjects=None):
    """The figure of every (lesion id, group, lesion path, T map path, PNG) of ``items``
    (see lesion_figure), with the mask and the template loaded once."""
    mask = _volume(mask_path, "brain mask")
    template = _template()
    skip_imported_objects_in_collections()
    for lesion_id, group, lesion_path, t_path, out_png in items:
        _draw_lesion_figure(mask, mask_path, template, lesion_path, t_path, out_png, lesion_id, threshold,
                            n_subjects, group)


def _draw_lesion_figure(mask, mask_path, template, lesion_path, t_path, out_png, lesion_id, threshold,
                        n_subjects, group):
    from nilearn import plotting

    t_map = _volume(t_path, f"T map of lesion '{lesion_id}'")
    check_same_grid(t_map, mask, f"T map '{t_path}'", f"the brain mask '{mask_path}'")
    lesion = _volume(lesion_path, f"lesion '{lesion_id}'")
    lesion = nib.Nifti1Image((np.asarray(lesion.dataobj) > 0).astype(np.float32), lesion.affine)
    try:
        cut = lesion_cut(lesion)
    except InputError as err:
        raise InputError(f"lesion '{lesion_id}' ('{lesion_path}'): {err}") from None
    values = np.asarray(t_map.dataobj)
    peak = float(np.abs(values).max())
    beyond = int((np.abs(values) > threshold).sum())
    vmax = max(peak, threshold * 1.05)
    subjects = f", {n_subjects} connectome subjects" if n_subjects else ""
    label = f"lesion {lesion_id}" + (f" (group {group})" if group else "")

    figure = plt.figure(figsize=(12, 11))
    figure.suptitle(f"{label}: lesion network map{subjects}", fontsize=15, fontweight="bold")
    rows = [figure.add_axes((0.01, 0.64, 0.98, 0.28)), figure.add_axes((0.01, 0.33, 0.98, 0.28)),
            figure.add_axes((0.01, 0.02, 0.98, 0.28))]
    plotting.plot_roi(lesion, bg_img=template, cut_coords=cut, figure=figure, axes=rows[0],
                      cmap="autumn", alpha=0.8, colorbar=False, draw_cross=True, black_bg=False,
                      title=f"lesion ({int(np.asarray(lesion.dataobj).sum())} voxels of its own grid), "
                            f"cut at x, y, z = {cut[0]:.0f}, {cut[1]:.0f}, {cut[2]:.0f} mm")
    display = plotting.plot_stat_map(
        t_map, bg_img=template, cut_coords=cut, threshold=threshold, vmax=vmax, cmap="RdBu_r",
        symmetric_cbar=True, colorbar=True, cbar_tick_format="%.0f", figure=figure, axes=rows[1],
        draw_cross=True, black_bg=False,
        title=f"T map, |T| > {threshold:g} shown ({beyond} voxels; peak |T| = {peak:.1f})")
    label_colorbar(display, "T")
    if beyond:
        display = plotting.plot_glass_brain(
            t_map, threshold=threshold, vmax=vmax, plot_abs=False, cmap="RdBu_r", symmetric_cbar=True,
            colorbar=True, cbar_tick_format="%.0f", display_mode="lyrz", figure=figure, axes=rows[2],
            title=f"glass brain: T > {threshold:g} (red) and T < -{threshold:g} (blue)")
        label_colorbar(display, "T")
    else:
        rows[2].axis("off")
        rows[2].text(0.5, 0.5, f"no voxel beyond |T| > {threshold:g} (peak |T| = {peak:.1f})",
                     ha="center", va="center", fontsize=14)
    save_png(figure, out_png)
    log.info("lesion %s: figure %s (peak |T| %.2f, %d voxels beyond %g)", lesion_id, out_png, peak, beyond,
             threshold)


def axial_cuts(mask, n_cuts):
    """``n_cuts`` axial planes (mm) evenly spread over the inner 80 % of the mask's extent,
    the same for the positive and the negative map so that they can be compared."""
    voxels = np.argwhere(np.asarray(mask.dataobj) > 0)
    if voxels.size == 0:
        raise InputError("the brain mask has no voxel > 0.")
    z = nib.affines.apply_affine(mask.affine, voxels)[:, 2]
    low, high = np.percentile(z, [10, 90])
    return [float(round(v)) for v in np.linspace(low, high, n_cuts)]


def sensitivity_figure(pos_path, neg_path, mask_path, out_png, threshold, group=None, n_lesions=None,
                       n_cuts=7):
    """Two rows of axial slices: the % of lesions with T > threshold, and with T < -threshold."""
    from nilearn import plotting

    mask = _volume(mask_path, "brain mask")
    template = _template()
    skip_imported_objects_in_collections()
    cuts = axial_cuts(mask, n_cuts)
    who = f"group {group}" if group else "all lesions"
    if n_lesions:
        who += f" (n = {n_lesions})"
    figure = plt.figure(figsize=(14, 7))
    figure.suptitle(f"Sensitivity maps, {who}", fontsize=15, fontweight="bold")
    rows = [figure.add_axes((0.0, 0.48, 1.0, 0.42)), figure.add_axes((0.0, 0.02, 1.0, 0.42))]
    for axes, path, sign, cmap in ((rows[0], pos_path, ">", "Reds"), (rows[1], neg_path, "<", "Blues")):
        img = map_on_mask(path, "sensitivity map", mask, mask_path)
        percent = nib.Nifti1Image(np.asarray(img.dataobj) * 100.0, img.affine)
        peak = float(np.asarray(percent.dataobj).max())
        limit = f"{'' if sign == '>' else '-'}{threshold:g}"
        title = f"% of lesions with T {sign} {limit} (peak {peak:.0f}%)"
        if peak <= 0:
            axes.axis("off")
            axes.text(0.5, 0.5, f"no voxel where any lesion has T {sign} {limit}", ha="center",
                      va="center", fontsize=14)
            continue
        display = plotting.plot_stat_map(
            percent, bg_img=template, display_mode="z", cut_coords=cuts, threshold=0.5, vmin=0, vmax=100,
            cbar_tick_format="%.0f",
            cmap=cmap, symmetric_cbar=False, colorbar=True, figure=figure, axes=axes, title=title,
            black_bg=False)
        label_colorbar(display, "% of lesions")
    save_png(figure, out_png)
    log.info("sensitivity figure %s (%s)", out_png, who)


def qc_figure(qc_path, out_png, max_bars=60):
    """Voxels of each lesion inside the mask and the fraction outside it (bars, coloured by
    group; histograms when there are more than ``max_bars`` lesions)."""
    import pandas as pd

    table = pd.read_csv(qc_path, sep="\t", dtype={"lesion_id": str, "group": str})
    missing = {"lesion_id", "n_voxels_in_mask", "fraction_outside_mask"} - set(table.columns)
    if missing:
        raise InputError(f"QC table '{qc_path}' lacks the columns {sorted(missing)}.")
    groups = table["group"].fillna("") if "group" in table else pd.Series("", index=table.index)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, min(0.3 * len(table), 20)), 8),
                                         constrained_layout=True)
    figure.suptitle(f"Lesion QC ({len(table)} lesions)", fontsize=14, fontweight="bold")
    outside = table["fraction_outside_mask"].astype(float) * 100
    if len(table) <= max_bars:
        palette = plt.get_cmap("tab10")
        colours = {g: palette(i % 10) for i, g in enumerate(sorted(set(groups)))}
        x = np.arange(len(table))
        top.bar(x, table["n_voxels_in_mask"], color=[colours[g] for g in groups])
        bottom.bar(x, outside, color=[colours[g] for g in groups])
        for axes in (top, bottom):
            axes.set_xticks(x, table["lesion_id"], rotation=90, fontsize=8)
        if len(colours) > 1:
            top.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()],
                       labels=[f"group {g}" for g in colours], fontsize=9)
    else:
        top.hist(table["n_voxels_in_mask"], bins=40, color="tab:blue")
        bottom.hist(outside, bins=40, color="tab:orange")
        top.set_xlabel("mask voxels covered by the lesion")
        bottom.set_xlabel("lesion voxels outside the mask (%)")
        top.set_ylabel("lesions")
    top.set_ylabel("mask voxels covered" if len(table) <= max_bars else "lesions")
    top.set_title("lesion voxels inside the brain mask (mask grid)")
    bottom.set_ylabel("outside the mask (%)" if len(table) <= max_bars else "lesions")
    bottom.set_title("fraction of the lesion outside the brain mask (lesion grid)")
    if len(table) <= max_bars:
        bottom.set_ylim(0, max(5.0, float(outside.max()) * 1.15))
    save_png(figure, out_png)


def lesion_summaries(stats_files, threshold):
    """Per lesion, from the merged sums of every batch (one lesion's maps at a time):
    ({lesion id: (peak |T|, voxels with T > threshold, voxels with T < -threshold)}, mask
    voxels)."""
    from ..lnm.stats import SufficientStats, lesion_maps

    rows, n_voxels = {}, 0
    for npy, info in stats_files:
        stats = SufficientStats.load(npy, info, mmap=True)
        n_voxels = stats.n_voxels
        for index, lesion_id in enumerate(stats.lesion_ids):
            t = lesion_maps(stats, index)["T"]
            rows[lesion_id] = (float(np.abs(t).max()), int((t > threshold).sum()), int((t < -threshold).sum()))
    return rows, n_voxels


def lesion_summary_figure(stats_files, qc_path, out_png, threshold, n_figures=None, cap=None):
    """Every lesion at a glance: its peak |T| and the share of the mask beyond the
    threshold (positive, negative), in sheet order and coloured by group, and the share
    against the lesion's size. The title says how many lesions have a figure of their
    own (``n_figures``, from the cap ``cap``)."""
    import pandas as pd

    table = pd.read_csv(qc_path, sep="\t", dtype={"lesion_id": str, "group": str})
    summaries, n_voxels = lesion_summaries(stats_files, threshold)
    missing = sorted(set(table["lesion_id"]) - set(summaries))
    if missing:
        raise InputError(f"the merged statistics lack lesions {missing[:5]} of the QC table '{qc_path}'; "
                         "delete lnm/stats under outdir and rerun.")
    peak = np.array([summaries[i][0] for i in table["lesion_id"]])
    positive = np.array([summaries[i][1] for i in table["lesion_id"]]) / n_voxels * 100
    negative = np.array([summaries[i][2] for i in table["lesion_id"]]) / n_voxels * 100
    groups = table["group"].fillna("") if "group" in table else pd.Series("", index=table.index)
    palette = plt.get_cmap("tab10")
    colours = {g: palette(i % 10) for i, g in enumerate(sorted(set(groups)))}
    colour = [colours[g] for g in groups]
    x = np.arange(len(table))
    figure, axes = plt.subplots(3, 1, figsize=(12, 11), constrained_layout=True)
    shown = (f"{n_figures} of {len(table)} lesions have a figure of their own (report_lesion_figures: {cap}); "
             "every lesion is here" if n_figures is not None else f"{len(table)} lesions")
    figure.suptitle(f"Every lesion's T map at a glance\n{shown}", fontsize=14, fontweight="bold")
    axes[0].scatter(x, peak, s=12, c=colour)
    axes[0].axhline(threshold, color="grey", linestyle="--", linewidth=1)
    axes[0].set_ylabel("peak |T|")
    axes[0].set_title(f"peak |T| per lesion, in sheet order (dashed: the threshold {threshold:g})")
    axes[1].scatter(x, positive, s=12, c=colour, marker="^", label=f"T > {threshold:g}")
    axes[1].scatter(x, -negative, s=12, c=colour, marker="v", label=f"T < -{threshold:g} (drawn below 0)")
    axes[1].axhline(0, color="grey", linewidth=0.8)
    axes[1].set_ylabel("mask voxels beyond (%)")
    axes[1].set_title("share of the brain mask beyond the threshold, positive above and negative below")
    axes[1].legend(fontsize=9, loc="best")
    for ax in axes[:2]:
        ax.set_xlabel("lesion (sheet order)")
        if len(table) <= 60:
            ax.set_xticks(x, table["lesion_id"], rotation=90, fontsize=7)
    axes[2].scatter(table["n_voxels_in_mask"].astype(float), positive + negative, s=12, c=colour)
    axes[2].set_xscale("log")
    axes[2].set_xlabel("mask voxels covered by the lesion (log scale)")
    axes[2].set_ylabel("mask voxels beyond (%)")
    axes[2].set_title("map extent against lesion size")
    if len(colours) > 1:
        axes[0].legend(handles=[plt.Line2D([], [], marker="o", linestyle="", color=c) for c in colours.values()],
                       labels=[f"group {g}" for g in colours], fontsize=9, loc="best")
    save_png(figure, out_png)
    log.info("summary of %d lesions: %s", len(table), out_png)
