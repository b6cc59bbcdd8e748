"""Arrays reused from one subject to the next by the shard preparation.

A subject at GSP1000's shape takes arrays of 140-280 MB (its mask voxels as read, as
float64, as stored). Allocated anew for every subject, each is fresh memory that the
kernel maps page by page on first touch, which this project's machines do at 0.4-5 GB/s
(about as long as decoding the subject, at the slow end). Reused, they are touched once
per task.
"""

from __future__ import annotations

import math

import numpy as np


class Buffers:
    """Named arrays that grow to the largest shape asked for and are then reused.

    An array handed out under a name is valid until the next request for that name: the
    preparation holds one subject at a time, so each name serves one subject's step.
    """

    def __init__(self):
        self._arrays = {}

    def get(self, name, shape, dtype):
        """An uninitialised array of ``shape`` and ``dtype`` (C order) under ``name``."""
        dtype = np.dtype(dtype)
        size = math.prod(shape)
        held = self._arrays.get(name)
        if held is None or held.dtype != dtype or held.size < size:
            held = np.empty(size, dtype=dtype)
            self._arrays[name] = held
        return held[:size].reshape(shape)


class FreshArrays(Buffers):
    """Buffers that keep nothing: every request is a new array (for one-off reads)."""

    def get(self, name, shape, dtype):
        return np.empty(shape, dtype=dtype)


def no_buffers():
    return FreshArrays()
