"""Cluster requests of the specificity test's tasks: memory (MB) and runtime (minutes).

Standard library only, like the first level's requests (``lnm.resources``): they run in
the Snakemake process when a job is scheduled. The formulas are documented in
config/README.md.
"""

from __future__ import annotations

import math

from ...resources import request_mb, runtime_minutes
from ..resources import nifti_header

# Permutation tasks are float64 matrix products of blocks of
# permutations with tiles of residuals, plus the t transform and the counts; the rate is
# set low on purpose (see docs/benchmarks.md). TFCE labels clusters at 100 heights per
# sign on the whole grid, about TFCE_SECONDS_PER_VOXEL per grid voxel and permutation.
PERMUTATION_FLOPS_PER_THREAD = 4e9
TFCE_SECONDS_PER_VOXEL = 4e-6  # measured 1.8-2.1e-6 (6 mm and 2 mm grids, one thread)
VOXEL_TILE = 2048  # glm.VOXEL_TILE (this module stays free of NumPy)
PERMUTATION_BLOCK = 64  # permutations.PERMUTATION_BLOCK


def _tiles(n_voxels):
    return -(-n_voxels // VOXEL_TILE)


def specificity_prepare_mem_mb(mask_info, n_lesions, map_paths=()):
    """The residuals file it writes (n_lesions x V x 8 bytes: written through a memory map,
    its pages count against the job until they reach the disk), a few voxel-length vectors
    per lesion read (its maps, counts, the padded row), three copies of one tile of
    residuals, the TFCE volumes on the whole grid, and for maps made elsewhere the largest
    map as float64 with its resampling coordinates. With n_lesions = 0 (the cases'
    sensitivity maps) no residuals."""
    n_voxels, grid = mask_info["n_voxels"], math.prod(mask_info["shape"])
    largest = max((math.prod(nifti_header(p)[0][:3]) for p in map_paths), default=0)
    residuals = n_lesions * _tiles(n_voxels) * VOXEL_TILE * 8
    return request_mb(residuals + 12 * n_voxels * 8 + 3 * n_lesions * VOXEL_TILE * 8 + 6 * grid * 8
                      + 2 * largest * 8 + (5 * n_voxels * 8 if map_paths else 0))


def specificity_prepare_runtime(mask_info, n_lesions, tfce):
    """Reading each map (0.5 s each: a gzip NIfTI or one lesion's sums), writing the
    residuals twice at 100 MB/s, and one TFCE."""
    n_voxels, grid = mask_info["n_voxels"], math.prod(mask_info["shape"])
    write = 2 * _tiles(n_voxels) * VOXEL_TILE * n_lesions * 8 / 100e6
    return runtime_minutes(0.5 * n_lesions + write + (grid * TFCE_SECONDS_PER_VOXEL if tfce else 0))


def permutation_mem_mb(mask_info, n_lesions, n_covariates, n_chunks, tfce):
    """The task's chunk of residuals (n_lesions x chunk voxels, float64: a memory map, but
    all of it is paged in and counts against the job), one tile copy, a block's products
    and t values ((1 + covariates) x PERMUTATION_BLOCK x tile, three copies); with TFCE the
    block's whole t maps and the volumes TFCE works on."""
    n_voxels, grid = mask_info["n_voxels"], math.prod(mask_info["shape"])
    chunk = -(-_tiles(n_voxels) // n_chunks) * VOXEL_TILE
    block = 3 * (1 + n_covariates) * PERMUTATION_BLOCK * VOXEL_TILE * 8
    whole = PERMUTATION_BLOCK * n_voxels * 8 + 8 * grid * 8 if tfce else 0
    return request_mb(n_lesions * chunk * 8 + n_lesions * VOXEL_TILE * 8 + block + whole + 4 * n_voxels * 8)


def permutation_runtime(mask_info, n_lesions, n_covariates, n_permutations, n_chunks, threads, tfce):
    """The matrix products at a low per-thread rate, reading the chunk at 200 MB/s, and
    one TFCE per permutation."""
    n_voxels, grid = mask_info["n_voxels"], math.prod(mask_info["shape"])
    chunk = -(-_tiles(n_voxels) // n_chunks) * VOXEL_TILE
    rows = n_permutations + 2 * PERMUTATION_BLOCK  # a task's range may start and end inside blocks
    flop = 2.0 * (1 + n_covariates) * rows * n_lesions * chunk
    seconds = flop / (PERMUTATION_FLOPS_PER_THREAD * max(1, threads)) + n_lesions * chunk * 8 / 200e6
    return runtime_minutes(seconds + (n_permutations * grid * TFCE_SECONDS_PER_VOXEL if tfce else 0))


def specificity_merge_mem_mb(mask_info, n_permutations):
    """The observed maps and p maps (float64, about 12 voxel-length vectors), the merged
    counts, the null maxima and one task's results at a time (tasks are read one by one)."""
    return request_mb(14 * mask_info["n_voxels"] * 8 + 4 * n_permutations * 8 + 3 * math.prod(mask_info["shape"]) * 4)
