"""The GPU kernel of a mapping task: the same arithmetic as mapping_numpy, in torch.

On a GPU the matrix product and the z transform cost little next to moving each subject
(T x V float32) to the device, so this kernel works on the whole voxel range at once (in
column chunks that bound the temporaries) and keeps the float64 sums on the device until
the task ends. TF32 is switched off: it would round the inputs of the product to 10 bits.
It also runs on torch's CPU device, which is how the tests check it without a GPU.
"""

from __future__ import annotations

import warnings

import numpy as np

from .mapping_numpy import FLOAT64_ABOVE, R_CLIP, unit_float32_storage

CHUNK_ELEMENTS = 1 << 26  # lesions x voxels per chunk: 256 MiB of float32
EXACT_CHUNK = 1 << 16  # (lesion, voxel) pairs recomputed in float64 at a time


def cuda_available():
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


class TorchMapper:
    """Accumulates one task's subjects into float64 sums (L, 2, V) on a torch device."""

    def __init__(self, sums, device="cuda"):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
        self.out = sums
        self.sums = torch.zeros(sums.shape, dtype=torch.float64, device=self.device)
        n_lesions, _, n_voxels = sums.shape
        self.chunk = max(1024, CHUNK_ELEMENTS // max(1, n_lesions))
        self.n_voxels = n_voxels

    def add_subject(self, frames, inv_stored_norm, unit_seeds):
        torch = self.torch
        with warnings.catch_warnings():
            # The frames are a read-only memory map; the kernel only reads them.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            frames_dev = torch.from_numpy(frames).to(self.device)
        seeds64 = torch.from_numpy(unit_seeds).to(self.device)  # (T, L)
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
            z = r.to(torch.float64)
            self.sums[:, 0, start:stop] += z
            self.sums[:, 1, start:stop] += z.mul_(z)
            lesions, voxels = torch.nonzero(exact, as_tuple=True)
            for begin in range(0, lesions.numel(), EXACT_CHUNK):
                some, at = lesions[begin:begin + EXACT_CHUNK], voxels[begin:begin + EXACT_CHUNK] + start
                r64 = (seeds64[:, some] * frames_dev[:, at].to(torch.float64)).sum(0) * inv64[at]
                z64 = r64.clamp_(-R_CLIP, R_CLIP).atanh_()
                self.sums[some, 0, at] += z64
                self.sums[some, 1, at] += z64 * z64

    def finish(self):
        """Copy the sums from the device into the task's float64 array."""
        np.copyto(self.out, self.sums.cpu().numpy())

    def close(self):
        self.sums = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
