"""Speed and peak memory of one specificity permutation task against nilearn's
``permuted_ols``, on synthetic lesion maps made here (no download), and the projection
of a large study from the measurement.

One run measures, side by side and single-threaded (BLAS limited to one thread in every
child process):

* the one-time preparation, ``lnm.specificity.prepare_specificity`` (the maps put
  tile-major into a memory-mapped .npy, residualised on the nuisance, observed t), each
  run in a fresh process;
* our permutation task, ``lnm.permutations.run_null_shard`` over every tile of the
  prepared residuals (a memory map, as the workflow's task opens it) for ``--perms``
  permutations, in a fresh process so that its peak RSS (VmHWM) is its own;
* nilearn's ``permuted_ols`` on the same maps, design and covariates (intercept in the
  model, two-sided, n_jobs=1) for ``--nilearn-perms`` permutations, timed as a whole
  call and, separately, its permutation loop alone;
* once, where a block of permutations spends its time: drawing the permutations
  (block_weights), the matrix product, the t of each product, the max and the counts.

Runs alternate (ours, nilearn, ours, nilearn, ...) and the tables give medians. The
projection scales the measured permutations per second by lesions x voxels (the cost of
a permutation is linear in both) to a study of ``--project-lesions`` x
``--project-voxels`` x ``--project-perms`` split into ``--project-tasks`` tasks.

    python benchmarks/lnm_permutations.py            # the table of docs/benchmarks.md
    python benchmarks/lnm_permutations.py --smoke    # tiny sizes, for CI
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))

from measure import peak_rss_mb  # noqa: E402

COVARIATES = ("lesion_volume", "age")
SEED = 1


@dataclass(frozen=True)
class BenchLesion:
    """What the design needs of a lesion row."""

    lesion_id: str
    group: str


# --- data and design ---------------------------------------------------------------


def make_maps(folder, n_lesions, n_cases, n_voxels, seed=0):
    """Random maps (n_lesions, n_voxels) float64 written row by row to maps.npy, and the
    design (the first n_cases are cases; covariates lesion volume and age) to design.json.
    The values do not change the cost of either method."""
    import numpy as np

    rng = np.random.default_rng(seed)
    maps = np.lib.format.open_memmap(Path(folder) / "maps.npy", mode="w+", dtype=np.float64,
                                     shape=(n_lesions, n_voxels))
    for row in range(n_lesions):
        maps[row] = rng.standard_normal(n_voxels)
    maps.flush()
    del maps
    design = {"n_cases": n_cases,
              "covariates": {"lesion_volume": rng.lognormal(8.0, 1.0, n_lesions).tolist(),
                             "age": rng.normal(60.0, 12.0, n_lesions).tolist()}}
    (Path(folder) / "design.json").write_text(json.dumps(design))


def load_design(folder):
    """(selected, covariates) in the form of design.select_design_lesions / sheet_covariate_values."""
    design = json.loads((Path(folder) / "design.json").read_text())
    n_lesions = len(design["covariates"][COVARIATES[0]])
    selected = [(BenchLesion(f"lesion-{i:05d}", "case" if i < design["n_cases"] else "control"),
                 1 if i < design["n_cases"] else 0) for i in range(n_lesions)]
    return selected, design["covariates"]


def bench_mask(n_voxels):
    """A brain mask of n_voxels in a row (prepare_specificity uses its size and fingerprint)."""
    import nibabel as nib
    import numpy as np

    from shardmap.lnm.nifti import BrainMask

    return BrainMask("bench-mask", (n_voxels, 1, 1), np.eye(4), np.arange(n_voxels, dtype=np.int64),
                     nib.Nifti1Header())


def paths_in(folder):
    folder = Path(folder)
    return {"maps": folder / "maps.npy", "residuals": folder / "residuals.npy", "glm": folder / "glm.npz",
            "design": folder / "design.tsv"}


def blas_threads():
    from threadpoolctl import threadpool_info

    return sorted({info["num_threads"] for info in threadpool_info() if info.get("user_api") == "blas"})


# --- child processes -----------------------------------------------------------------


def child_prepare(folder):
    """prepare_specificity on the maps, timed. Each map is read from maps.npy (in the page
    cache) when the library asks for it, as it would be read from its NIfTI file (whose
    decoding is not part of this time), so the input does not count in the peak RSS."""
    import numpy as np

    from shardmap.lnm.group.design_maps import DesignMap
    from shardmap.lnm.group.specificity import prepare_specificity

    paths = paths_in(folder)
    selected, covariates = load_design(folder)
    maps = np.load(paths["maps"], mmap_mode="r")
    n_voxels, header = maps.shape[1], maps.offset
    del maps
    mask = bench_mask(n_voxels)

    def design_maps():
        for row, (lesion, _) in enumerate(selected):
            values = np.fromfile(paths["maps"], dtype=np.float64, count=n_voxels, offset=header + row * n_voxels * 8)
            yield DesignMap(lesion.lesion_id, values, values, None)

    started = time.perf_counter()
    prepare_specificity(design_maps(), selected, covariates, list(COVARIATES), mask, False,
                        paths["design"], paths["residuals"], paths["glm"])
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "blas_threads": blas_threads()}


def child_ours(folder, n_perms):
    """One permutation task over every tile: n_perms permutations of a study of n_perms."""
    import numpy as np

    from shardmap.lnm.group.permutations import run_null_shard
    from shardmap.lnm.group.specificity import load_prepared

    imports_mb = peak_rss_mb()
    paths = paths_in(folder)
    started = time.perf_counter()
    glm, observed = load_prepared(paths["glm"])
    residuals = np.load(paths["residuals"], mmap_mode="r")
    loaded = time.perf_counter()
    t = observed["t"]
    shard = run_null_shard(residuals, glm, np.abs(t), t.size, SEED, n_perms, (0, n_perms), (0, residuals.shape[0]))
    seconds = time.perf_counter() - loaded
    return {"seconds": seconds, "load_seconds": loaded - started, "peak_rss_mb": peak_rss_mb(),
            "imports_rss_mb": imports_mb, "residuals_mb": residuals.nbytes / 2 ** 20,
            "max_t_median": float(np.median(shard.max_t)), "blas_threads": blas_threads()}


def child_nilearn(folder, n_perms):
    """nilearn's permuted_ols on the same maps and design; its permutation loop
    (_permuted_ols_on_chunk, in this process with n_jobs=1) timed on its own."""
    import warnings

    import numpy as np
    from nilearn.mass_univariate import permuted_least_squares, permuted_ols

    imports_mb = peak_rss_mb()
    paths = paths_in(folder)
    selected, covariates = load_design(folder)
    tested = np.array([[float(case)] for _, case in selected])
    confounds = np.column_stack([np.asarray(covariates[name], dtype=np.float64) for name in COVARIATES])
    maps = np.load(paths["maps"])
    loop = {"seconds": 0.0}
    chunk = permuted_least_squares._permuted_ols_on_chunk

    def timed_chunk(*args, **kwargs):
        began = time.perf_counter()
        try:
            return chunk(*args, **kwargs)
        finally:
            loop["seconds"] += time.perf_counter() - began

    permuted_least_squares._permuted_ols_on_chunk = timed_chunk
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = permuted_ols(tested, maps, confounding_vars=confounds, model_intercept=True, n_perm=n_perms,
                           two_sided_test=True, random_state=0, n_jobs=1, output_type="dict")
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    # The same model as ours: the observed t must agree.
    with np.load(paths["glm"]) as prepared:
        t_difference = float(np.max(np.abs(out["t"][0] - prepared["t"])))
    return {"seconds": seconds, "loop_seconds": loop["seconds"], "peak_rss_mb": peak, "imports_rss_mb": imports_mb,
            "t_max_abs_difference": t_difference, "blas_threads": blas_threads()}


def child_breakdown(folder, n_blocks):
    """Where a block of PERMUTATION_BLOCK permutations spends its time, over every tile of
    a mapping already paged in: block_weights, the product, the t, the max and counts."""
    import numpy as np

    from shardmap.lnm.group.glm import VOXEL_TILE
    from shardmap.lnm.group.permutations import PERMUTATION_BLOCK, block_t, block_weights, exceedance_thresholds
    from shardmap.lnm.group.specificity import load_prepared

    paths = paths_in(folder)
    glm, observed = load_prepared(paths["glm"])
    residuals = np.load(paths["residuals"], mmap_mode="r")
    n_tiles, n_lesions, _ = residuals.shape
    n_voxels = observed["t"].size
    thresholds = np.zeros(n_tiles * VOXEL_TILE)
    thresholds[:n_voxels] = exceedance_thresholds(np.abs(observed["t"]))
    clock = time.perf_counter()
    for tile in range(n_tiles):  # page the mapping in (from the page cache), with one pass over it
        np.asarray(residuals[tile]).max()
    page_in = time.perf_counter() - clock
    parts = dict.fromkeys(("block_weights", "product", "t", "max_and_counts"), 0.0)
    size = PERMUTATION_BLOCK
    for block in range(n_blocks):
        clock = time.perf_counter()
        weights = block_weights(glm, SEED, block * size, (block + 1) * size)
        parts["block_weights"] += time.perf_counter() - clock
        for tile in range(n_tiles):
            data = np.asarray(residuals[tile])
            clock = time.perf_counter()
            weights @ data
            parts["product"] += time.perf_counter() - clock
            clock = time.perf_counter()
            t = block_t(weights, data, size, glm.dof)
            parts["t"] += time.perf_counter() - clock  # less the product, below
            clock = time.perf_counter()
            magnitude = np.abs(t)
            magnitude.max(axis=1)
            (magnitude >= thresholds[tile * VOXEL_TILE:(tile + 1) * VOXEL_TILE]).sum(axis=0)
            parts["max_and_counts"] += time.perf_counter() - clock
    parts["t"] -= parts["product"]
    rows = weights.shape[0]
    flops = 2.0 * rows * n_lesions * VOXEL_TILE * n_tiles * n_blocks
    # The best this core does: a large square float64 product, and (for comparison) the
    # task's product shape in float32.
    rng = np.random.default_rng(0)
    square = rng.standard_normal((2048, 2048))
    best = []
    for _ in range(3):
        clock = time.perf_counter()
        square @ square
        best.append(time.perf_counter() - clock)
    weights32, tile32 = weights.astype(np.float32), np.asarray(residuals[0], dtype=np.float32)
    single = []
    for _ in range(3):
        clock = time.perf_counter()
        for _ in range(n_tiles):
            weights32 @ tile32
        single.append(time.perf_counter() - clock)
    per_permutation = {name: seconds / (n_blocks * size) for name, seconds in parts.items()}
    return {"per_permutation_s": per_permutation, "product_rows": rows, "page_in_s": page_in,
            "product_gflops": flops / parts["product"] / 1e9,
            "square_float64_gflops": 2.0 * 2048 ** 3 / median(best) / 1e9,
            "task_shape_float32_gflops": 2.0 * rows * n_lesions * VOXEL_TILE * n_tiles / median(single) / 1e9,
            "blas_threads": blas_threads()}


# --- parent --------------------------------------------------------------------------


def child(args_list, env):
    """Run this script's child step in a fresh process; its JSON plus the process's wall time."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, *args_list], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"child {args_list} failed ({out.returncode})")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_wall_seconds"] = wall
    return result


def computed_permutations(n_permutations, shard_size):
    """Permutations the slowest task computes: a task whose range starts or ends inside a
    block of PERMUTATION_BLOCK computes the whole block."""
    from shardmap.lnm.group.permutations import PERMUTATION_BLOCK, permutation_ranges

    most = 0
    for start, stop in permutation_ranges(n_permutations, shard_size):
        first = start - start % PERMUTATION_BLOCK
        blocks = range(first, stop, PERMUTATION_BLOCK)
        most = max(most, sum(min(b + PERMUTATION_BLOCK, n_permutations) - b for b in blocks))
    return most


def predicted_rss_mb(n_lesions, n_voxels, n_covariates, imports_mb):
    """The memory formula of a task covering every tile: the residuals paged in, four
    voxel-length vectors (t, |t|, thresholds, counts), one block's temporaries."""
    from shardmap.lnm.group.glm import VOXEL_TILE
    from shardmap.lnm.group.permutations import PERMUTATION_BLOCK, tile_count

    padded = tile_count(n_voxels) * VOXEL_TILE
    rows = (1 + n_covariates) * PERMUTATION_BLOCK
    residuals = n_lesions * padded * 8
    vectors = 4 * n_voxels * 8
    # weights, products, then about five (block x tile) arrays: c^2, rss, t, |t|, comparisons
    block = rows * n_lesions * 8 + rows * VOXEL_TILE * 8 + 5 * PERMUTATION_BLOCK * VOXEL_TILE * 8
    return {"residuals_mb": residuals / 2 ** 20, "vectors_mb": vectors / 2 ** 20, "block_mb": block / 2 ** 20,
            "imports_mb": imports_mb, "total_mb": imports_mb + (residuals + vectors + block) / 2 ** 20}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lesions", type=int, default=500)
    parser.add_argument("--cases", type=int, help="cases among the lesions (default: half)")
    parser.add_argument("--voxels", type=int, default=230_000)
    parser.add_argument("--perms", type=int, default=512, help="permutations of one run of our task")
    parser.add_argument("--nilearn-perms", type=int, default=64, help="permutations of one nilearn run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--breakdown-blocks", type=int, default=2)
    parser.add_argument("--project-lesions", type=int, default=2000)
    parser.add_argument("--project-voxels", type=int, default=292_019)
    parser.add_argument("--project-perms", type=int, default=10_000)
    parser.add_argument("--project-tasks", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--goal-tasks", type=int, default=50)
    parser.add_argument("--goal-minutes", type=float, default=10.0)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        steps = {"prepare": lambda: child_prepare(args.folder), "ours": lambda: child_ours(args.folder, args.n),
                 "nilearn": lambda: child_nilearn(args.folder, args.n),
                 "breakdown": lambda: child_breakdown(args.folder, args.n)}
        print(json.dumps(steps[args.step]()))
        return
    if args.smoke:
        args.lesions, args.voxels, args.perms, args.nilearn_perms = 40, 5000, 64, 8
        args.repeats, args.breakdown_blocks = 1, 1
    cases = args.cases if args.cases is not None else args.lesions // 2
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1] / "workflow" / "scripts")]
                                        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMPDIR")) as folder:
        started = time.perf_counter()
        make_maps(folder, args.lesions, cases, args.voxels)
        gigabytes = args.lesions * args.voxels * 8 / 1e9
        print(f"{args.lesions} lesions ({cases} cases, {args.lesions - cases} controls, covariates "
              f"{', '.join(COVARIATES)}) x {args.voxels} voxels, float64 maps {gigabytes:.2f} GB; BLAS 1 thread; "
              f"{args.repeats} run(s) each, medians; made in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        prepares = [child(["--step", "prepare", "--folder", folder], env) for _ in range(args.repeats)]
        ours, theirs = [], []
        for _ in range(args.repeats):
            ours.append(child(["--step", "ours", "--folder", folder, "--n", str(args.perms)], env))
            theirs.append(child(["--step", "nilearn", "--folder", folder, "--n", str(args.nilearn_perms)], env))
        breakdown = child(["--step", "breakdown", "--folder", folder, "--n", str(args.breakdown_blocks)], env)
    report(args, cases, prepares, ours, theirs, breakdown)


def joined(values, digits=1):
    return " / ".join(f"{value:.{digits}f}" for value in values)


def report(args, cases, prepares, ours, theirs, breakdown):
    threads = sorted({n for run in prepares + ours + theirs + [breakdown] for n in run["blas_threads"]})
    ours_rate = median(args.perms / r["seconds"] for r in ours)
    nilearn_rate = median(args.nilearn_perms / r["seconds"] for r in theirs)
    loop_rate = median(args.nilearn_perms / r["loop_seconds"] for r in theirs)
    setup = median(r["seconds"] - r["loop_seconds"] for r in theirs)
    overhead = median(r["process_wall_seconds"] - r["seconds"] for r in ours)
    prepare_s = median(r["seconds"] for r in prepares)
    prediction = predicted_rss_mb(args.lesions, args.voxels, len(COVARIATES), median(r["imports_rss_mb"] for r in ours))
    peak_ours = max(r["peak_rss_mb"] for r in ours)

    print(f"\nBLAS threads seen in the children: {threads}\n")
    print("| method | permutations per run | median s per run | permutations/s | the runs (permutations/s) "
          "| peak RSS MB |")
    print("|---|---|---|---|---|---|")
    print(f"| shardmap run_null_shard (all tiles) | {args.perms} | {median(r['seconds'] for r in ours):.2f} | "
          f"{ours_rate:.1f} | {joined(args.perms / r['seconds'] for r in ours)} | {peak_ours:.0f} |")
    print(f"| nilearn permuted_ols, whole call | {args.nilearn_perms} | {median(r['seconds'] for r in theirs):.2f} | "
          f"{nilearn_rate:.2f} | {joined((args.nilearn_perms / r['seconds'] for r in theirs), 2)} | "
          f"{max(r['peak_rss_mb'] for r in theirs):.0f} |")
    print(f"| nilearn permuted_ols, permutation loop only | {args.nilearn_perms} | "
          f"{median(r['loop_seconds'] for r in theirs):.2f} | {loop_rate:.2f} | "
          f"{joined((args.nilearn_perms / r['loop_seconds'] for r in theirs), 2)} | - |")
    print(f"\nours / nilearn: {ours_rate / nilearn_rate:.1f} x the whole call, {ours_rate / loop_rate:.1f} x its "
          f"loop (nilearn's set-up before the loop: {setup:.1f} s)")
    print(f"observed t, nilearn against ours: max |difference| {max(r['t_max_abs_difference'] for r in theirs):.2e}")
    print(f"our task besides run_null_shard: process start and imports plus loading the GLM file "
          f"{overhead:.2f} s (median)")
    print(f"prepare_specificity (one time): {prepare_s:.2f} s median ({joined((r['seconds'] for r in prepares), 2)}),"
          f" peak RSS {max(r['peak_rss_mb'] for r in prepares):.0f} MB")
    print(f"\nmemory of our task: measured peak RSS {peak_ours:.0f} MB; formula {prediction['total_mb']:.0f} MB = "
          f"imports {prediction['imports_mb']:.0f} + residuals {prediction['residuals_mb']:.0f} (n x padded V x 8, "
          f"paged in) + vectors {prediction['vectors_mb']:.1f} + one block {prediction['block_mb']:.1f}")

    per = breakdown["per_permutation_s"]
    total = sum(per.values())
    print(f"\nwhere a permutation's time goes (one run, {args.breakdown_blocks} block(s) of 64, mapping paged in):")
    print("| part | ms per permutation | share |")
    print("|---|---|---|")
    for name, seconds in per.items():
        print(f"| {name} | {1000 * seconds:.2f} | {100 * seconds / total:.0f} % |")
    print(f"paging in the residuals' mapping (page cache) with one max over it: {breakdown['page_in_s']:.2f} s "
          "per task, not in the table")
    print(f"product: {breakdown['product_rows']} rows x {args.lesions} lesions x the tile, "
          f"{breakdown['product_gflops']:.1f} GFLOP/s; this core's float64 2048^3: "
          f"{breakdown['square_float64_gflops']:.1f} GFLOP/s; the task's product in float32: "
          f"{breakdown['task_shape_float32_gflops']:.1f} GFLOP/s")

    scale = (args.lesions * args.voxels) / (args.project_lesions * args.project_voxels)
    big_rate = ours_rate * scale
    big_prepare = prepare_s / scale
    big_prediction = predicted_rss_mb(args.project_lesions, args.project_voxels, len(COVARIATES),
                                      prediction["imports_mb"])
    print(f"\nprojection (from the measurement, scaled by lesions x voxels, x {1 / scale:.2f}): "
          f"{args.project_lesions} lesions x {args.project_voxels} voxels x {args.project_perms} permutations; "
          f"{big_rate:.2f} permutations/s per task; prepare {big_prepare:.0f} s once; "
          f"memory per task {big_prediction['total_mb'] / 1024:.1f} GiB (formula)")
    print("| tasks | permutations per task (computed: whole blocks) | per task s | prepare + one task, minutes "
          "(tasks at once) | core-minutes of the tasks |")
    print("|---|---|---|---|---|")
    projection = []
    for n_tasks in args.project_tasks:
        shard = -(-args.project_perms // n_tasks)
        computed = computed_permutations(args.project_perms, shard)
        task_s = computed / big_rate + overhead
        projection.append({"tasks": n_tasks, "permutations_per_task": shard, "computed": computed,
                           "task_seconds": task_s, "wall_minutes": (big_prepare + task_s) / 60,
                           "core_minutes": n_tasks * task_s / 60})
        print(f"| {n_tasks} | {shard} ({computed}) | {task_s:.0f} | {(big_prepare + task_s) / 60:.1f} | "
              f"{n_tasks * task_s / 60:.0f} |")
    goal = next((p for p in projection if p["tasks"] == args.goal_tasks), None)
    if goal:
        print(f"goal, {args.project_perms} permutations of {args.project_lesions} lesions under "
              f"{args.goal_minutes:g} minutes on {args.goal_tasks} tasks: "
              f"{'met' if goal['wall_minutes'] < args.goal_minutes else 'NOT met'} ({goal['wall_minutes']:.1f} min, "
              "projected)")
    print(f"goal, per task at least nilearn's speed: {'met' if ours_rate >= loop_rate else 'NOT met'} "
          f"({ours_rate:.1f} against {loop_rate:.2f} permutations/s, measured)")
    if args.smoke:
        print("(smoke sizes: fixed costs dominate, so the comparison, projection and goals above mean nothing)")

    results = {"lesions": args.lesions, "cases": cases, "voxels": args.voxels, "perms": args.perms,
               "nilearn_perms": args.nilearn_perms, "repeats": args.repeats, "blas_threads": threads,
               "ours": ours, "nilearn": theirs, "prepare": prepares, "breakdown": breakdown,
               "ours_perms_per_s": ours_rate, "nilearn_perms_per_s": nilearn_rate,
               "nilearn_loop_perms_per_s": loop_rate, "predicted_rss": prediction,
               "projection": {"lesions": args.project_lesions, "voxels": args.project_voxels,
                              "perms": args.project_perms, "perms_per_s": big_rate, "prepare_s": big_prepare,
                              "predicted_rss": big_prediction, "tasks": projection}}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(json.dumps({key: results[key] for key in ("ours_perms_per_s", "nilearn_perms_per_s",
                                                     "nilearn_loop_perms_per_s")}))


if __name__ == "__main__":
    main()
