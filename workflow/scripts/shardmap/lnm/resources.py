"""Cluster requests of the lesion arm's first-level tasks: memory (MB) and runtime (minutes).

The group level's and the hub controls' requests are in ``group.resources`` and
``hubs.resources``.

Standard library only: these functions run in the Snakemake process when a job is
scheduled, after its inputs exist, and read only small files (NIfTI headers and the
JSON written by earlier tasks). The formulas are documented in config/README.md.
"""

from __future__ import annotations

import gzip
import math
import os
import struct

from ..resources import request_mb, runtime_minutes

# Effective whole-task speed of a mapping task per thread (matrix product plus the
# z transform and float64 accumulation), measured low on purpose: see docs/benchmarks.md.
MAPPING_FLOPS_PER_THREAD = 8e9
MAPPING_FLOPS_PER_GPU = 2e12
# Subjects per pass over the voxels in the CPU kernel: kernels.cpu.SUBJECTS_PER_PASS
# (this module is standard library only; tests/lnm/test_mapping_kernels.py keeps the two equal).
CPU_SUBJECTS_PER_PASS = 8
# ... from this many lesions on (kernels.cpu.GROUPED_FROM_LESIONS), else one subject per pass.
CPU_GROUPED_FROM_LESIONS = 32
# Reading and decompressing NIfTI (gzip) in the preparation task, bytes per second.
PREPARE_BYTES_PER_S = 60e6


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


def mask_info_mem_mb(mask_size_mb):
    """The mask read whole (a gzip-compressed mask expands by up to about 40 x)."""
    return request_mb(40 * mask_size_mb * 1e6)


def check_runs_mem_mb(mask_info):
    """The mask as a boolean grid, its voxel coordinates, and one run header at a time."""
    grid = math.prod(mask_info["shape"])
    return request_mb(grid * 9 + mask_info["n_voxels"] * 3 * 8)


def check_runs_runtime(run_paths):
    """A header read per run (a few ms each, also from a slow network filesystem)."""
    return runtime_minutes(0.05 * len(run_paths))


def prepare_shard_mem_mb(mask_info, run_paths, n_subjects):
    """Two runs decoded in memory (the one being gathered and the next subject's, decoded
    meanwhile), the subject's (T, V) float64 array (room for two runs of the longest), one
    run's mask voxels as stored and the float32/float16 copy written, the shard's norms and
    its degree sums (with their temporaries, 8 x V float64). At GSP1000's shape this asks
    for 1.5 GB of data; the task's peak RSS was 1.3-1.4 GB (docs/benchmarks.md)."""
    n_voxels = mask_info["n_voxels"]
    grid = math.prod(mask_info["shape"])
    headers = [nifti_header(p) for p in run_paths]
    frames = max(shape[3] if len(shape) > 3 else 1 for shape, _ in headers)
    value_bytes = max(size for _, size in headers)
    per_subject_frames = frames * 2  # a subject has one or more runs; keep room for two
    working = 2 * grid * frames * value_bytes + n_voxels * (per_subject_frames * 8 + frames * value_bytes
                                                            + per_subject_frames * 4)
    return request_mb(working + n_subjects * 2 * n_voxels * 8 + 8 * n_voxels * 8)


def prepare_prepared_shard_mem_mb(mask_info, subject_run_shapes):
    """As prepare_shard_mem_mb for a connectome prepared by another tool (lacuna,
    connectome_quick, Lead-DBS), from each subject's runs' (frames, connectome voxels) as
    their headers tell: two runs as read (this subject's and the next one's, read
    meanwhile; at most 8 bytes a value), a run's mask voxels as taken and as float64, the
    largest subject's (T, V) float64 copies (centred, unit, stored), the shard's norms and
    its degree sums. At GSP1000's shape (V = 292,019, T = 120) this data term is 2.3 GB;
    the task's peak RSS was 1.2-1.3 GB (docs/benchmarks.md, "Connectomes prepared by other
    tools")."""
    n_voxels = mask_info["n_voxels"]
    runs = [shape for shapes in subject_run_shapes for shape in shapes]
    run_frames = max(f for f, _ in runs)
    stored_voxels = max(v for _, v in runs)
    subject_frames = max(sum(f for f, _ in shapes) for shapes in subject_run_shapes)
    working = 2 * run_frames * stored_voxels * 8 + 2 * run_frames * n_voxels * 8 + 4 * n_voxels * subject_frames * 8
    return request_mb(working + len(subject_run_shapes) * 2 * n_voxels * 8 + 8 * n_voxels * 8)


def prepare_shard_runtime(run_paths):
    total = sum(os.path.getsize(p) for p in run_paths)
    return runtime_minutes(total * 4 / PREPARE_BYTES_PER_S)  # gzip expands about 4 x


def lesion_batch_mem_mb(mask_info, lesion_paths, coverage=False):
    """The largest lesion as read and as float64 copies, the mask grid and its voxel
    coordinates; with the coverage rule, also 64 sampled values per mask voxel (at most
    every mask voxel is near a lesion) and one chunk of sample points (12 MiB)."""
    largest = max(math.prod(nifti_header(p)[0][:3]) for p in lesion_paths)
    sampling = mask_info["n_voxels"] * 64 * 8 + 12 * 2 ** 20 if coverage else 0
    return request_mb(8 * (largest * 6 + math.prod(mask_info["shape"]) * 4 + mask_info["n_voxels"] * 8) + sampling)


def mapping_mem_mb(shard_info, n_lesions, device="cpu"):
    """Two groups of subjects' frames and norms (one group computed, the next one read
    meanwhile), the float64 sums (L x 2 x V) and small per-block tiles. On the CPU a group is
    CPU_SUBJECTS_PER_PASS subjects from CPU_GROUPED_FROM_LESIONS lesions on, else one (and
    never more than the shard has), as stored (the kernel
    widens float16 block by block); on a GPU one subject, widened to float32 (plus the
    stored copy being converted if float16)."""
    n_voxels = shard_info["n_voxels"]
    offsets = shard_info["frame_offsets"]
    max_frames = max(b - a for a, b in zip(offsets, offsets[1:]))
    float16 = shard_info["dtype"] == "float16"
    per_pass = CPU_SUBJECTS_PER_PASS if n_lesions >= CPU_GROUPED_FROM_LESIONS else 1
    held = 2 if device == "cuda" else min(2 * per_pass, len(offsets) - 1)  # subjects at once
    if device == "cuda":
        frames = max_frames * n_voxels * (held * 4 + (2 if float16 else 0))
    else:
        frames = max_frames * n_voxels * (2 if float16 else 4) * held
    sums = n_lesions * 2 * n_voxels * 8
    torch_import = 400e6 if float16 or device == "cuda" else 0  # torch widens float16 / runs the GPU kernel
    numba_import = 0 if device == "cuda" else 150e6  # a large CPU task loads the compiled epilogue
    norms = 16 * n_voxels * held
    return request_mb(frames + sums + norms + n_voxels * 8 * 6 + 32 * 2 ** 20 + torch_import + numba_import)


def mapping_runtime(shard_info, n_lesions, threads=1, device="cpu"):
    """Matrix product at a low per-thread rate plus reading the shard at 200 MB/s; on a
    GPU (``device`` cuda) the product costs little and the read dominates."""
    n_voxels = shard_info["n_voxels"]
    frames = shard_info["frame_offsets"][-1]
    flop = 2.0 * frames * n_voxels * n_lesions
    rate = MAPPING_FLOPS_PER_GPU if device == "cuda" else MAPPING_FLOPS_PER_THREAD * max(1, threads)
    return runtime_minutes(flop / rate + frames * n_voxels * 4 / 200e6)


def merge_mem_mb(n_lesions, n_voxels):
    return request_mb(2 * n_lesions * 2 * n_voxels * 8)


def maps_mem_mb(mask_info, copies=1):
    """Per-voxel statistics (float64) and three maps on the whole grid (float32);
    `copies` = 2 for the group maps (running sums plus one lesion's maps)."""
    return request_mb(copies * (12 * mask_info["n_voxels"] * 8 + 3 * math.prod(mask_info["shape"]) * 4))


# Writing one lesion's three maps takes a fraction of a second (one row of sums, three
# gzip-compressed images); 2 s each leaves room for a slow shared filesystem.
LESION_MAPS_SECONDS = 2.0


def lesion_maps_runtime(n_lesions):
    """One job writes the maps of a lesion batch."""
    return runtime_minutes(n_lesions * LESION_MAPS_SECONDS)
