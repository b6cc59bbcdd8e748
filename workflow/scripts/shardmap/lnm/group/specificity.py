"""The specificity test of a study, as two tasks around the permutation tasks.

``prepare_specificity`` gathers the lesion maps of the cases and controls, builds the
design (with the built-in covariates volume and centrality), stores the maps' residuals
tile by tile for the permutation tasks, and computes the observed t (and TFCE).
``finish_specificity`` merges what the permutation tasks found into p maps, the
conjunction with the cases' sensitivity map and the null distribution's table.
"""

from __future__ import annotations

import csv
import logging

import numpy as np

from ...atomic import atomic_open, atomic_path
from ...errors import InputError
from ..nifti import write_map
from .design import BUILT_IN_COVARIATES, build_design, write_design
from .design_maps import centrality
from .glm import VOXEL_TILE, PreparedGLM, observed_t, prepare_glm, residualise_tile
from .permutations import exceedance_thresholds, merge_null_shards, tile_count

log = logging.getLogger(__name__)


def prepare_specificity(design_maps, selected, sheet_covariates, covariate_names, mask, tfce, design_path,
                        residuals_path, glm_path):
    """Write the design table, the residuals (n_tiles, n_lesions, VOXEL_TILE) and the GLM file.

    Parameters
    ----------
    design_maps : iterable of design_maps.DesignMap, one for each selected lesion (any order).
    selected : list of (lesion, 1 for a case or 0) from design.select_design_lesions.
    sheet_covariates : dict name -> values (design.sheet_covariate_values).
    covariate_names : every covariate, in the design's column order (sheet or built-in).
    mask : nifti.BrainMask.
    """
    n_lesions, n_voxels = len(selected), mask.n_voxels
    n_tiles = tile_count(n_voxels)
    row_of = {les.lesion_id: row for row, (les, _) in enumerate(selected)}
    is_case = np.array([case for _, case in selected], dtype=bool)
    built_in = {name: np.full(n_lesions, np.nan) for name in BUILT_IN_COVARIATES if name in covariate_names}
    seen = np.zeros(n_lesions, dtype=bool)
    padded = np.zeros(n_tiles * VOXEL_TILE)
    with atomic_path(residuals_path) as tmp:
        residuals = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float64,
                                              shape=(n_tiles, n_lesions, VOXEL_TILE))
        for item in design_maps:
            row = row_of[item.lesion_id]
            seen[row] = True
            padded[:n_voxels] = item.values
            residuals[:, row, :] = padded.reshape(n_tiles, VOXEL_TILE)
            if built_in:
                if item.positions is None:
                    raise InputError(f"covariate(s) {sorted(built_in)} need the mask of lesion '{item.lesion_id}', "
                                     "but the lesion map sheet gives no path for it; add the path column "
                                     "or drop these covariates.")
                if "volume" in built_in:
                    built_in["volume"][row] = item.positions.size
                if "centrality" in built_in:
                    built_in["centrality"][row] = centrality(item.values, item.positions)
        if not seen.all():
            missing = [les.lesion_id for (les, _), ok in zip(selected, seen) if not ok]
            raise InputError(f"no map was found for lesion(s) {missing[:5]} of the design")
        covariates = {name: sheet_covariates[name] if name in sheet_covariates else built_in[name]
                      for name in covariate_names}
        design = build_design(selected, covariates)
        glm = prepare_glm(design)
        t = np.empty(n_tiles * VOXEL_TILE)
        for tile in range(n_tiles):
            block = residualise_tile(glm, np.array(residuals[tile]))
            residuals[tile] = block
            t[tile * VOXEL_TILE:(tile + 1) * VOXEL_TILE] = observed_t(glm, block)
        residuals.flush()
        del residuals
    t = t[:n_voxels]
    tfce_values = None
    if tfce:
        from .tfce import tfce_of_map

        tfce_values = tfce_of_map(t, mask)
    write_design(design_path, design)
    arrays = {"x": glm.x, "basis": glm.basis, "dof": np.array(glm.dof), "t": t,
              "mask_fingerprint": np.array(mask.fingerprint())}
    if tfce_values is not None:
        arrays["tfce"] = tfce_values
    with atomic_open(glm_path) as handle:
        np.savez(handle, **arrays)
    log.info("design: %d cases, %d controls, covariates %s, %d voxels in %d tiles, max |t| %.3f",
             int(is_case.sum()), int((~is_case).sum()), covariate_names, n_voxels, n_tiles, np.abs(t).max())
    return design


def log_unused_columns(sheet, is_map_sheet, covariates):
    """List once in the log the sheet's columns that the GLM does not use."""
    from ..sheets import read_lesion_maps, read_lesions

    rows = read_lesion_maps(sheet, check_files=False) if is_map_sheet else read_lesions(sheet, check_files=False)
    unused = sorted({name for row in rows for name, _ in row.columns} - set(covariates))
    if unused:
        log.info("columns of '%s' not used by the GLM: %s", sheet, ", ".join(unused))


def design_map_source(design, spec, mask, lesion_rules, sheet, lesion_maps, stats_files, batch_files,
                      degree_path=None):
    """(selected, DesignMap iterator) for the rule's parameters.

    Parameters
    ----------
    design : (lesion_id, group, 1 for a case or 0) of each lesion of the design, in order.
    spec : the lnm.specificity config keys used here (map).
    mask : nifti.BrainMask.
    lesion_rules : the lnm config keys of lesions.LesionRules (for lesions of a map sheet).
    lesion_maps : (lesion_id, map, group, lesion path or None, T map or None) rows of the
        lesion map sheet, or empty when the maps come from this run's ``stats_files`` and
        ``batch_files``.
    degree_path : the degree map, for a ``map`` with the degree regressed out.
    """
    from ..lesions import LesionRules
    from ..sheets import Lesion, LesionMap
    from .design_maps import maps_from_sheet, maps_from_this_run

    selected = [(Lesion(lesion_id, "", group), int(case)) for lesion_id, group, case in design]
    if lesion_maps:
        rows = [LesionMap(lesion_id, map_path, group, path, t_map_path=t_map)
                for lesion_id, map_path, group, path, t_map in lesion_maps]
        return selected, maps_from_sheet(rows, mask, LesionRules.from_config(lesion_rules), sheet)
    lesion_ids = [lesion_id for lesion_id, _, _ in design]
    degree = None
    if degree_path is not None:
        from ..nifti import values_on_mask

        degree = values_on_mask(degree_path, mask, "degree map")
    return selected, maps_from_this_run(stats_files, batch_files, lesion_ids, spec["map"], degree)


def prepare_specificity_files(design, sheet_covariates, spec, mask_path, lesion_rules, sheet, lesion_maps,
                              stats_files, batch_files, outputs, degree_path=None):
    """prepare_specificity from what the rule passes (see design_map_source); ``spec`` has
    map, covariates and tfce; ``outputs`` has design, residuals and glm paths."""
    from ..nifti import load_mask

    mask = load_mask(mask_path)
    selected, source = design_map_source(design, spec, mask, lesion_rules, sheet, lesion_maps, stats_files,
                                         batch_files, degree_path)
    return prepare_specificity(source, selected, sheet_covariates, list(spec["covariates"]), mask, spec["tfce"],
                               outputs.design, outputs.residuals, outputs.glm)


def cases_sensitivity(design_maps, case_ids, threshold, n_voxels):
    """(positive, negative) sensitivity maps of the cases: the fraction of cases whose T map
    is above ``threshold`` (below -``threshold``) at each voxel."""
    above = np.zeros(n_voxels, dtype=np.int64)
    below = np.zeros(n_voxels, dtype=np.int64)
    wanted = set(case_ids)
    seen = 0
    for item in design_maps:
        if item.lesion_id in wanted:
            above += item.t_map > threshold
            below += item.t_map < -threshold
            seen += 1
    if seen != len(wanted):
        raise InputError(f"found the maps of {seen} of the {len(wanted)} cases")
    return above / seen, below / seen


def cases_sensitivity_files(design, spec, mask_path, lesion_rules, sheet, lesion_maps, stats_files, batch_files,
                            threshold, outputs):
    """Write the cases' sensitivity maps (``outputs`` has pos and neg) from what the rule passes."""
    from ..nifti import load_mask

    mask = load_mask(mask_path)
    cases = [row for row in design if row[2]]  # only the cases' maps are read
    case_ids = {lesion_id for lesion_id, _, _ in cases}
    spec = dict(spec, map="T")  # only their T maps: the sensitivity threshold applies to T
    _, source = design_map_source(cases, spec, mask, lesion_rules, sheet,
                                  [row for row in lesion_maps if row[0] in case_ids], stats_files, batch_files)
    positive, negative = cases_sensitivity(source, case_ids, threshold, mask.n_voxels)
    write_map(outputs.pos, positive, mask, description=f"fraction of cases with T > {threshold:g}")
    write_map(outputs.neg, negative, mask, description=f"fraction of cases with T < -{threshold:g}")
    log.info("%d cases; at most %.0f %% above %g, %.0f %% below -%g", len(case_ids), 100 * positive.max(), threshold,
             100 * negative.max(), threshold)


def load_prepared(glm_path):
    """(PreparedGLM, dict of the observed maps) from prepare_specificity's GLM file."""
    with np.load(glm_path) as data:
        glm = PreparedGLM(data["x"], data["basis"], int(data["dof"]))
        observed = {name: data[name] for name in data.files if name in ("t", "tfce", "mask_fingerprint")}
    return glm, observed


def permutation_task(residuals_path, glm_path, mask, seed, n_permutations, perm_range, chunk, n_chunks, tfce,
                     out_path):
    """Run one permutation task (permutations ``perm_range``, voxel chunk ``chunk`` of
    ``n_chunks``) on prepare_specificity's files and save its permutations.NullShard."""
    from .permutations import chunk_tiles, run_null_shard

    glm, observed = load_prepared(glm_path)
    residuals = np.load(residuals_path, mmap_mode="r")
    tiles = chunk_tiles(residuals.shape[0], n_chunks, chunk)
    enhance = None
    if tfce:
        from .tfce import tfce_of_map

        def enhance(values):
            return tfce_of_map(values, mask)

    shard = run_null_shard(residuals, glm, np.abs(observed["t"]), observed["t"].size, seed, n_permutations,
                           perm_range, tiles, enhance)
    shard.save(out_path)
    log.info("permutations %d-%d, voxels %d-%d: largest max |t| %.3f", perm_range[0], perm_range[1] - 1,
             shard.voxel_start, shard.voxel_stop - 1, shard.max_t.max())
    return shard


def fwe_p(observed_abs, null_max):
    """Family-wise error corrected p of each voxel: the share of permutations (counting the
    unpermuted data once) whose maximum over voxels reaches the voxel's statistic."""
    ordered = np.sort(null_max)
    reached = ordered.size - np.searchsorted(ordered, exceedance_thresholds(observed_abs), side="left")
    return (1.0 + reached) / (1.0 + ordered.size)


def fwe_threshold(null_max, alpha):
    """The statistic a voxel must exceed for FWE p < alpha under fwe_p (None when no value
    can reach it with this many permutations)."""
    ordered = np.sort(null_max)[::-1]
    # p = (1 + k) / (1 + N) < alpha for k permutations reaching the statistic
    allowed = int(np.ceil(alpha * (ordered.size + 1) - 1)) - 1
    if allowed < 0:
        return None
    return float(ordered[allowed]) if allowed < ordered.size else 0.0


def conjunction(t, p_fwe, sensitivity_pos, sensitivity_neg, alpha, fraction):
    """sign(t) where the voxel is FWE-significant and in the cases' sensitivity map of the
    same sign (at least ``fraction`` of the cases beyond the threshold), 0 elsewhere."""
    significant = p_fwe < alpha
    positive = significant & (t > 0) & (sensitivity_pos >= fraction)
    negative = significant & (t < 0) & (sensitivity_neg >= fraction)
    return positive.astype(np.float64) - negative.astype(np.float64)


def finish_specificity(glm_path, shard_paths, sensitivity_paths, n_permutations, alpha, sensitivity_fraction, mask,
                       paths):
    """Merge the permutation tasks (one task's file at a time) and write the maps and the
    null table.

    ``sensitivity_paths`` has the cases' sensitivity maps (pos, neg); ``paths`` maps output
    names to files: tstat, p_uncorrected, p_fwe, conjunction, null_max, and with TFCE also
    tfce and p_fwe_tfce.
    """
    from ..nifti import values_on_mask
    from .permutations import NullShard

    _, observed = load_prepared(glm_path)
    if str(observed["mask_fingerprint"]) != mask.fingerprint():
        raise InputError(f"the specificity inputs were prepared on another brain mask than '{mask.path}'; "
                         "re-run rule lnm_specificity_prepare.")
    t = observed["t"]
    null_t, exceed, null_tfce = merge_null_shards((NullShard.load(path) for path in shard_paths), n_permutations,
                                                  t.size)
    if ("tfce" in observed) != (null_tfce is not None) or ("tfce" in paths) != ("tfce" in observed):
        raise ValueError("lnm.specificity.tfce changed between the tasks; re-run the specificity rules")
    p_uncorrected = (1.0 + exceed) / (1.0 + n_permutations)
    p_fwe = fwe_p(np.abs(t), null_t)
    maps = {"tstat": t, "p_uncorrected": p_uncorrected, "p_fwe": p_fwe}
    p_for_conjunction = p_fwe
    if null_tfce is not None:
        maps["tfce"] = observed["tfce"]
        maps["p_fwe_tfce"] = p_for_conjunction = fwe_p(np.abs(observed["tfce"]), null_tfce)
    positive = values_on_mask(sensitivity_paths["pos"], mask, "the cases' positive sensitivity map")
    negative = values_on_mask(sensitivity_paths["neg"], mask, "the cases' negative sensitivity map")
    maps["conjunction"] = conjunction(t, p_for_conjunction, positive, negative, alpha, sensitivity_fraction)
    if max(positive.max(), negative.max()) < sensitivity_fraction:
        log.warning("no voxel is in the cases' sensitivity map (at most %.0f %% of the cases beyond the threshold, "
                    "%.0f %% needed), so the conjunction is empty; with maps made elsewhere, check that they are "
                    "T maps or give the t_map column", 100 * max(positive.max(), negative.max()),
                    100 * sensitivity_fraction)
    for name, values in maps.items():
        write_map(paths[name], values, mask, description=f"shardmap specificity {name}")
    with atomic_open(paths["null_max"], "w") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["permutation", "max_abs_t"] + (["max_abs_tfce"] if null_tfce is not None else []))
        for index in range(n_permutations):
            row = [index, f"{null_t[index]:.10g}"]
            if null_tfce is not None:
                row.append(f"{null_tfce[index]:.10g}")
            writer.writerow(row)
    log.info("%d permutations; max |t| %.3f; %d voxel(s) FWE p < %g; %d in the conjunction", n_permutations,
             np.abs(t).max(), int((p_for_conjunction < alpha).sum()), alpha, int(np.abs(maps["conjunction"]).sum()))
    return maps
