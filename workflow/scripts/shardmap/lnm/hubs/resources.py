"""Cluster requests of the hub controls' tasks: memory (MB) and runtime (minutes).

Standard library only, like the first level's requests (``lnm.resources``): they run in
the Snakemake process when a job is scheduled. The formulas are documented in
config/README.md.
"""

from __future__ import annotations

import math

from ...resources import request_mb, runtime_minutes


def degree_map_mem_mb(mask_info):
    """The merged degree sums (3 x V float64), one shard's sums and two maps on the grid."""
    return request_mb(6 * mask_info["n_voxels"] * 8 + 2 * math.prod(mask_info["shape"]) * 4)


def hub_bias_mem_mb(mask_info, n_group_maps):
    """The degree map, the group maps and one lesion's maps and voxel flags (V each)."""
    return request_mb((n_group_maps + 16) * mask_info["n_voxels"] * 8 + 2 * math.prod(mask_info["shape"]) * 4)


def null_lesions_mem_mb(mask_info, n_source_voxels):
    """The mask's coordinates (grid and mm, 48 bytes a voxel), a position per grid voxel,
    the distances of the sphere method and the source lesions' voxels."""
    return request_mb(64 * mask_info["n_voxels"] + 8 * math.prod(mask_info["shape"]) + 32 * n_source_voxels)


# Null lesions placed per second: a sphere sorts the distances of all mask voxels
# (about 10 ms at 230k voxels, measured); a shift needs a few tries of the lesion's voxels.
NULL_LESIONS_PER_S_AT_230K = 50.0


def null_lesions_runtime(mask_info, n_null):
    return runtime_minutes(n_null / NULL_LESIONS_PER_S_AT_230K * max(1.0, mask_info["n_voxels"] / 230_000))


NULL_BLOCK_BYTES = 1 << 24  # null_maps.BLOCK_BYTES (this module stays free of NumPy)
# float32 products of null-group selections with blocks of null hits: measured 72 GFLOP/s
# on this project's 2-core VM (docs/benchmarks.md); set low for a slow or shared node.
NULL_GROUP_FLOPS = 10e9


def null_group_maps_mem_mb(mask_info, n_lesions, n_null, n_groups, n_resamples):
    """Per group: eight maps over the mask and its null-group selection (resamples x null
    lesions, float32); per voxel block: the maps of all real and null lesions and the
    null groups' counts."""
    width = max(256, NULL_BLOCK_BYTES // (8 * max(n_null, 1)))
    per_group = 8 * mask_info["n_voxels"] * 8 + n_resamples * n_null * 4
    block = 6 * (n_lesions + n_null) * width * 8 + 3 * n_resamples * width * 4
    return request_mb(n_groups * per_group + block + 2 * math.prod(mask_info["shape"]) * 4)


def null_group_maps_runtime(mask_info, n_null, n_groups, n_resamples):
    """Two products (positive, negative) per group of the selection with the null hits,
    counted as if every group had all the null lesions."""
    flops = 2 * 2 * n_groups * n_resamples * n_null * mask_info["n_voxels"]
    return runtime_minutes(flops / NULL_GROUP_FLOPS + 60)
