"""A lesion's maps with another map regressed out (lnm.degree_regression: the degree map).

The fit a + b x other is made over the mask voxels outside the lesion (its own voxels
correlate with the seed by construction) and subtracted at every voxel. The first level
writes such maps beside each lesion's own; the specificity GLM can test them instead; the
hub controls supply the degree map they are fitted to.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError, problems_error

# A line is fitted over the voxels outside the lesion: fewer than this leave nothing to fit.
MIN_FIT_VOXELS = 3
FIX = ("remove the lesion from the sheet (a lesion that covers the brain has no outside to compare with), or set "
       "lnm.degree_regression: false")


def no_room(what, n_outside, n_voxels):
    """Why a lesion leaving ``n_outside`` of the mask's ``n_voxels`` outside it has no fit."""
    return (f"{what} leaves {n_outside} of the brain mask's {n_voxels} voxels outside it, too few to fit the degree "
            f"map there (at least {MIN_FIT_VOXELS})")


def outside(n_voxels, positions):
    """Boolean (V,): True at the mask voxels that are not in ``positions``."""
    keep = np.ones(n_voxels, dtype=bool)
    keep[positions] = False
    return keep


def degree_residual(values, degree, fit_where, what="a lesion"):
    """``values`` minus their least-squares fit a + b x degree over the voxels ``fit_where``:
    the part of a map that the degree map does not explain (at every voxel). ``what`` names
    the lesion in the message when the fit is impossible."""
    x, y = degree[fit_where], values[fit_where]
    if x.size < MIN_FIT_VOXELS:
        raise InputError(f"{no_room(what, x.size, degree.size)}; {FIX}.")
    if np.ptp(x) == 0:
        raise InputError(f"the degree map is constant over the {x.size} mask voxels outside {what}, so it cannot "
                         f"be regressed out of its maps; {FIX}.")
    slope, intercept = np.polyfit(x, y, 1)
    return values - (intercept + slope * degree)


def residual_map(maps, name, degree, fit_where, what="a lesion"):
    """The map ``name`` of map_names.DEGREE_RESIDUAL_MAP_NAMES (e.g. "T_degree-resid") from a
    lesion's ``maps`` (name -> values)."""
    return degree_residual(maps[name.removesuffix("_degree-resid")], degree, fit_where, what)


def check_room_to_fit(batch, mask):
    """InputError naming every lesion of ``batch`` (lesions.LesionBatch) that leaves fewer
    than MIN_FIT_VOXELS voxels of ``mask`` (nifti.BrainMask) outside it: the lesions'
    preparation runs it when lnm.degree_regression is on, before any mapping."""
    n_voxels = mask.n_voxels
    left = [(lesion_id, n_voxels - batch.positions_of(i).size) for i, lesion_id in enumerate(batch.lesion_ids)]
    problems = [no_room(f"lesion '{lesion_id}'", n, n_voxels) for lesion_id, n in left if n < MIN_FIT_VOXELS]
    if len(problems) == 1:
        raise InputError(f"{problems[0]}; {FIX}.")
    if problems:
        raise problems_error(f"{len(problems)} lesions leave no room to fit the degree map ({FIX})", problems)
