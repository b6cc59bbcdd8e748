"""Which column of a prepared connectome holds each voxel of the brain mask.

Prepared connectomes store their voxels in their own order, on their own grid: lacuna
as (i, j, k) indices with the mask's affine, Lead-DBS as 1-based column-major indices
with SPM's 1-based affine. Two copies of "the same" MNI mask may also store left and
right in opposite directions (TemplateFlow's MNI152NLin6Asym against FSL's). Voxels are
therefore matched by their world coordinates, never by their position.

The rule, stated in the README ("Bring your connectome"): every mask voxel must be a
voxel of the connectome (a missing one stops the run with the count and the fix);
connectome voxels outside the mask are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import InputError

# A connectome voxel lies on the mask's grid when its centre is this close (in voxels)
# to a grid point: the affines of the same MNI grid, stored by different tools, agree
# to far better than this.
ON_GRID_TOLERANCE = 1e-3


@dataclass
class ConnectomeVoxels:
    """The voxels of a prepared connectome: (n, 3) integer indices into a grid of
    ``shape`` whose voxel-to-world affine is ``affine``, in the connectome's column order."""

    ijk: np.ndarray
    affine: np.ndarray
    shape: tuple
    source: str  # the file that stores them, for messages

    @property
    def n_voxels(self):
        return int(len(self.ijk))

    def world(self):
        return self.ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def to_volume(self):
        """The connectome's own mask: a uint8 grid with 1 at its voxels."""
        volume = np.zeros(self.shape, dtype=np.uint8)
        volume[tuple(self.ijk.T)] = 1
        return volume


def checked_indices(ijk, shape, source, what):
    """``ijk`` as an (n, 3) int64 array, after checking every index lies inside ``shape``."""
    ijk = np.asarray(ijk)
    if ijk.ndim != 2 or ijk.shape[1] != 3 or not np.issubdtype(ijk.dtype, np.number):
        raise InputError(f"connectome file '{source}': {what} has shape {ijk.shape}; expected (voxels, 3) "
                         "integer voxel indices. Is this a connectome of that format?")
    rounded = np.rint(ijk)
    if not np.array_equal(rounded, ijk):
        raise InputError(f"connectome file '{source}': {what} holds non-integer voxel indices; the file is "
                         "damaged or not of that format.")
    ijk = rounded.astype(np.int64)
    outside = ((ijk < 0) | (ijk >= np.asarray(shape))).any(axis=1)
    if outside.any():
        raise InputError(f"connectome file '{source}': {int(outside.sum())} of {what} lie outside its grid "
                         f"{tuple(shape)}; the file is damaged or its grid is not the one stored with it.")
    if len(np.unique(np.ravel_multi_index(tuple(ijk.T), shape))) != len(ijk):
        raise InputError(f"connectome file '{source}': {what} lists a voxel twice; the file is damaged.")
    return ijk


def mask_columns(mask, voxels):
    """For each mask voxel (mask order), the column of the connectome that holds it.

    Parameters
    ----------
    mask : nifti.BrainMask, the grid the maps are written on.
    voxels : ConnectomeVoxels.

    Returns
    -------
    (V_mask,) int64 array of connectome columns.

    Raises InputError when the connectome's voxels are not on the mask's grid (another
    voxel size or a shifted grid) or when mask voxels are missing from the connectome.
    """
    inverse = np.linalg.inv(mask.affine)
    grid = voxels.world() @ inverse[:3, :3].T + inverse[:3, 3]
    nearest = np.rint(grid)
    off = np.abs(grid - nearest).max(axis=1) > ON_GRID_TOLERANCE
    if off.all() or off.mean() > 0.5:
        sizes = np.sqrt((voxels.affine[:3, :3] ** 2).sum(axis=0))
        mask_sizes = np.sqrt((mask.affine[:3, :3] ** 2).sum(axis=0))
        raise InputError(
            f"connectome '{voxels.source}': its voxels do not lie on the brain mask's grid ('{mask.path}'): "
            f"voxel size {np.round(sizes, 3).tolist()} mm vs {np.round(mask_sizes, 3).tolist()} mm, affine\n"
            f"{np.round(voxels.affine, 4)}\nvs\n{np.round(mask.affine, 4)}.\nUse a mask on the connectome's grid, "
            "or leave lnm.connectome.mask out to use the connectome's own mask."
        )
    nearest = nearest.astype(np.int64)
    inside = ~off & ((nearest >= 0) & (nearest < np.asarray(mask.shape))).all(axis=1)
    lookup = np.full(int(np.prod(mask.shape)), -1, dtype=np.int64)
    flat = np.ravel_multi_index(tuple(nearest[inside].T), mask.shape)
    lookup[flat] = np.flatnonzero(inside)
    columns = lookup[mask.flat_index]
    missing = int((columns < 0).sum())
    if missing:
        raise InputError(
            f"{missing} of the {mask.n_voxels} voxels of the brain mask '{mask.path}' are not voxels of the "
            f"connectome '{voxels.source}' (matched by world coordinates; the connectome has "
            f"{voxels.n_voxels} voxels). Leave lnm.connectome.mask out to map on the connectome's own mask, "
            "or give a mask that lies within it (e.g. your mask multiplied by the connectome's)."
        )
    return columns
