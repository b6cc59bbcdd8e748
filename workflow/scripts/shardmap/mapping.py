"""The mapping task: one lesion batch against one connectome shard, streamed by subject.

Per subject the task reads the stored time courses once, builds the seeds of all
lesions of the batch (float64), computes their correlation with every mask voxel in
one float32 matrix product (voxel block by voxel block, so temporaries stay in cache),
turns r into z in place and adds z and z^2 into float64 accumulators. Entries with
|r| > FLOAT64_ABOVE are recomputed in float64 from the same stored data, because near
|r| = 1 the float32 rounding of r is amplified by arctanh.

Memory: one subject's frames (T x V float32, plus the stored dtype if narrower) and
the accumulators (L x 2 x V float64). It does not depend on the number of subjects.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from .connectome import ShardReader
from .errors import InputError
from .stats import SufficientStats

log = logging.getLogger(__name__)

R_CLIP = 1.0 - 1e-7
FLOAT64_ABOVE = 0.95
BLOCK_ELEMENTS = 1 << 18  # lesions x voxels per block: 1 MiB of float32
EXACT_CHUNK = 4096  # (lesion, voxel) pairs recomputed in float64 at a time


def lesion_seeds(frames, norm, batch):
    """Seeds of every lesion in the batch: (T, L) float64, and their norms (L,).

    ``frames`` holds the stored unit time courses; multiplying by ``norm`` restores
    each voxel's centred scale, so a seed is the plain mean of the lesion's centred
    time courses, as in the definition.
    """
    seeds = np.empty((frames.shape[0], len(batch)))
    for index in range(len(batch)):
        positions = batch.positions_of(index)
        block = frames[:, positions].astype(np.float64)
        seeds[:, index] = block @ norm[positions] / positions.size
    seed_norm = np.sqrt(np.einsum("tl,tl->l", seeds, seeds))
    return seeds, seed_norm


def fisher_z_inplace(r, scratch):
    """z = arctanh(r) = log((1 + r) / (1 - r)) / 2, in place, for float32 |r| <= FLOAT64_ABOVE.

    NumPy's float32 log is vectorised and its arctanh is not: this form is about ten times
    faster, with an absolute error below 2e-7 for |r| <= 0.95 (tests/test_mapping_kernels.py).
    """
    np.subtract(1.0, r, out=scratch)
    np.add(1.0, r, out=r)
    np.divide(r, scratch, out=r)
    np.log(r, out=r)
    np.multiply(r, 0.5, out=r)
    return r


class BlockScratch:
    """Buffers for one voxel block, allocated once per task and reused for every subject."""

    def __init__(self, n_lesions):
        self.width = max(256, BLOCK_ELEMENTS // n_lesions)
        self.r = np.empty((n_lesions, self.width), dtype=np.float32)
        self.abs_r = np.empty((n_lesions, self.width), dtype=np.float32)
        self.flags = np.empty((n_lesions, self.width), dtype=bool)


def accumulate_subject(frames, norm, inv_stored_norm, batch, sums, scratch):
    """Add one subject's z and z^2 maps of all lesions into ``sums`` (L, 2, V) float64.

    ``scratch`` is a BlockScratch for ``len(batch)`` lesions.
    """
    n_voxels = frames.shape[1]
    seeds, seed_norm = lesion_seeds(frames, norm, batch)
    inv_seed = np.divide(1.0, seed_norm, out=np.zeros_like(seed_norm), where=seed_norm > 0)
    unit_seeds = seeds * inv_seed  # (T, L) float64, unit norm (or 0)
    weights = np.ascontiguousarray(unit_seeds.T, dtype=np.float32)  # (L, T)
    inv32 = inv_stored_norm.astype(np.float32)
    for start in range(0, n_voxels, scratch.width):
        stop = min(start + scratch.width, n_voxels)
        width = stop - start
        r = scratch.r[:, :width]
        np.matmul(weights, frames[:, start:stop], out=r)
        r *= inv32[start:stop]
        flags = scratch.flags[:, :width]
        np.greater(np.abs(r, out=scratch.abs_r[:, :width]), FLOAT64_ABOVE, out=flags)
        exact = np.nonzero(flags) if flags.any() else None
        if exact is not None:
            r[exact] = 0.0  # their z is added in float64 below
        fisher_z_inplace(r, scratch.abs_r[:, :width])
        z_block = sums[:, 0, start:stop]
        z_block += r
        np.multiply(r, r, out=r)
        z2_block = sums[:, 1, start:stop]
        z2_block += r
        if exact is not None:
            add_exact_z(sums, unit_seeds, frames, inv_stored_norm, exact[0], exact[1] + start)


def add_exact_z(sums, unit_seeds, frames, inv_stored_norm, lesion_index, voxel, chunk=EXACT_CHUNK):
    """Add float64 z and z^2 of the (lesion, voxel) pairs given, ``chunk`` pairs at a time
    so the gathered T x chunk float64 arrays stay small however many pairs there are."""
    for begin in range(0, lesion_index.size, chunk):
        lesions, voxels = lesion_index[begin:begin + chunk], voxel[begin:begin + chunk]
        r64 = np.einsum("tk,tk->k", unit_seeds[:, lesions],
                        frames[:, voxels].astype(np.float64)) * inv_stored_norm[voxels]
        z64 = np.arctanh(np.clip(r64, -R_CLIP, R_CLIP))
        sums[lesions, 0, voxels] += z64
        sums[lesions, 1, voxels] += z64 * z64


def map_batch_over_shard(batch, shard_paths, progress_every=10.0):
    """Stream every subject of a prepared shard through the lesions of ``batch``.

    Parameters
    ----------
    batch : lesions.LesionBatch
    shard_paths : dict with keys data, norms, info (see connectome.shard_paths)

    Returns
    -------
    stats.SufficientStats over the shard's subjects.
    """
    with ShardReader(shard_paths) as reader:
        info = reader.info
        if info.mask_fingerprint != batch.mask_fingerprint:
            raise InputError(f"lesion batch '{batch.lesion_ids[0]}...' and connectome shard "
                             f"'{shard_paths['info']}' were prepared on different brain masks; delete "
                             "the prepared connectome and lesion batches (lnm/connectome, lnm/lesions "
                             "under outdir) and rerun.")
        stats = SufficientStats.zeros(batch.lesion_ids, info.n_voxels)
        scratch = BlockScratch(len(batch))
        started = last = time.monotonic()
        for index in range(len(reader)):
            frames, norm, inv_stored_norm = reader.read(index)
            accumulate_subject(frames, norm, inv_stored_norm, batch, stats.sums, scratch)
            now = time.monotonic()
            if now - last >= progress_every or index + 1 == len(reader):
                rate = (index + 1) / (now - started)
                eta = (len(reader) - index - 1) / rate if rate > 0 else float("nan")
                log.info("subjects %d/%d, %.2f subjects/s, ETA %.0f s", index + 1, len(reader), rate, eta)
                last = now
        stats.n[:] = len(reader)
        stats.subject_ids = list(info.subject_ids)
    return stats


def map_batch_files(batch_path, shard_paths, data_path, info_path):
    """Run one mapping task from files and write its partial sums."""
    from .lesions import LesionBatch

    stats = map_batch_over_shard(LesionBatch.load(batch_path), shard_paths)
    stats.save(data_path, info_path)
    return stats
