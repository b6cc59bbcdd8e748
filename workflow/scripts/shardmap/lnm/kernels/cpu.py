"""The CPU kernel of a mapping task: NumPy with BLAS, in worker threads that own voxel blocks.

Per subject and voxel block (a few MiB, so temporaries stay in cache) a worker computes
r for all lesions in one float32 matrix product, turns it into 2z = log((1 + r) / (1 - r))
in place, and adds 2z and (2z)^2 into float32 running sums. Every FLUSH_EVERY subjects
the running sums are scaled (by 1/2 and 1/4, exact in binary) and added into the float64
totals. This halves the memory traffic of the accumulation, which otherwise costs more
than the matrix product. Entries with |r| > FLOAT64_ABOVE skip all of this: they are
recomputed in float64 and added to the float64 totals directly, because near |r| = 1
float32 rounding of r is amplified by arctanh.

Each worker always owns the same blocks and every block sees the same operations in the
same order, so the result is the same bit for bit whatever the number of threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

R_CLIP = 1.0 - 1e-7
FLOAT64_ABOVE = 0.95
BLOCK_ELEMENTS = 1 << 18  # lesions x voxels per block: 1 MiB of float32
MAX_BLOCK_WIDTH = 8192  # voxels per block, so even one lesion splits V into blocks
EXACT_CHUNK = 4096  # (lesion, voxel) pairs recomputed in float64 at a time
# Subjects summed in float32 between flushes. 8 values of (2z)^2 <= 13.4 sum to at most
# 108, so the float32 running sums carry a relative error below 1e-6 before they reach
# float64; the float32 matrix product itself is no more accurate than that.
FLUSH_EVERY = 8


def log_ratio_inplace(r, scratch):
    """r <- log((1 + r) / (1 - r)) = 2 arctanh(r), in place, for float32 |r| <= FLOAT64_ABOVE.

    NumPy's float32 log is vectorised and its arctanh is not: this form is several times
    faster, with an absolute error below 4e-7 for |r| <= 0.95 (tests/test_mapping_kernels.py).
    """
    np.subtract(1.0, r, out=scratch)
    np.add(1.0, r, out=r)
    np.divide(r, scratch, out=r)
    np.log(r, out=r)
    return r


def block_width(n_lesions):
    return int(min(MAX_BLOCK_WIDTH, max(256, BLOCK_ELEMENTS // max(1, n_lesions))))


def unit_float32_storage(inv_stored_norm):
    """True when the stored time courses are unit norm to float32 precision (float32
    storage), so r needs no correction by the inverse stored norm."""
    return bool(np.all((inv_stored_norm == 0) | (np.abs(inv_stored_norm - 1.0) < 1e-6)))


def lesion_seeds(frames, norm, batch):
    """Unit-norm seeds of every lesion in the batch: (T, L) float64 (zero for a lesion
    whose seed has no variance).

    ``frames`` holds the stored unit time courses; multiplying by ``norm`` restores
    each voxel's centred scale, so a seed is the mean of the lesion's centred time
    courses, as in the definition, weighted by the lesion's values when they are weights
    (the weights are all 1 otherwise, and the product with them is exact).
    """
    seeds = np.empty((frames.shape[0], len(batch)))
    for index in range(len(batch)):
        positions, weights = batch.positions_of(index), batch.weights_of(index)
        block = frames[:, positions].astype(np.float64)
        seeds[:, index] = block @ (norm[positions] * weights) / weights.sum()
    seed_norm = np.sqrt(np.einsum("tl,tl->l", seeds, seeds))
    inverse = np.divide(1.0, seed_norm, out=np.zeros_like(seed_norm), where=seed_norm > 0)
    return seeds * inverse


class NumpyMapper:
    """Accumulates one task's subjects into float64 sums (L, 2, V) of z and z^2.

    Memory beyond the sums: float32 running sums (L x 2 x V x 4 bytes) and two scratch
    blocks of 1 MiB per thread.
    """

    def __init__(self, sums, threads=1):
        n_lesions, _, n_voxels = sums.shape
        self.sums = sums
        self.width = block_width(n_lesions)
        self.blocks = [(start, min(start + self.width, n_voxels)) for start in range(0, n_voxels, self.width)]
        self.threads = max(1, min(int(threads), len(self.blocks)))
        self.running = np.zeros((n_lesions, 2, n_voxels), dtype=np.float32)
        self.pending = 0
        self._scratch = [np.empty((2, n_lesions, self.width), dtype=np.float32) for _ in range(self.threads)]
        self._pool = ThreadPoolExecutor(self.threads, "lnm-block") if self.threads > 1 else None
        # The workers are the parallelism: a multi-threaded BLAS inside each would oversubscribe.
        self._blas_limit = threadpool_limits(limits=1, user_api="blas")

    def _each_worker(self, work, *args):
        """Run ``work(worker, blocks, *args)`` for every worker, each on its own blocks."""
        if self._pool is None:
            work(0, self.blocks, *args)
            return
        futures = [self._pool.submit(work, w, self.blocks[w::self.threads], *args) for w in range(self.threads)]
        for future in futures:
            future.result()

    def add_lesions(self, frames, norm, inv_stored_norm, batch):
        """Add one subject for every lesion of ``batch`` (``norm``: each voxel's centred norm)."""
        self.add_subject(frames, inv_stored_norm, lesion_seeds(frames, norm, batch))

    def add_subject(self, frames, inv_stored_norm, unit_seeds):
        """Add one subject: ``frames`` (T, V) float32 stored time courses, ``unit_seeds``
        (T, L) float64 unit-norm (or zero) lesion seeds."""
        weights = np.ascontiguousarray(unit_seeds.T, dtype=np.float32)
        scale = None if unit_float32_storage(inv_stored_norm) else inv_stored_norm.astype(np.float32)
        self._each_worker(self._add_blocks, frames, inv_stored_norm, unit_seeds, weights, scale)
        self.pending += 1
        if self.pending == FLUSH_EVERY:
            self.flush()

    def flush(self):
        """Move the float32 running sums into the float64 totals."""
        if self.pending:
            self._each_worker(self._flush_blocks)
            self.pending = 0

    def finish(self):
        """Complete the float64 sums (after the last subject)."""
        self.flush()

    def close(self):
        """Stop the worker threads and give BLAS its threads back (also after an error)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self._blas_limit.restore_original_limits()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _add_blocks(self, worker, blocks, frames, inv_stored_norm, unit_seeds, weights, scale):
        r_full, scratch_full = self._scratch[worker]
        for start, stop in blocks:
            width = stop - start
            r, scratch = r_full[:, :width], scratch_full[:, :width]
            np.matmul(weights, frames[:, start:stop], out=r)
            if scale is not None:
                np.multiply(r, scale[start:stop], out=r)
            exact = None
            if max(r.max(), -r.min()) > FLOAT64_ABOVE:
                exact = np.nonzero(np.abs(r, out=scratch) > FLOAT64_ABOVE)
                r[exact] = 0.0  # their z goes into the float64 sums below
            log_ratio_inplace(r, scratch)
            running = self.running[:, :, start:stop]
            np.add(running[:, 0], r, out=running[:, 0])
            np.multiply(r, r, out=r)
            np.add(running[:, 1], r, out=running[:, 1])
            if exact is not None:
                add_exact_z(self.sums, unit_seeds, frames, inv_stored_norm, exact[0], exact[1] + start)

    def _flush_blocks(self, worker, blocks):
        for start, stop in blocks:
            running = self.running[:, :, start:stop]
            np.multiply(running[:, 0], 0.5, out=running[:, 0])
            np.multiply(running[:, 1], 0.25, out=running[:, 1])
            np.add(self.sums[:, :, start:stop], running, out=self.sums[:, :, start:stop])
            running.fill(0.0)


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
