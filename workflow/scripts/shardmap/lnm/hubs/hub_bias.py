"""How much the lesion maps resemble the connectome's degree map (the hub-bias control).

A lesion network map partly reflects the connectome's hubs whatever the lesion (van den
Heuvel et al., Nature Neuroscience 2025). The report states, per lesion, the spatial
Pearson correlation of its AvgR_Fz map with the degree map over the mask voxels outside
the lesion (its own voxels correlate with the seed by construction) and the lesion
site's own degree; per group map, the correlation over the whole mask. Optionally the
degree map is regressed out of each lesion's maps (``residual_maps``).
"""

from __future__ import annotations

import numpy as np

from ...errors import InputError
from ..lesions import LesionBatch
from ..residual_maps import outside
from ..stats import SufficientStats, lesion_maps
from .tables import write_table

HUB_BIAS_COLUMNS = ["kind", "lesion_id", "group", "map", "r_with_degree", "n_voxels_compared",
                    "site_mean_degree", "site_degree_percentile"]


def spatial_correlation(a, b):
    """Pearson r of two maps over their voxels; NaN where either map is constant."""
    a = np.asarray(a, dtype=np.float64) - np.mean(a)
    b = np.asarray(b, dtype=np.float64) - np.mean(b)
    denominator = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / denominator) if denominator > 0 else float("nan")


def site_degree(degree, positions, weights):
    """The lesion site's weighted mean degree and its percentile among all mask voxels."""
    mean = float(np.average(degree[positions], weights=weights))
    return mean, float(100.0 * np.mean(degree < mean))


def lesion_rows(stats_files, batch_files, degree, groups):
    """One row per lesion: r of its AvgR_Fz map with ``degree`` outside the lesion, and the
    lesion site's mean degree. ``stats_files``: (npy, json) of each batch's merged sums,
    ``batch_files``: the same batches' prepared lesions, ``groups``: lesion id -> group."""
    rows = []
    for (npy, info), batch_path in zip(stats_files, batch_files):
        stats = SufficientStats.load(npy, info, mmap=True)
        batch = LesionBatch.load(batch_path)
        if list(batch.lesion_ids) != list(stats.lesion_ids):
            raise InputError(f"lesion batch '{batch_path}' and statistics '{info}' list different lesions; "
                             "delete both and rerun.")
        for index, lesion_id in enumerate(stats.lesion_ids):
            positions = batch.positions_of(index)
            keep = outside(stats.n_voxels, positions)
            fz = lesion_maps(stats, index)["AvgR_Fz"]
            mean, percentile = site_degree(degree, positions, batch.weights_of(index))
            rows.append({"kind": "lesion", "lesion_id": lesion_id, "group": groups.get(lesion_id) or "",
                         "map": "AvgR_Fz", "r_with_degree": spatial_correlation(fz[keep], degree[keep]),
                         "n_voxels_compared": int(keep.sum()), "site_mean_degree": mean,
                         "site_degree_percentile": percentile})
    return rows


def group_rows(group_maps, degree):
    """One row per group map: ``group_maps`` maps (group label or None, map name) -> values."""
    return [{"kind": "group_map", "lesion_id": "", "group": label or "all", "map": name,
             "r_with_degree": spatial_correlation(values, degree), "n_voxels_compared": int(degree.size),
             "site_mean_degree": "", "site_degree_percentile": ""}
            for (label, name), values in group_maps.items()]


def write_hub_bias_table(stats_files, batch_files, groups, degree_path, group_map_paths, mask_path, out_path):
    """Write ``lnm/qc/hub_bias.tsv``. ``group_map_paths``: (group label or None, map name) -> NIfTI."""
    from ..nifti import load_mask, values_on_mask

    mask = load_mask(mask_path)
    degree = values_on_mask(degree_path, mask, "degree map")
    group_maps = {key: values_on_mask(path, mask, "group map") for key, path in group_map_paths.items()}
    rows = lesion_rows(stats_files, batch_files, degree, groups) + group_rows(group_maps, degree)
    write_table(out_path, rows, HUB_BIAS_COLUMNS)
    return rows
