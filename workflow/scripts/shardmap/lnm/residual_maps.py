"""A lesion's maps with another map regressed out (lnm.degree_regression: the degree map).

The fit a + b x other is made over the mask voxels outside the lesion (its own voxels
correlate with the seed by construction) and subtracted at every voxel. The first level
writes such maps beside each lesion's own; the specificity GLM can test them instead; the
hub controls supply the degree map they are fitted to.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def outside(n_voxels, positions):
    """Boolean (V,): True at the mask voxels that are not in ``positions``."""
    keep = np.ones(n_voxels, dtype=bool)
    keep[positions] = False
    return keep


def degree_residual(values, degree, fit_where):
    """``values`` minus their least-squares fit a + b x degree over the voxels ``fit_where``:
    the part of a map that the degree map does not explain (at every voxel)."""
    x, y = degree[fit_where], values[fit_where]
    if x.size < 3 or np.ptp(x) == 0:
        raise InputError("the degree map is constant over the voxels outside a lesion, so it cannot be "
                         "regressed out; set lnm.degree_regression: false.")
    slope, intercept = np.polyfit(x, y, 1)
    return values - (intercept + slope * degree)


def residual_map(maps, name, degree, fit_where):
    """The map ``name`` of map_names.DEGREE_RESIDUAL_MAP_NAMES (e.g. "T_degree-resid") from a
    lesion's ``maps`` (name -> values)."""
    return degree_residual(maps[name.removesuffix("_degree-resid")], degree, fit_where)
