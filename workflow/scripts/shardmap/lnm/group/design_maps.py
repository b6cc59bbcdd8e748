"""Where the lesion maps of the specificity GLM come from.

Either this run mapped the lesions (the merged statistics of each lesion batch, and the
batch files that hold each lesion's voxels), or the maps were made elsewhere and are
listed in a lesion map sheet (lnm.specificity.maps): NIfTI maps on any grid, resampled to
the mask, with the lesion masks optional. Both yield, lesion by lesion, a ``DesignMap``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import InputError


@dataclass
class DesignMap:
    lesion_id: str
    values: np.ndarray  # (n_voxels,) the map that enters the GLM
    t_map: np.ndarray  # (n_voxels,) the map the sensitivity threshold applies to
    positions: np.ndarray | None  # mask positions of the lesion's voxels, if known


def maps_from_this_run(stats_files, batch_files, lesion_ids, map_name, degree=None):
    """DesignMap of each of ``lesion_ids`` from the merged batch statistics (pairs of npy and
    json) and the prepared lesion batches (npz), which list the same batches in order.

    A ``map_name`` of DEGREE_RESIDUAL_MAP_NAMES is that map with ``degree`` (the
    mask-ordered degree map) regressed out, fitted outside the lesion's voxels.
    """
    from ..lesions import LesionBatch
    from ..map_names import DEGREE_RESIDUAL_MAP_NAMES
    from ..residual_maps import outside, residual_map
    from ..stats import SufficientStats, lesion_maps

    residual = map_name in DEGREE_RESIDUAL_MAP_NAMES
    if residual and degree is None:
        raise ValueError(f"the map {map_name} needs the degree map")

    wanted = set(lesion_ids)
    for (npy, info), batch_file in zip(stats_files, batch_files):
        stats = SufficientStats.load(npy, info, mmap=True)
        batch = LesionBatch.load(batch_file)
        for index, lesion_id in enumerate(stats.lesion_ids):
            if lesion_id not in wanted:
                continue
            maps = lesion_maps(stats, index)
            positions = batch.positions_of(batch.lesion_ids.index(lesion_id))
            if residual:
                values = residual_map(maps, map_name, degree, outside(stats.n_voxels, positions),
                                      f"lesion '{lesion_id}'")
            else:
                values = maps[map_name]
            yield DesignMap(lesion_id, values, maps["T"], positions)


def maps_from_sheet(lesion_maps, mask, lesion_rules, sheet):
    """DesignMap of each sheets.LesionMap, its map resampled to ``mask`` (nifti.BrainMask)
    and, where the sheet gives the lesion's mask, its voxels taken onto the mask grid under
    ``lesion_rules`` (lesions.LesionRules). The sensitivity threshold applies to the
    lesion's T map where the sheet gives one (column t_map), else to its map."""
    from ..lesions import lesion_on_mask
    from ..nifti import values_on_mask
    from ..sheets import Lesion

    mask_volume = mask.to_volume(True, fill=False, dtype=bool)
    for item in lesion_maps:
        values = values_on_mask(item.map_path, mask, f"map of lesion '{item.lesion_id}' (sheet '{sheet}')")
        t_map = values
        if item.t_map_path is not None:
            t_map = values_on_mask(item.t_map_path, mask, f"T map of lesion '{item.lesion_id}' (sheet '{sheet}')")
        positions = None
        if item.path is not None:
            lesion = Lesion(item.lesion_id, item.path, item.group)
            positions = lesion_on_mask(lesion, mask, mask_volume, lesion_rules).mask_positions
        yield DesignMap(item.lesion_id, values, t_map, positions)


def centrality(values, positions):
    """The mean of a lesion's map outside the lesion's own voxels (lnm-toolkit's "centrality")."""
    from ..residual_maps import outside

    keep = outside(values.size, positions)
    if not keep.any():
        raise InputError("a lesion covers the whole brain mask, so its centrality (the mean of its map "
                         "outside the lesion) is undefined; drop the centrality covariate.")
    return float(values[keep].mean())
