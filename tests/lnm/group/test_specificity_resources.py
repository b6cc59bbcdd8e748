"""The permutation task's memory: within what the rule asks the cluster for, and set by the
task's voxels and lesions, not by its number of permutations."""

import json
import subprocess
import sys
import textwrap

import numpy as np

from shardmap import resources as res
from shardmap.lnm.group import glm, permutations
from shardmap.lnm.group import resources as group_res


def test_the_request_formulas_use_the_library_sizes():
    assert group_res.VOXEL_TILE == glm.VOXEL_TILE
    assert group_res.PERMUTATION_BLOCK == permutations.PERMUTATION_BLOCK


CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    from shardmap.lnm.group.glm import PreparedGLM
    from shardmap.lnm.group.permutations import run_null_shard
    residuals_path, n_voxels, n_covariates, n_permutations = sys.argv[1], *map(int, sys.argv[2:])
    residuals = np.load(residuals_path, mmap_mode="r")
    n = residuals.shape[1]
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(np.column_stack([np.ones(n), rng.normal(size=(n, n_covariates))]))
    x = rng.normal(size=n)
    x -= basis @ (basis.T @ x)
    glm = PreparedGLM(x / np.linalg.norm(x), basis, n - 2 - n_covariates)
    observed = np.abs(rng.normal(size=n_voxels)) * 3
    run_null_shard(residuals, glm, observed, n_voxels, 0, n_permutations, (0, n_permutations),
                   (0, residuals.shape[0]))
    with open("/proc/self/status") as handle:
        peak = next(int(line.split()[1]) / 1024 for line in handle if line.startswith("VmHWM:"))
    print(json.dumps({"peak_mb": peak}))
""")


def peak_mb(tmp_path, residuals_path, n_voxels, n_covariates, n_permutations):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    out = subprocess.run([sys.executable, str(script), str(residuals_path), str(n_voxels), str(n_covariates),
                          str(n_permutations)], capture_output=True, text=True, check=True,
                         env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
                              "PYTHONPATH": ":".join(sys.path)})
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def test_peak_memory_is_within_the_request_and_not_set_by_the_permutations(tmp_path):
    n_lesions, n_voxels, n_covariates = 300, 60_000, 2
    n_tiles = -(-n_voxels // glm.VOXEL_TILE)
    residuals = np.lib.format.open_memmap(tmp_path / "residuals.npy", mode="w+", dtype=np.float64,
                                          shape=(n_tiles, n_lesions, glm.VOXEL_TILE))
    residuals[:] = np.random.default_rng(1).normal(size=residuals.shape) / np.sqrt(n_lesions)
    residuals.flush()
    del residuals
    few = peak_mb(tmp_path, tmp_path / "residuals.npy", n_voxels, n_covariates, 64)
    many = peak_mb(tmp_path, tmp_path / "residuals.npy", n_voxels, n_covariates, 512)
    mask_info = {"n_voxels": n_voxels, "shape": [50, 40, 30]}
    request = group_res.permutation_mem_mb(mask_info, n_lesions, n_covariates, 1, tfce=False)
    # The request also covers the cluster job's Snakemake processes, which this child lacks.
    print(f"peak {few:.0f} MB (64 permutations), {many:.0f} MB (512); request {request} MB")
    assert many <= request - res.SNAKEMAKE_MB, (many, request)
    assert many - few < 30, (few, many)  # 8 x more permutations, the same working set
