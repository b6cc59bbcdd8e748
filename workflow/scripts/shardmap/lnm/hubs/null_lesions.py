"""Random lesions for the random-lesion null: each real lesion's shape moved elsewhere in
the brain (``shift``), or a sphere of its size at a random place (``sphere``).

Every null lesion comes from its source lesion as prepared on the mask grid (mask
positions and weights), its index k and the seed alone: the generator of null k of lesion
L is seeded with (seed, crc32(L), k). So a null lesion is the same whatever the batch it
falls in, the number of lesions in the sheet or the order of the sheet.

``shift``
    The lesion's voxels are translated by a whole number of voxels so that the voxel
    nearest its centroid lands on a mask voxel drawn uniformly; a position is kept when at
    least MIN_INSIDE of the moved voxels are mask voxels (otherwise another is drawn). The
    moved lesion has its source's voxel count on the grid; the voxels that land outside the
    mask do not enter the seed, as for a real lesion. Weights move with their voxels.
``sphere``
    The mask voxels nearest (in mm) to a mask voxel drawn uniformly, as many as the source
    has inside the mask, with weight 1: a ball of the source's volume where the mask allows
    (near its edge the shape follows the edge), wholly inside the mask.
"""

from __future__ import annotations

import zlib

import numpy as np

from ...errors import InputError
from ..lesions import LesionBatch
from .null_plan import NULL_METHODS
from .tables import write_table

MIN_INSIDE = 0.9
MAX_TRIES = 10_000
NULL_LESION_COLUMNS = ["null_id", "source_id", "group", "index", "method", "n_voxels_in_mask",
                       "fraction_in_mask", "centre_i", "centre_j", "centre_k"]


def null_generator(seed, source_id, index):
    return np.random.default_rng([int(seed), zlib.crc32(str(source_id).encode()), int(index)])


class MaskGrid:
    """What placing lesions needs of the brain mask: each grid voxel's mask position (-1
    outside), the mask voxels' grid coordinates and their world coordinates (mm)."""

    def __init__(self, mask):
        self.shape = np.asarray(mask.shape)
        self.ijk = mask.ijk
        self.world = self.ijk @ mask.affine[:3, :3].T + mask.affine[:3, 3]
        self.position = mask.to_volume(np.arange(mask.n_voxels), fill=-1, dtype=np.int64)

    @property
    def n_voxels(self):
        return len(self.ijk)


def shifted_lesion(positions, weights, grid, rng, what="lesion"):
    """(positions, weights, fraction in mask, centre ijk) of the lesion moved to a random place."""
    ijk = grid.ijk[positions]
    anchor = ijk[np.argmin(((ijk - ijk.mean(axis=0)) ** 2).sum(axis=1))]
    for _ in range(MAX_TRIES):
        target = grid.ijk[rng.integers(grid.n_voxels)]
        moved = ijk - anchor + target
        on_grid = np.all((moved >= 0) & (moved < grid.shape), axis=1)
        landed = np.full(len(moved), -1)
        landed[on_grid] = grid.position[tuple(moved[on_grid].T)]
        inside = landed >= 0
        if inside.mean() >= MIN_INSIDE:
            order = np.argsort(landed[inside])
            return landed[inside][order], weights[inside][order], float(inside.mean()), target
    raise InputError(f"{what} ({len(positions)} voxels) could not be placed with at least {MIN_INSIDE:.0%} of it "
                     f"inside the brain mask in {MAX_TRIES} random positions; it is too large for "
                     "lnm.null_lesions.method: shift. Use method: sphere, or leave the lesion out.")


def sphere_lesion(n_voxels, grid, rng):
    """(positions, weights, 1.0, centre ijk): the ``n_voxels`` mask voxels nearest a random one."""
    centre = rng.integers(grid.n_voxels)
    distance = ((grid.world - grid.world[centre]) ** 2).sum(axis=1)
    # Ties at the ball's edge go to the lower mask positions, so the ball is well defined.
    edge = np.partition(distance, n_voxels - 1)[n_voxels - 1]
    within = np.flatnonzero(distance < edge)
    on_edge = np.flatnonzero(distance == edge)[:n_voxels - len(within)]
    return np.sort(np.concatenate([within, on_edge])), np.ones(n_voxels), 1.0, grid.ijk[centre]


def make_null_lesion(source_positions, source_weights, grid, method, rng, what="lesion"):
    if method == "shift":
        return shifted_lesion(source_positions, source_weights, grid, rng, what)
    if method == "sphere":
        return sphere_lesion(len(source_positions), grid, rng)
    raise InputError(f"lnm.null_lesions.method is '{method}'; use one of {', '.join(NULL_METHODS)}.")


def source_lesions(batch_files, wanted):
    """{lesion id: (positions, weights)} of the ``wanted`` lesions, from prepared batches."""
    found = {}
    for path in batch_files:
        batch = LesionBatch.load(path)
        for index, lesion_id in enumerate(batch.lesion_ids):
            if lesion_id in wanted:
                found[lesion_id] = (batch.positions_of(index).copy(), batch.weights_of(index).copy())
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise InputError(f"lesions {missing[:5]} are not in the prepared lesion batches {list(batch_files)[:3]}; "
                         "delete lnm/lesions under outdir and rerun.")
    return found, batch.mask_fingerprint


def make_null_batch(plan, batch_files, mask, method, seed):
    """The LesionBatch of the null lesions in ``plan`` ((null id, source id, group, index)
    tuples) and their table rows."""
    sources, fingerprint = source_lesions(batch_files, {source for _, source, _, _ in plan})
    if fingerprint != mask.fingerprint():
        raise InputError(f"the prepared lesion batches {list(batch_files)[:3]} were prepared on another brain "
                         "mask; delete lnm/lesions under outdir and rerun.")
    grid = MaskGrid(mask)
    positions, weights, rows = [], [], []
    for null_id, source_id, group, index in plan:
        source_positions, source_weights = sources[source_id]
        placed, placed_weights, inside, centre = make_null_lesion(
            source_positions, source_weights, grid, method, null_generator(seed, source_id, index),
            f"lesion '{source_id}'")
        positions.append(placed)
        weights.append(placed_weights)
        rows.append({"null_id": null_id, "source_id": source_id, "group": group or "", "index": index,
                     "method": method, "n_voxels_in_mask": len(placed), "fraction_in_mask": f"{inside:.4f}",
                     "centre_i": int(centre[0]), "centre_j": int(centre[1]), "centre_k": int(centre[2])})
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in positions])]).astype(np.int64)
    batch = LesionBatch([null_id for null_id, *_ in plan], offsets, np.concatenate(positions).astype(np.int64),
                        fingerprint, np.concatenate(weights).astype(np.float64))
    return batch, rows


def write_null_batch_files(plan, batch_files, mask_path, method, seed, batch_path, table_path):
    """Make one batch of null lesions and write it (as a lesion batch) and its table."""
    from ..nifti import load_mask

    batch, rows = make_null_batch([tuple(item) for item in plan], batch_files, load_mask(mask_path), method,
                                  seed)
    write_table(table_path, rows, NULL_LESION_COLUMNS)
    batch.save(batch_path)
    return batch
