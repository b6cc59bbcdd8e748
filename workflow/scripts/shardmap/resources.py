"""Honest cluster requests: memory (MB) and runtime (minutes) of each task.

Standard library only: these functions run in the Snakemake process when a job is
scheduled, after its inputs exist, and read only small files (NIfTI headers and the
JSON written by earlier tasks). The formulas are documented in config/README.md.
"""

from __future__ import annotations

import gzip
import json
import math
import struct

# Python, NumPy and nibabel loaded, before any data.
BASE_MB = 300
# Safety factor on the computed working set (allocator slack, temporaries).
SLACK = 1.25
# Effective whole-task speed of a mapping task per thread (matrix product plus the
# z transform and float64 accumulation), measured low on purpose: see docs/benchmarks.md.
MAPPING_FLOPS_PER_THREAD = 8e9
# Reading and decompressing NIfTI (gzip) in the preparation task, bytes per second.
PREPARE_BYTES_PER_S = 60e6
MIN_RUNTIME_MIN = 5


# Used when a header cannot be read: the task itself then stops with a clear message
# about the file, so the request only has to let it start.
UNREADABLE_HEADER = ((256, 256, 256, 1200), 4)


def nifti_header(path):
    """Shape and bytes per voxel of a NIfTI-1/2 file (.nii or .nii.gz), from its header only.

    A file that is missing or not NIfTI gives UNREADABLE_HEADER (a generous guess):
    resource requests must never hide the task's own error message behind a traceback.
    """
    try:
        return _read_nifti_header(path)
    except (OSError, EOFError, ValueError, struct.error):
        return UNREADABLE_HEADER


def _read_nifti_header(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        raw = handle.read(540)
    for order in "<>":
        size = struct.unpack(order + "i", raw[:4])[0]
        if size == 348:
            dims = struct.unpack(order + "8h", raw[40:56])
            bitpix = struct.unpack(order + "h", raw[72:74])[0]
            break
        if size == 540:
            bitpix = struct.unpack(order + "h", raw[14:16])[0]
            dims = struct.unpack(order + "8q", raw[16:80])
            break
    else:
        raise ValueError(f"'{path}' is not a NIfTI file")
    ndim = max(1, min(int(dims[0]), 7))
    return tuple(int(d) for d in dims[1:1 + ndim]), max(1, bitpix // 8)


def _mb(n_bytes):
    return int(math.ceil(BASE_MB + SLACK * n_bytes / 1e6))


def _minutes(seconds):
    return max(MIN_RUNTIME_MIN, int(math.ceil(1.5 * seconds / 60)))


def read_json(path):
    with open(path) as handle:
        return json.load(handle)


def prepare_shard_mem_mb(mask_info, run_paths, n_subjects):
    """One run's whole 4D array (float64 after scaling) plus the subject's (V, T) float64
    copies (centred, unit, stored) and the shard's norms."""
    n_voxels = mask_info["n_voxels"]
    grid = math.prod(mask_info["shape"])
    frames = [nifti_header(p)[0][3] if len(nifti_header(p)[0]) > 3 else 1 for p in run_paths]
    per_subject_frames = max(frames) * 2  # a subject has one or more runs; keep room for two
    working = grid * max(frames) * 8 + 4 * n_voxels * per_subject_frames * 8
    return _mb(working + n_subjects * 2 * n_voxels * 8)


def prepare_shard_runtime(run_paths):
    import os

    total = sum(os.path.getsize(p) for p in run_paths)
    return _minutes(total * 4 / PREPARE_BYTES_PER_S)  # gzip expands about 4 x


def lesion_batch_mem_mb(mask_info, lesion_paths):
    largest = max(math.prod(nifti_header(p)[0][:3]) for p in lesion_paths)
    return _mb(8 * (largest * 6 + math.prod(mask_info["shape"]) * 4 + mask_info["n_voxels"] * 8))


def mapping_mem_mb(shard_info, n_lesions):
    """One subject's frames as float32 (plus the stored copy if float16), the float64
    accumulators (L x 2 x V) and per-block scratch."""
    n_voxels = shard_info["n_voxels"]
    offsets = shard_info["frame_offsets"]
    max_frames = max(b - a for a, b in zip(offsets, offsets[1:]))
    store = 2 if shard_info["dtype"] == "float16" else 0
    frames = max_frames * n_voxels * (4 + store)
    accumulators = n_lesions * 2 * n_voxels * 8
    return _mb(frames + accumulators + n_voxels * 8 * 6 + 12 * 2 ** 20)


def mapping_runtime(shard_info, n_lesions, threads=1):
    n_voxels = shard_info["n_voxels"]
    frames = shard_info["frame_offsets"][-1]
    flop = 2.0 * frames * n_voxels * n_lesions
    return _minutes(flop / (MAPPING_FLOPS_PER_THREAD * max(1, threads)) + frames * n_voxels * 4 / 200e6)


def merge_mem_mb(n_lesions, n_voxels):
    return _mb(2 * n_lesions * 2 * n_voxels * 8)


def maps_mem_mb(mask_info):
    return _mb(12 * mask_info["n_voxels"] * 8 + 3 * math.prod(mask_info["shape"]) * 4)
