"""The GPU kernel of a mapping task: the same arithmetic as the CPU kernel (``cpu``), in torch.

The kernel works on the whole voxel range at once (in column chunks that bound the
temporaries) and keeps the float64 sums on the device until the task ends. TF32 is
switched off: it would round the inputs of the product to 10 bits.

Measured on an H100 (docs/benchmarks.md), per subject (V = 230k, T = 240), three things
cost more than the matrix product, and are done here as follows:

* the subject is copied to the GPU through two small pinned buffers in turn (the CPU
  fills one while the other is on its way): 5-6 ms, where a plain copy from the
  page-cache mapping took 26-33 ms (7-8 GB/s against 54 GB/s from pinned memory);
* the lesion seeds are built on the GPU from the subject already there, by float64
  matrix products over chunks of lesion voxels (no atomic adds, whose order would vary
  from run to run): 3.7 ms at L = 1024, where NumPy on the CPU took 43-63 ms;
* the sums come back into the task's array through the same pinned buffers: 0.14 s at
  L = 1024, where a temporary copy in pageable memory took 2.7 s and doubled the
  task's host memory.

What is left at large L is the z transform and the adds, which stream the (L, V) values
through GPU memory several times (about 17 ms per subject at L = 1024, against 3.6 ms
for the product, when z and z^2 were added in float64 per subject). As on the CPU, z and
z^2 are now added into float32 running sums (z^2 by one fused multiply-add) and those go
into the float64 sums every RUNNING_SUBJECTS subjects: about 64 instead of about 106
bytes of GPU memory traffic per lesion-voxel value and subject (not yet measured on a
GPU). It also runs on torch's CPU device, which is how the tests check it without a GPU.
"""

from __future__ import annotations

import warnings

import numpy as np

from .cpu import FLOAT64_ABOVE, R_CLIP, SUBJECTS_PER_PASS, unit_float32_storage

CHUNK_ELEMENTS = 1 << 26  # lesions x voxels per chunk: 256 MiB of float32
EXACT_CHUNK = 1 << 16  # (lesion, voxel) pairs recomputed in float64 at a time
SEED_CHUNK = 4096  # lesion voxels gathered at a time to build the seeds
STAGING_ELEMENTS = 1 << 23  # float32 values per pinned staging buffer (32 MiB; two of them)
# Subjects summed in float32 before the float64 sums: the bound of the CPU kernel's pass.
RUNNING_SUBJECTS = SUBJECTS_PER_PASS


class TorchMapper:
    """Accumulates one task's subjects into float64 sums (L, 2, V) on a torch device."""

    subjects_per_pass = 1  # the sums stay on the device; grouping would only hold more frames

    def __init__(self, sums, device="cuda"):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
        self.out = sums
        self.sums = torch.zeros(sums.shape, dtype=torch.float64, device=self.device)
        self.running = torch.zeros(sums.shape, dtype=torch.float32, device=self.device)
        self.pending = 0  # subjects in the running sums
        n_lesions, _, n_voxels = sums.shape
        self.chunk = max(1024, CHUNK_ELEMENTS // max(1, n_lesions))
        self.n_voxels = n_voxels
        self._frames = None  # the subject on the device, reused
        self._staging = None  # [(pinned buffer, event of its last copy to the device)] x 2
        self._seed_plan = None

    # --- moving a subject to the device ----------------------------------------------
    def _upload(self, frames):
        """The subject's (T, V) float32 frames on the device."""
        torch = self.torch
        with warnings.catch_warnings():
            # The frames are a read-only memory map; the kernel only reads them.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            host = torch.from_numpy(frames)
        if self.device.type != "cuda":
            return host
        n_frames, n_voxels = host.shape
        if self._frames is None or self._frames.shape[0] < n_frames:
            self._frames = torch.empty((n_frames, n_voxels), dtype=torch.float32, device=self.device)
        if self._staging is None:
            rows = max(1, STAGING_ELEMENTS // n_voxels)
            self._staging = [(torch.empty((rows, n_voxels), dtype=torch.float32, pin_memory=True),
                              torch.cuda.Event()) for _ in range(2)]
        on_device = self._frames[:n_frames]
        rows = self._staging[0][0].shape[0]
        for piece, start in enumerate(range(0, n_frames, rows)):
            stop = min(start + rows, n_frames)
            buffer, copied = self._staging[piece % 2]
            copied.synchronize()  # its previous copy to the device has finished
            buffer[:stop - start].copy_(host[start:stop])
            on_device[start:stop].copy_(buffer[:stop - start], non_blocking=True)
            copied.record()
        return on_device

    # --- lesion seeds on the device ----------------------------------------------------
    def _plan_seeds(self, batch):
        """Per chunk of lesion voxels: its positions, the lesions it touches and, for each
        voxel, its lesion's column among those; plus each voxel's weight over its lesion's
        total weight (1 / lesion size unless the lesion values are weights)."""
        torch = self.torch
        counts = np.diff(batch.offsets)
        owner = np.repeat(np.arange(len(batch)), counts)
        totals = np.bincount(owner, weights=batch.weights, minlength=len(batch))
        chunks = []
        for start in range(0, owner.size, SEED_CHUNK):
            stop = min(start + SEED_CHUNK, owner.size)
            first, last = int(owner[start]), int(owner[stop - 1]) + 1
            chunks.append((start, stop, first, last, torch.from_numpy(owner[start:stop] - first).to(self.device)))
        self._seed_plan = (batch, torch.from_numpy(np.asarray(batch.positions, dtype=np.int64)).to(self.device),
                           batch.weights / np.maximum(totals, 1e-300)[owner], chunks)

    def lesion_seeds(self, frames_dev, norm, batch):
        """(T, L) float64 unit-norm (or zero) seeds, as cpu.lesion_seeds computes
        them, from the stored frames already on the device."""
        torch = self.torch
        if self._seed_plan is None or self._seed_plan[0] is not batch:
            self._plan_seeds(batch)
        _, positions, share, chunks = self._seed_plan
        weights = torch.from_numpy(norm[batch.positions] * share).to(self.device)
        seeds = torch.zeros((frames_dev.shape[0], len(batch)), dtype=torch.float64, device=self.device)
        for start, stop, first, last, column in chunks:
            # (T, voxels) @ (voxels, lesions): each voxel's weight in its lesion's column.
            spread = torch.zeros((stop - start, last - first), dtype=torch.float64, device=self.device)
            spread[torch.arange(stop - start, device=self.device), column] = weights[start:stop]
            seeds[:, first:last] += frames_dev[:, positions[start:stop]].to(torch.float64) @ spread
        seed_norm = seeds.square().sum(0).sqrt()
        inverse = torch.where(seed_norm > 0, 1.0 / seed_norm, torch.zeros_like(seed_norm))
        return seeds * inverse

    # --- accumulation ------------------------------------------------------------------
    def add_group(self, subjects, batch):
        """Add (frames, norm, inv_stored_norm) per subject for every lesion of ``batch``."""
        for frames, norm, inv_stored_norm in subjects:
            self.add_lesions(frames, norm, inv_stored_norm, batch)

    def add_lesions(self, frames, norm, inv_stored_norm, batch):
        """Add one subject for every lesion of ``batch``: the seeds are built here, on the device."""
        frames_dev = self._upload(frames)
        self._accumulate(frames_dev, inv_stored_norm, self.lesion_seeds(frames_dev, norm, batch))

    def add_subject(self, frames, inv_stored_norm, unit_seeds):
        """Add one subject: ``frames`` (T, V) float32 stored time courses, ``unit_seeds``
        (T, L) float64 unit-norm (or zero) lesion seeds."""
        frames_dev = self._upload(frames)
        self._accumulate(frames_dev, inv_stored_norm, self.torch.from_numpy(unit_seeds).to(self.device))

    def _accumulate(self, frames_dev, inv_stored_norm, seeds64):
        torch = self.torch
        weights = seeds64.T.to(torch.float32).contiguous()
        inv64 = torch.from_numpy(inv_stored_norm).to(self.device)
        scale = None if unit_float32_storage(inv_stored_norm) else inv64.to(torch.float32)
        for start in range(0, self.n_voxels, self.chunk):
            stop = min(start + self.chunk, self.n_voxels)
            r = weights @ frames_dev[:, start:stop]
            if scale is not None:
                r.mul_(scale[start:stop])
            exact = r.abs() > FLOAT64_ABOVE
            r.masked_fill_(exact, 0.0).atanh_()
            self.running[:, 0, start:stop].add_(r)
            self.running[:, 1, start:stop].addcmul_(r, r)
            lesions, voxels = torch.nonzero(exact, as_tuple=True)
            for begin in range(0, lesions.numel(), EXACT_CHUNK):
                some, at = lesions[begin:begin + EXACT_CHUNK], voxels[begin:begin + EXACT_CHUNK] + start
                r64 = (seeds64[:, some] * frames_dev[:, at].to(torch.float64)).sum(0) * inv64[at]
                z64 = r64.clamp_(-R_CLIP, R_CLIP).atanh_()
                self.sums[some, 0, at] += z64
                self.sums[some, 1, at] += z64 * z64
        self.pending += 1
        if self.pending == RUNNING_SUBJECTS:
            self._flush()

    def _flush(self):
        """Move the float32 running sums into the float64 sums."""
        if self.pending:
            self.sums.add_(self.running)
            self.running.zero_()
            self.pending = 0

    def finish(self):
        """Copy the sums from the device into the task's float64 array: through the
        pinned buffers in turn on a GPU (the GPU fills one while the CPU empties the other)."""
        torch = self.torch
        self._flush()
        out, sums = torch.from_numpy(self.out).view(-1), self.sums.view(-1)
        if self._staging is None:
            out.copy_(sums)
            return
        even = self._staging[0][0].numel() // 2 * 2  # float32 values that hold whole float64s
        buffers = [(buffer.view(-1)[:even].view(torch.float64), copied) for buffer, copied in self._staging]
        size = buffers[0][0].numel()
        starts = range(0, sums.numel(), size)

        def fetch(piece):
            start = starts[piece]
            stop = min(start + size, sums.numel())
            buffer, copied = buffers[piece % 2]
            buffer[:stop - start].copy_(sums[start:stop], non_blocking=True)
            copied.record()

        fetch(0)
        for piece, start in enumerate(starts):
            if piece + 1 < len(starts):
                fetch(piece + 1)  # into the other buffer, which the CPU has emptied already
            buffer, copied = buffers[piece % 2]
            copied.synchronize()
            stop = min(start + size, sums.numel())
            out[start:stop].copy_(buffer[:stop - start])

    def close(self):
        self.sums = self.running = self._frames = self._staging = self._seed_plan = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
