"""The CPU kernel of a mapping task: NumPy with BLAS, in worker threads that own voxel blocks.

The kernel takes the task's subjects a few at a time (SUBJECTS_PER_PASS of them, all
resident) and makes one pass over the voxels for the whole group. Per voxel block (a
tile of lesions x voxels that stays in cache) and per subject of the group, a worker
computes r for all lesions in one float32 matrix product, turns it into
2z = log((1 + r) / (1 - r)) in place, and adds 2z and (2z)^2 into two float32 tiles of
the block. After the group's last subject those tiles are scaled (by 1/2 and 1/4, exact
in binary) and added into the task's float64 sums, while they are still in cache.

So the float64 sums are read and written once per group, and nothing of the size of
the sums is streamed through memory per subject. (The first version kept float32 running
sums of all voxels, L x 2 x V, and streamed them through memory once per subject: that
cost about a quarter of the kernel's time, and their first touch was a fixed cost of
every task.)
The price is memory for the group's frames, which are resident together.

The z transform and the adds are NumPy passes over the tile in cache, or, in a task
large enough to earn back loading it (COMPILED_EPILOGUE_FROM), one compiled pass
(``fused_epilogue``, numba), which is several times faster.

Entries with |r| > FLOAT64_ABOVE skip the float32 path: they are recomputed in float64
and added to the float64 sums directly, because near |r| = 1 float32 rounding of r is
amplified by arctanh.

Each worker always owns the same blocks and every block sees the same operations in the
same order, so the result is the same bit for bit whatever the number of threads.
"""

from __future__ import annotations

import logging
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)

R_CLIP = 1.0 - 1e-7
FLOAT64_ABOVE = 0.95
BLOCK_ELEMENTS = 1 << 17  # lesions x voxels per tile: 512 KiB of float32
MAX_BLOCK_WIDTH = 8192  # voxels per block, so even one lesion splits V into blocks
EXACT_CHUNK = 4096  # (lesion, voxel) pairs recomputed in float64 at a time
# Subjects summed in float32 before their sums reach float64. 8 values of (2z)^2 <= 13.4
# sum to at most 108, so the float32 tiles carry a relative error below 1e-6 before they
# reach float64; the float32 matrix product itself is no more accurate than that.
SUBJECTS_PER_PASS = 8
# Below this many lesions a task is bound by reading its subjects' frames, not by the
# matrix product, and the grouped pass only costs memory (8 subjects resident instead of 1)
# and time (at L = 1, 22.4 against 16.7 ms per pair): such a task passes one subject at a
# time, as before the grouped pass. Measured in docs/benchmarks.md.
GROUPED_FROM_LESIONS = 32
# Lesion x voxel x subject values from which a task uses the compiled epilogue. On this
# project's 2-core VM it saved 0.2-0.75 ns per value (runs differ) and cost about 0.5 s
# per process to import numba and load the loop from its cache (docs/benchmarks.md), so
# it pays from about 1e9-3e9 values: L = 256 with 100 subjects of 230k voxels, not
# L = 64 with 100.
COMPILED_EPILOGUE_FROM = 2e9


def subjects_per_pass_for(n_lesions, largest=SUBJECTS_PER_PASS):
    """Subjects a CPU task passes over the voxels at once: ``largest`` from
    GROUPED_FROM_LESIONS lesions on, else 1."""
    return largest if n_lesions >= GROUPED_FROM_LESIONS else 1


def compiled_epilogue_pays(n_lesions, n_voxels, n_subjects):
    """Whether a task of this size should use the compiled epilogue."""
    return float(n_lesions) * n_voxels * n_subjects >= COMPILED_EPILOGUE_FROM


def load_compiled_epilogue():
    """``fused_epilogue.add_twice_z``, compiled or loaded now (in the calling thread), or
    None where numba is missing or cannot build it: then NumPy's passes do the work."""
    try:
        from .fused_epilogue import add_twice_z

        tile = np.zeros((1, 1), dtype=np.float32)
        add_twice_z(tile, tile.copy(), tile.copy(), 1)
    except ImportError:
        return None
    except Exception as err:  # noqa: BLE001 - llvmlite's library or the compiler failed
        log.warning("the compiled epilogue is not available (%s: %s); using NumPy's passes",
                    type(err).__name__, err)
        return None
    return add_twice_z


class BlockWidener:
    """Widens float16 stored time courses to float32 one voxel block at a time, into a
    tile of the worker's, so a task holds no float32 copy of a float16 subject.

    torch's copy uses the CPU's F16C instructions: 26 us for a 240 x 1024 block here,
    against 420 us for NumPy's cast, which is the fallback without torch. torch runs on
    one thread meanwhile (the workers are the parallelism; its own threads would spin on
    their cores), and is given its thread count back by :meth:`close`.
    """

    def __init__(self):
        self._tiles = {}
        self._torch = None
        self._threads = None

    def start(self, sample):
        """Prepare torch in the calling (main) thread, with ``sample`` a stored float16 block."""
        if self._torch is not None:
            return
        try:
            import torch
        except ImportError:
            self._torch = False
            return
        self._threads = torch.get_num_threads()
        torch.set_num_threads(1)
        with warnings.catch_warnings():
            # The stored frames are a read-only memory map; they are only read. torch warns
            # once per process, so the workers' later calls do not warn.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            torch.from_numpy(sample[:1, :1])
        self._torch = torch

    def widen(self, worker, frames, start, stop):
        """frames[:, start:stop] as float32, in ``worker``'s tile (valid until its next call)."""
        n_frames, width = frames.shape[0], stop - start
        tile = self._tiles.get(worker)
        if tile is None or tile.shape[0] < n_frames or tile.shape[1] < width:
            tile = self._tiles[worker] = np.empty((n_frames, width), dtype=np.float32)
        out = tile[:n_frames, :width]
        if self._torch:
            self._torch.from_numpy(out).copy_(self._torch.from_numpy(frames[:, start:stop]))
        else:
            np.copyto(out, frames[:, start:stop])
        return out

    def close(self):
        if self._torch and self._threads is not None:
            self._torch.set_num_threads(self._threads)
        self._tiles = {}


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

    Memory beyond the sums: per worker thread, four tiles of lesions x block width in
    float32 (2 MiB up to L = 512, 4 L KiB above, where the width stops at 256 voxels),
    and for float16 frames one T x block width float32 tile. The caller keeps each
    group's frames resident during its pass.
    """

    subjects_per_pass = SUBJECTS_PER_PASS

    def __init__(self, sums, threads=1, compiled=False):
        """``compiled``: add z and z^2 with the compiled epilogue (when numba is there)."""
        n_lesions, _, n_voxels = sums.shape
        self.sums = sums
        # The class attribute is the largest pass (tests lower it); a small batch passes one subject.
        self.subjects_per_pass = subjects_per_pass_for(n_lesions, type(self).subjects_per_pass)
        self._add_twice_z = load_compiled_epilogue() if compiled else None
        self.width = block_width(n_lesions)
        self.blocks = [(start, min(start + self.width, n_voxels)) for start in range(0, n_voxels, self.width)]
        self.threads = max(1, min(int(threads), len(self.blocks)))
        # Per worker: the tile of r, a scratch tile, and the group's sums of 2z and (2z)^2.
        self._tiles = [np.empty((4, n_lesions, self.width), dtype=np.float32) for _ in range(self.threads)]
        self._widener = BlockWidener()
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

    def add_group(self, subjects, batch):
        """Add a group of subjects for every lesion of ``batch`` in one pass over the voxels.

        ``subjects``: (frames, norm, inv_stored_norm) per subject, at most
        SUBJECTS_PER_PASS of them (``norm``: each voxel's centred norm).
        """
        def seeds_of(subject):
            frames, norm, _ = subject
            return lesion_seeds(frames, norm, batch)

        # One worker builds all seeds of a subject, so they do not depend on the thread count.
        seeds = list(self._pool.map(seeds_of, subjects)) if self._pool is not None else map(seeds_of, subjects)
        self.add_subjects([(frames, inv_stored_norm, unit_seeds)
                           for (frames, _, inv_stored_norm), unit_seeds in zip(subjects, seeds)])

    def add_subjects(self, subjects):
        """Add (frames, inv_stored_norm, unit_seeds) per subject in one pass: ``frames``
        (T, V) stored time courses, float32 or float16 (widened here, block by block),
        ``unit_seeds`` (T, L) float64 unit-norm (or
        zero) lesion seeds. At most SUBJECTS_PER_PASS subjects, which bounds the float32
        sums' rounding."""
        if len(subjects) > SUBJECTS_PER_PASS:
            raise ValueError(f"{len(subjects)} subjects in one pass; at most {SUBJECTS_PER_PASS}")
        prepared = []
        for frames, inv_stored_norm, unit_seeds in subjects:
            if frames.dtype != np.float32:
                self._widener.start(frames)
            weights = np.ascontiguousarray(unit_seeds.T, dtype=np.float32)
            scale = None if unit_float32_storage(inv_stored_norm) else inv_stored_norm.astype(np.float32)
            prepared.append((frames, inv_stored_norm, unit_seeds, weights, scale))
        if prepared:
            self._each_worker(self._add_blocks, prepared)

    def add_subject(self, frames, inv_stored_norm, unit_seeds):
        """Add one subject (a pass of its own; see :meth:`add_subjects`)."""
        self.add_subjects([(frames, inv_stored_norm, unit_seeds)])

    def finish(self):
        """Complete the float64 sums (after the last subject): every pass already has."""

    def close(self):
        """Stop the worker threads and give BLAS its threads back (also after an error)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self._widener.close()
        self._blas_limit.restore_original_limits()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _add_blocks(self, worker, blocks, subjects):
        r_full, scratch_full, z_full, z2_full = self._tiles[worker]
        for start, stop in blocks:
            width = stop - start
            r, scratch = r_full[:, :width], scratch_full[:, :width]
            z_sum, z2_sum = z_full[:, :width], z2_full[:, :width]
            for index, (frames, inv_stored_norm, unit_seeds, weights, scale) in enumerate(subjects):
                block = (frames[:, start:stop] if frames.dtype == np.float32
                         else self._widener.widen(worker, frames, start, stop))
                np.matmul(weights, block, out=r)
                if scale is not None:
                    np.multiply(r, scale[start:stop], out=r)
                exact = None
                if max(r.max(), -r.min()) > FLOAT64_ABOVE:
                    exact = np.nonzero(np.abs(r, out=scratch) > FLOAT64_ABOVE)
                    r[exact] = 0.0  # their z goes into the float64 sums below
                if self._add_twice_z is not None:
                    if index == 0:
                        z_sum.fill(0.0)
                        z2_sum.fill(0.0)
                    self._add_twice_z(r_full, z_full, z2_full, width)
                elif index == 0:
                    z_sum[...] = log_ratio_inplace(r, scratch)
                    np.multiply(r, r, out=z2_sum)
                else:
                    np.add(z_sum, log_ratio_inplace(r, scratch), out=z_sum)
                    np.multiply(r, r, out=r)
                    np.add(z2_sum, r, out=z2_sum)
                if exact is not None:
                    add_exact_z(self.sums, unit_seeds, frames, inv_stored_norm, exact[0], exact[1] + start)
            np.multiply(z_sum, 0.5, out=z_sum)
            np.multiply(z2_sum, 0.25, out=z2_sum)
            block_sums = self.sums[:, :, start:stop]
            np.add(block_sums[:, 0], z_sum, out=block_sums[:, 0])
            np.add(block_sums[:, 1], z2_sum, out=block_sums[:, 1])


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
