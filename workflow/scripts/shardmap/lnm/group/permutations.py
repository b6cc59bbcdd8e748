"""Permutation inference of the specificity GLM, split into tasks that merge exactly.

A task covers a range of permutations and a chunk of voxels. What it returns merges
without loss: the maximum |t| (and |TFCE|) of each permutation over its voxels (merged
over chunks by ``max``) and, per voxel, how many of its permutations reached the
observed |t| (merged over permutation ranges by a sum).

Results do not depend on how the work is split, bit for bit:

* permutation i is drawn from (seed, i) alone;
* permutations are computed in blocks of PERMUTATION_BLOCK aligned to multiples of it
  (the last block of the study ends at n_permutations); a task whose range starts or
  ends inside a block computes the whole block and keeps its own rows, so every
  permutation's statistics always come from the same matrix product;
* voxels are computed in tiles aligned to the mask order (glm.VOXEL_TILE), and a chunk
  is a run of whole tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...atomic import atomic_open
from ...errors import InputError
from .glm import VOXEL_TILE, t_from_products

# Permutations per matrix product: enough rows to keep BLAS near its best speed.
PERMUTATION_BLOCK = 64
# |t| of a permutation counts as reaching the observed |t| within this relative distance:
# the observed t comes from another summation order than the permuted ones, and a
# permutation that leaves the design unchanged must count as reaching it.
TIE_RTOL = 1e-10


def draw_permutation(seed, index, n):
    """Permutation ``index`` of n lesions (a function of seed and index only)."""
    return np.random.default_rng([int(seed), int(index)]).permutation(n)


def permutation_ranges(n_permutations, shard_size):
    """(start, stop) of each permutation task, shard_size permutations at a time."""
    return [(start, min(start + shard_size, n_permutations)) for start in range(0, n_permutations, shard_size)]


def chunk_tiles(n_tiles, n_chunks, chunk):
    """(first tile, stop tile) of voxel chunk ``chunk`` of ``n_chunks`` (contiguous, near-equal)."""
    bounds = np.linspace(0, n_tiles, n_chunks + 1).round().astype(int)
    return int(bounds[chunk]), int(bounds[chunk + 1])


def tile_count(n_voxels):
    return -(-n_voxels // VOXEL_TILE)


def exceedance_thresholds(observed_abs):
    """The |statistic| a permutation must reach to count as at least the observed one."""
    return observed_abs * (1.0 - TIE_RTOL)


@dataclass
class NullShard:
    """What one permutation task found."""

    perm_start: int
    perm_stop: int
    voxel_start: int
    voxel_stop: int
    max_t: np.ndarray  # (permutations,) max |t| over the chunk's voxels
    exceed: np.ndarray  # (chunk voxels,) int64: permutations with |t| reaching the observed |t|
    max_tfce: np.ndarray | None = None  # (permutations,) max |TFCE| (whole mask only)

    def save(self, path):
        arrays = {"range": np.array([self.perm_start, self.perm_stop, self.voxel_start, self.voxel_stop]),
                  "max_t": self.max_t, "exceed": self.exceed}
        if self.max_tfce is not None:
            arrays["max_tfce"] = self.max_tfce
        with atomic_open(path) as handle:
            np.savez(handle, **arrays)

    @classmethod
    def load(cls, path):
        with np.load(path) as data:
            start, stop, v0, v1 = (int(x) for x in data["range"])
            return cls(start, stop, v0, v1, data["max_t"], data["exceed"],
                       data["max_tfce"] if "max_tfce" in data.files else None)


def block_weights(glm, seed, block_start, block_stop):
    """The rows that turn one block of permutations into one matrix product.

    Permuting the residuals y (row i of the permuted data is y[perm[i]]) and taking
    x . y_perm equals u . y with u[perm[i]] = x[i]; likewise for every nuisance column
    q. Rows: the B permutations' u, then their permuted q for each covariate.
    """
    n = glm.n_lesions
    q = glm.q
    size = block_stop - block_start
    weights = np.empty(((1 + q.shape[1]) * size, n))
    for row, index in enumerate(range(block_start, block_stop)):
        perm = draw_permutation(seed, index, n)
        weights[row, perm] = glm.x
        for column in range(q.shape[1]):
            weights[(1 + column) * size + row, perm] = q[:, column]
    return weights


def block_t(weights, tile, size, dof):
    """(size, voxels) t of a block of permutations over one residual tile."""
    products = weights @ tile
    b = products[:size]
    n_covariates = products.shape[0] // size - 1
    if n_covariates:
        c = products[size:].reshape(n_covariates, size, -1)
        c_squared = np.einsum("kpv,kpv->pv", c, c)
    else:
        c_squared = 0.0
    return t_from_products(b, c_squared, dof)


def run_null_shard(residuals, glm, observed_abs_t, n_voxels, seed, n_permutations, perm_range,
                   tile_range, tfce=None):
    """Compute one permutation task.

    Parameters
    ----------
    residuals : (n_tiles, n_lesions, VOXEL_TILE) residualised unit-norm maps, tile-major
        (a memory map; only the chunk's tiles are read).
    glm : glm.PreparedGLM.
    observed_abs_t : (n_voxels,) |t| of the unpermuted data.
    n_permutations : the study's number of permutations (where its last block ends).
    perm_range, tile_range : (start, stop) of the task's permutations and tiles.
    tfce : None, or a function mask-ordered t -> mask-ordered TFCE (then the task must
        cover every tile: TFCE needs the whole map of each permutation).
    """
    start, stop = perm_range
    tile_start, tile_stop = tile_range
    if not 0 <= start < stop <= n_permutations:
        raise ValueError(f"permutations {perm_range} outside 0..{n_permutations}")
    n_tiles = residuals.shape[0]
    if tfce is not None and (tile_start, tile_stop) != (0, n_tiles):
        raise InputError("lnm.specificity: tfce: true needs the whole map of every permutation, so "
                         "lnm.specificity.voxel_chunks must be 1.")
    voxel_start = min(tile_start * VOXEL_TILE, n_voxels)
    voxel_stop = min(tile_stop * VOXEL_TILE, n_voxels)
    thresholds = exceedance_thresholds(np.asarray(observed_abs_t[voxel_start:voxel_stop], dtype=np.float64))
    max_t = np.zeros(stop - start)
    exceed = np.zeros(voxel_stop - voxel_start, dtype=np.int64)
    max_tfce = np.zeros(stop - start) if tfce is not None else None
    first_block = start - start % PERMUTATION_BLOCK
    for block_start in range(first_block, stop, PERMUTATION_BLOCK):
        block_stop = min(block_start + PERMUTATION_BLOCK, n_permutations)
        weights = block_weights(glm, seed, block_start, block_stop)
        keep = slice(max(start, block_start) - block_start, min(stop, block_stop) - block_start)
        out = slice(max(start, block_start) - start, min(stop, block_stop) - start)
        whole = np.zeros((keep.stop - keep.start, n_voxels)) if tfce is not None else None
        for tile in range(tile_start, tile_stop):
            first = tile * VOXEL_TILE
            width = min(VOXEL_TILE, n_voxels - first)
            t = block_t(weights, np.asarray(residuals[tile]), block_stop - block_start, glm.dof)[keep, :width]
            size = np.abs(t)
            np.maximum(max_t[out], size.max(axis=1), out=max_t[out])
            local = slice(first - voxel_start, first - voxel_start + width)
            exceed[local] += (size >= thresholds[local]).sum(axis=0)
            if whole is not None:
                whole[:, first:first + width] = t
        if whole is not None:
            max_tfce[out] = [np.abs(tfce(row)).max() for row in whole]
    return NullShard(start, stop, voxel_start, voxel_stop, max_t, exceed, max_tfce)


def _check_exact_cover(rectangles, n_permutations, n_voxels):
    """Raise unless the (permutation range x voxel range) of the tasks tile the whole
    (n_permutations x n_voxels) table exactly: no gap and no overlap."""
    table = np.array(rectangles, dtype=np.int64).reshape(-1, 4)
    p0, p1, v0, v1 = table.T
    area = int(((p1 - p0) * (v1 - v0)).sum())
    for i in range(len(table) - 1):
        overlap = ((np.maximum(p0[i], p0[i + 1:]) < np.minimum(p1[i], p1[i + 1:]))
                   & (np.maximum(v0[i], v0[i + 1:]) < np.minimum(v1[i], v1[i + 1:])))
        if overlap.any():
            j = i + 1 + int(np.flatnonzero(overlap)[0])
            raise ValueError(f"permutation tasks {table[i].tolist()} and {table[j].tolist()} (permutations "
                             "start, stop, voxels start, stop) overlap: a task is repeated")
    if area != n_permutations * n_voxels:
        raise ValueError(f"the permutation tasks cover {area} of the {n_permutations} x {n_voxels} "
                         "(permutation, voxel) pairs: a task is missing")


def merge_null_shards(shards, n_permutations, n_voxels):
    """The null distribution of the maximum statistic and the per-voxel exceedance counts.

    ``shards`` is any iterable of NullShard (read one at a time, so memory holds one task's
    results). Every (permutation, voxel) pair must be covered exactly once; anything else
    (a missing or a repeated task) is an error rather than a silently thinner null.

    Returns
    -------
    (max_t (n_permutations,), exceed (n_voxels,) int64, max_tfce (n_permutations,) or None)
    """
    max_t = np.zeros(n_permutations)
    exceed = np.zeros(n_voxels, dtype=np.int64)
    max_tfce = None
    rectangles, with_tfce = [], []
    for shard in shards:
        span = slice(shard.perm_start, shard.perm_stop)
        np.maximum(max_t[span], shard.max_t, out=max_t[span])
        exceed[shard.voxel_start:shard.voxel_stop] += shard.exceed
        rectangles.append((shard.perm_start, shard.perm_stop, shard.voxel_start, shard.voxel_stop))
        with_tfce.append(shard.max_tfce is not None)
        if shard.max_tfce is not None:
            max_tfce = np.zeros(n_permutations) if max_tfce is None else max_tfce
            np.maximum(max_tfce[span], shard.max_tfce, out=max_tfce[span])
    if any(with_tfce) and not all(with_tfce):
        raise ValueError("some permutation tasks computed TFCE and others did not; re-run them all")
    _check_exact_cover(rectangles, n_permutations, n_voxels)
    return max_t, exceed, max_tfce
