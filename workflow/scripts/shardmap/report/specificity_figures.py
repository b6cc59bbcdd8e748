"""Figures of the specificity test (cases against controls) of the lesion network mapping
arm, drawn with nilearn on the MNI152 template.

- ``specificity_t_figure``: the t map of cases > controls in axial slices, only where the
  family-wise error corrected p is below alpha.
- ``conjunction_figure``: the voxels both FWE-significant and in the cases' sensitivity
  map, positive (red) and negative (blue), in axial slices.
- ``null_distribution_figure``: the permutation maxima of |t| (and of |TFCE| when it was
  computed) as histograms, with the observed maximum and the FWE threshold.
- ``specificity_figures``: the three at once, as the report's rule draws them.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InputError
from .lnm_figures import _template, _volume, axial_cuts, check_same_grid, map_on_mask
from .plotting import label_colorbar, plt, save_png, skip_imported_objects_in_collections

log = logging.getLogger(__name__)

N_CUTS = 7
NULL_T_COLUMN = "max_abs_t"
NULL_TFCE_COLUMN = "max_abs_tfce"
NULL_COLUMNS = ("permutation", NULL_T_COLUMN)


def _nothing_to_show(axes, text):
    axes.axis("off")
    axes.text(0.5, 0.5, text, ha="center", va="center", fontsize=14)


def _slices_figure(title):
    """A figure with a title and one wide axes for a row of axial slices."""
    figure = plt.figure(figsize=(14, 4.2))
    figure.suptitle(title, fontsize=14, fontweight="bold")
    return figure, figure.add_axes((0.0, 0.02, 1.0, 0.80))


def specificity_t_figure(t_path, p_path, mask_path, out_png, alpha, p_label="FWE"):
    """Axial slices of the t map (cases > controls) where ``p_path``'s p < ``alpha`` (inside
    the mask: the p map is 0 outside it), t elsewhere transparent; symmetric colour bar."""
    mask = _volume(mask_path, "brain mask")
    t_img = map_on_mask(t_path, "specificity t map", mask, mask_path)
    p_img = map_on_mask(p_path, f"specificity {p_label} p map", mask, mask_path)
    inside = np.asarray(mask.dataobj) > 0
    t = np.asarray(t_img.dataobj)
    significant = inside & (np.asarray(p_img.dataobj) < alpha)
    n_significant = int(significant.sum())
    n_positive = int((significant & (t > 0)).sum())
    rule = f"{p_label} p < {alpha:g}"
    figure, axes = _slices_figure(f"Specificity, cases > controls: {n_significant} voxel"
                                  f"{'' if n_significant == 1 else 's'} with {rule}")
    shown = np.abs(t[significant])
    shown = shown[shown > 0]
    if shown.size == 0:
        _nothing_to_show(axes, f"no voxel with {rule}")
    else:
        from nilearn import plotting

        template = _template()
        skip_imported_objects_in_collections()
        cuts = axial_cuts(mask, N_CUTS)
        kept = nib.Nifti1Image(np.where(significant, t, 0).astype(np.float32), t_img.affine)
        smallest, peak = float(shown.min()), float(shown.max())
        display = plotting.plot_stat_map(
            kept, bg_img=template, display_mode="z", cut_coords=cuts, threshold=smallest * 0.999,
            vmax=peak, cmap="RdBu_r", symmetric_cbar=True, colorbar=True, cbar_tick_format="%.1f",
            figure=figure, axes=axes, black_bg=False,
            title=f"t where {rule}: {n_positive} positive (red), {n_significant - n_positive} negative (blue); "
                  f"|t| from {smallest:.2f} to {peak:.2f}")
        label_colorbar(display, "t (cases > controls)")
    save_png(figure, out_png)
    log.info("specificity t figure %s (%d voxels with %s)", out_png, n_significant, rule)


def conjunction_figure(conjunction_path, mask_path, out_png, alpha, fraction, p_label="FWE"):
    """Axial slices of the conjunction map: +1 (red) where t > 0, -1 (blue) where t < 0, at
    voxels with FWE p < ``alpha`` that are in the cases' sensitivity map of the same sign
    (at least ``fraction`` of the cases beyond the sensitivity threshold)."""
    mask = _volume(mask_path, "brain mask")
    img = map_on_mask(conjunction_path, "conjunction map", mask, mask_path)
    values = np.where(np.asarray(mask.dataobj) > 0, np.asarray(img.dataobj), 0)
    n_positive, n_negative = int((values > 0).sum()), int((values < 0).sum())
    rule = f"{p_label} p < {alpha:g} and in >= {fraction * 100:g} % of the cases' sensitivity map"
    figure, axes = _slices_figure(f"Conjunction: {n_positive} positive (red) and {n_negative} negative (blue) "
                                  f"voxels\n{rule}")
    if n_positive + n_negative == 0:
        _nothing_to_show(axes, f"no voxel with {rule}")
    else:
        from nilearn import plotting

        template = _template()
        skip_imported_objects_in_collections()
        cuts = axial_cuts(mask, N_CUTS)
        signs = nib.Nifti1Image(np.sign(values).astype(np.float32), img.affine)
        plotting.plot_stat_map(
            signs, bg_img=template, display_mode="z", cut_coords=cuts, threshold=0.5, vmax=1.0, cmap="bwr",
            symmetric_cbar=True, colorbar=False, figure=figure, axes=axes, black_bg=False,
            title="red: cases > controls, blue: cases < controls")
    save_png(figure, out_png)
    log.info("conjunction figure %s (%d positive, %d negative voxels)", out_png, n_positive, n_negative)


def read_null_table(null_tsv):
    """{column: values} of the permutation maxima table; InputError naming the file unless
    it has the columns permutation and max_abs_t and at least one row of finite numbers."""
    path = Path(null_tsv)
    try:
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t"))
    except OSError as err:
        raise InputError(f"null distribution table '{path}' could not be read ({err}); "
                         "re-run the specificity step.") from err
    header = rows[0] if rows else []
    missing = [name for name in NULL_COLUMNS if name not in header]
    if missing:
        raise InputError(f"null distribution table '{path}' lacks the column(s) {missing} (header: {header}); "
                         "delete it and re-run the specificity step.")
    if len(rows) < 2:
        raise InputError(f"null distribution table '{path}' has no rows (no permutation); "
                         "delete it and re-run the specificity step.")
    columns = {}
    for name in (NULL_T_COLUMN, NULL_TFCE_COLUMN):
        if name not in header:
            continue
        index = header.index(name)
        try:
            values = np.array([float(row[index]) for row in rows[1:]])
        except (IndexError, ValueError) as err:
            raise InputError(f"null distribution table '{path}': column '{name}' has a missing or non-numeric "
                             f"value ({err}); delete it and re-run the specificity step.") from None
        if not np.isfinite(values).all():
            raise InputError(f"null distribution table '{path}': column '{name}' has values that are not "
                             "finite; delete it and re-run the specificity step.")
        columns[name] = values
    return columns


def _null_panel(axes, null, observed, alpha, statistic):
    from ..lnm.group.specificity import fwe_threshold

    threshold = fwe_threshold(null, alpha)  # exactly where FWE p drops below alpha
    axes.hist(null, bins=int(np.clip(np.sqrt(null.size), 10, 60)), color="silver", edgecolor="grey")
    axes.axvline(observed, color="tab:red", linewidth=2, label=f"observed max {statistic} = {observed:.2f}")
    if threshold is None:
        axes.set_title(f"{statistic}: {null.size} permutations are too few for FWE p < {alpha:g}")
    else:
        axes.axvline(threshold, color="black", linestyle="--", linewidth=1.5,
                     label=f"FWE threshold (p < {alpha:g} beyond it) = {threshold:.2f}")
        beyond = "beyond" if observed > threshold else "not beyond"
        axes.set_title(f"{statistic}: {null.size} permutations, the observed maximum is {beyond} the threshold")
    axes.set_xlabel(f"max {statistic} over the mask in one permutation")
    axes.set_ylabel("permutations")
    axes.legend(fontsize=9, loc="upper right")


def _observed_max_abs(path, what):
    return float(np.abs(np.asarray(_volume(path, what).dataobj)).max())


def null_distribution_figure(null_tsv, t_path, out_png, alpha, tfce_path=None):
    """Histogram of the permutation maxima of |t|, with the observed maximum |t| (solid) and
    the FWE threshold (dashed: the value beyond which FWE p < alpha); a second panel for
    TFCE when the table has max_abs_tfce and ``tfce_path`` is given."""
    columns = read_null_table(null_tsv)
    panels = [(columns[NULL_T_COLUMN], _observed_max_abs(t_path, "specificity t map"), "|t|")]
    if tfce_path is not None and NULL_TFCE_COLUMN in columns:
        t_img, tfce_img = _volume(t_path, "specificity t map"), _volume(tfce_path, "specificity TFCE map")
        check_same_grid(tfce_img, t_img, f"TFCE map '{tfce_path}'", f"the t map '{t_path}'")
        panels.append((columns[NULL_TFCE_COLUMN], float(np.abs(np.asarray(tfce_img.dataobj)).max()), "|TFCE|"))
    elif tfce_path is not None:
        log.warning("a TFCE map '%s' was given but the null table '%s' has no %s column: no TFCE panel",
                    tfce_path, null_tsv, NULL_TFCE_COLUMN)
    figure, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 5), constrained_layout=True,
                                squeeze=False)
    figure.suptitle(f"Specificity: null of the maximum (FWE, alpha = {alpha:g})",
                    fontsize=14, fontweight="bold")
    for ax, (null, observed, statistic) in zip(axes[0], panels, strict=True):
        _null_panel(ax, null, observed, alpha, statistic)
    save_png(figure, out_png)
    log.info("null distribution figure %s (%d permutations)", out_png, panels[0][0].size)


def specificity_figures(paths, mask_path, outputs, alpha, fraction, p_label=None):
    """Draw the three specificity figures.

    ``paths``: tstat, p (the p map the significance is read from: p_fwe, or p_fwe_tfce when
    TFCE was on), conjunction, null_max and, optionally, tfce. ``outputs``: tstat,
    conjunction, null (PNG paths). ``p_label`` names the p map in the figures; by default
    "TFCE FWE" when ``paths`` has tfce, else "FWE".
    """
    tfce = paths.get("tfce")
    if p_label is None:
        p_label = "TFCE FWE" if tfce else "FWE"
    specificity_t_figure(paths["tstat"], paths["p"], mask_path, outputs["tstat"], alpha, p_label=p_label)
    conjunction_figure(paths["conjunction"], mask_path, outputs["conjunction"], alpha, fraction, p_label=p_label)
    null_distribution_figure(paths["null_max"], paths["tstat"], outputs["null"], alpha, tfce_path=tfce)
