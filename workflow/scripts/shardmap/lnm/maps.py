"""Per-lesion map files and group maps over lesions.

Group maps are streamed lesion by lesion from the merged statistics of every batch,
so their memory is a few voxel-length vectors whatever the number of lesions.
"""

from __future__ import annotations

import numpy as np

from .map_names import DEGREE_RESIDUAL_MAP_NAMES, MAP_NAMES
from .nifti import write_map
from .stats import SufficientStats, lesion_maps


def write_lesion_maps(stats, lesion_id, mask, paths, degree=None, positions=None):
    """Write the AvgR, AvgR_Fz and T maps of one lesion. ``paths`` maps name -> file.

    With ``degree`` (the mask-ordered degree map) and the lesion's mask ``positions``, also
    the AvgR_Fz and T maps with the degree map regressed out (fitted outside the lesion).
    """
    if lesion_id not in stats.lesion_ids:
        raise KeyError(f"lesion '{lesion_id}' is not in these statistics ({stats.lesion_ids[:5]}...)")
    index = stats.lesion_ids.index(lesion_id)
    maps = lesion_maps(stats, index)
    n = int(stats.n[index])
    names = MAP_NAMES
    if degree is not None:
        from .residual_maps import outside, residual_map

        fit_where = outside(stats.n_voxels, positions)
        for name in DEGREE_RESIDUAL_MAP_NAMES:
            maps[name] = residual_map(maps, name, degree, fit_where, f"lesion '{lesion_id}'")
        names = MAP_NAMES + DEGREE_RESIDUAL_MAP_NAMES
    for name in names:
        write_map(paths[name], maps[name], mask, description=f"shardmap {name} n={n}")


class GroupAccumulator:
    """Counts of lesions above/below the threshold and the running sum of AvgR_Fz."""

    def __init__(self, n_voxels, threshold):
        self.threshold = float(threshold)
        self.n_lesions = 0
        self.above = np.zeros(n_voxels, dtype=np.int64)
        self.below = np.zeros(n_voxels, dtype=np.int64)
        self.sum_fz = np.zeros(n_voxels)

    def add(self, maps):
        self.n_lesions += 1
        self.above += maps["T"] > self.threshold
        self.below += maps["T"] < -self.threshold
        self.sum_fz += maps["AvgR_Fz"]

    def maps(self):
        n = max(self.n_lesions, 1)
        return {"sensitivity_pos": self.above / n, "sensitivity_neg": self.below / n,
                "mean_AvgR_Fz": self.sum_fz / n}


def group_maps(stats_files, groups, threshold, n_voxels):
    """Stream every lesion of every batch into group accumulators.

    Parameters
    ----------
    stats_files : list of (npy, json) pairs of merged batch statistics.
    groups : dict lesion_id -> group label (or None), for every lesion.
    threshold : |T| threshold of the sensitivity maps.

    Returns
    -------
    dict: None -> maps over all lesions; label -> maps over that group's lesions.
    """
    accumulators = {None: GroupAccumulator(n_voxels, threshold)}
    for label in sorted({g for g in groups.values() if g is not None}):
        accumulators[label] = GroupAccumulator(n_voxels, threshold)
    for npy, info in stats_files:
        stats = SufficientStats.load(npy, info, mmap=True)
        for index, lesion_id in enumerate(stats.lesion_ids):
            maps = lesion_maps(stats, index)
            accumulators[None].add(maps)
            if groups.get(lesion_id) is not None:
                accumulators[groups[lesion_id]].add(maps)
    return {label: acc.maps() for label, acc in accumulators.items()}


def write_group_maps(result, mask, paths):
    """Write group maps; ``paths`` maps (group label or None, map name) -> file."""
    for (label, name), path in paths.items():
        write_map(path, result[label][name], mask, description=f"shardmap {name}")


def write_batch_lesion_map_files(stats_npy, stats_json, lesion_ids, mask_path, paths, batch_path=None,
                                 degree_path=None):
    """Write the AvgR, AvgR_Fz and T maps of ``lesion_ids`` (the lesions of one batch) from
    the batch's merged statistics, read once through a memory map; ``paths`` maps
    (lesion id, map name) -> file. With ``degree_path`` (and the prepared ``batch_path``,
    for the lesions' voxels) also the maps with the degree map regressed out."""
    from .nifti import load_mask, values_on_mask

    mask = load_mask(mask_path)
    stats = SufficientStats.load(stats_npy, stats_json, mmap=True)
    degree = batch = None
    if degree_path is not None:
        from .lesions import LesionBatch

        degree = values_on_mask(degree_path, mask, "degree map")
        batch = LesionBatch.load(batch_path)
    for lesion_id in lesion_ids:
        names = MAP_NAMES + (DEGREE_RESIDUAL_MAP_NAMES if degree is not None else ())
        positions = batch.positions_of(batch.lesion_ids.index(lesion_id)) if batch is not None else None
        write_lesion_maps(stats, lesion_id, mask, {name: paths[(lesion_id, name)] for name in names},
                          degree, positions)


def write_group_map_files(stats_files, groups, threshold, mask_path, paths):
    """Compute the group maps from merged batch statistics and write them to ``paths``
    ((group label or None, map name) -> file)."""
    from .nifti import load_mask

    mask = load_mask(mask_path)
    write_group_maps(group_maps(stats_files, groups, threshold, mask.n_voxels), mask, paths)
