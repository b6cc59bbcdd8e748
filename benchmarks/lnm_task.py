"""Throughput and peak memory of one lesion network mapping task, against baselines and
this machine's limit, on synthetic data made here (no download).

One run measures, side by side:

* the machine's limit: float32 matrix-product speed (at the task's shape and at a large
  square shape) and the read bandwidth of the prepared shard; the limit per
  lesion-subject pair is max(2 T V / GEMM speed, bytes per subject / L / read bandwidth);
* our mapping task for every L in ``--lesions``, each run in a fresh process so its
  peak RSS (VmHWM) is its own;
* baseline (a), the naive method: per lesion, compute every subject's float64 z map,
  keep them all, then aggregate (``--naive-lesions`` lesions, so it ends);
* baseline (b), a per-lesion loop: our kernel with one lesion per pass over the subjects
  (that is the L = 1 row);
* optionally (``--memory-subjects``) peak RSS of one task against the number of subjects.

    python benchmarks/lnm_task.py                          # the table of docs/benchmarks.md
    python benchmarks/lnm_task.py --dtype float16
    python benchmarks/lnm_task.py --lesions 16 --memory-subjects 10 40 160 --repeats 1
    python benchmarks/lnm_task.py --kernel-split --lesions 64 256   # where a subject's time goes
    python benchmarks/lnm_task.py --subjects 40 --before ../old/workflow/scripts --epilogues numpy compiled
    python benchmarks/lnm_task.py --smoke                  # tiny sizes, for CI

``--kernel-split`` times the CPU kernel's steps per subject, on a pass over random unit
time courses (in this process, the kernel's worker threads): the matrix products alone;
the products and NumPy's z transform passes over each tile while it is in cache; and
the whole pass, with its float32 tiles and the float64 sums (``--subjects-per-pass``
compares passes of other sizes).

``--before SCRIPTS`` runs another checkout's library (its ``workflow/scripts``) in turn
with ours, as rows of the same table; ``--epilogues numpy compiled`` adds rows with the
CPU kernel's epilogue forced, whatever the task's size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))

from measure import peak_rss_mb, run_in_fresh_process  # noqa: E402


def make_shard(folder, n_voxels, n_frames, n_subjects, dtype, seed=0, distinct=4):
    """A shard of ``n_subjects`` random subjects. Only ``distinct`` different subjects
    are generated and then repeated: throughput and memory do not depend on the values,
    and a 160-subject shard is written in seconds instead of minutes."""
    import numpy as np

    from shardmap.lnm.connectome.shards import shard_paths, write_shard

    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(min(distinct, n_subjects)):
        series = rng.standard_normal((n_frames, n_voxels))  # (T, V), a frame per row
        series -= series.mean(axis=0)
        pool.append(series)

    def subjects():
        for s in range(n_subjects):  # a copy: the writer scales each subject in place
            yield f"sub-{s}", [], pool[s % len(pool)].copy(), np.full(n_voxels, 1.0 * n_frames)

    paths = shard_paths(Path(folder) / f"shard-{dtype}-{n_subjects}")
    write_shard(subjects(), n_subjects, n_voxels, "bench", paths["data"], paths["norms"], paths["info"], dtype)
    return paths


def make_batch(n_voxels, n_lesions, lesion_voxels=100, seed=1):
    import numpy as np

    from shardmap.lnm.lesions import LesionBatch

    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n_voxels - lesion_voxels, n_lesions)
    positions = np.concatenate([np.arange(s, s + lesion_voxels) for s in starts]).astype(np.int64)
    offsets = np.arange(n_lesions + 1, dtype=np.int64) * lesion_voxels
    return LesionBatch([f"l{i}" for i in range(n_lesions)], offsets, positions, "bench")


def naive_task(paths, batch):
    """Baseline (a): every subject's z map of a lesion is computed in float64 and kept,
    then the maps are stacked and aggregated (how per-lesion tools work)."""
    import numpy as np

    norms = np.load(paths["norms"])
    with open(paths["info"]) as handle:
        info = json.load(handle)
    offsets, n_voxels = info["frame_offsets"], info["n_voxels"]
    dtype = np.dtype(info["dtype"])
    with open(paths["data"], "rb") as handle:
        np.lib.format.read_magic(handle)
        np.lib.format.read_array_header_2_0(handle)
        header = handle.tell()
    for index in range(len(batch)):
        positions = batch.positions_of(index)
        maps = []
        for s in range(len(offsets) - 1):
            # One subject loaded at a time, as a tool reading one file per subject does.
            stored = np.fromfile(paths["data"], dtype, (offsets[s + 1] - offsets[s]) * n_voxels,
                                 offset=header + offsets[s] * n_voxels * dtype.itemsize)
            series = stored.reshape(-1, n_voxels).astype(np.float64) * norms[s, 0]
            seed = series[:, positions].mean(axis=1)
            seed -= seed.mean()
            r = (seed @ series) / (np.linalg.norm(seed) * np.linalg.norm(series, axis=0) + 1e-30)
            maps.append(np.arctanh(np.clip(r, -1 + 1e-7, 1 - 1e-7)))
        z = np.stack(maps)
        mean, sd = z.mean(axis=0), z.std(axis=0, ddof=1)
        _ = mean / (sd / np.sqrt(len(maps)) + 1e-30)


def run_child(args):
    """Child process: time one task and print JSON."""
    if args.library:
        sys.path.insert(0, args.library)
    from shardmap.lnm.mapping import map_batch_over_shard

    with open(args.paths) as handle:
        paths = json.load(handle)
    batch = make_batch(args.voxels, args.one_lesions)
    gpu = {}
    if args.device != "cpu":
        # torch's import, CUDA's start-up and cuBLAS's (once per task, seconds) are not
        # throughput: they happen here, before the clock starts.
        import torch

        on = "cuda" if args.device == "cuda" else "cpu"
        torch.ones(8, 8, device=on) @ torch.ones(8, 8, device=on)
        if on == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
    if args.grouped_from is not None and not args.library:
        # Where the CPU kernel starts to pass several subjects at once (default: its own
        # choice by L), and how many (--per-pass).
        from shardmap.lnm.kernels import cpu

        cpu.GROUPED_FROM_LESIONS = args.grouped_from
        if args.per_pass:
            cpu.NumpyMapper.subjects_per_pass = args.per_pass
    if args.epilogue != "auto":
        # The task decides by its size whether to load the compiled epilogue; force it here.
        from shardmap.lnm.kernels import cpu

        cpu.COMPILED_EPILOGUE_FROM = 0 if args.epilogue == "compiled" else float("inf")
    started = time.perf_counter()
    if args.method == "naive":
        naive_task(paths, batch)
    else:
        map_batch_over_shard(batch, paths, progress_every=1e9, device=args.device, threads=args.threads)
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    if args.device == "cuda":
        gpu = {"peak_gpu_mb": torch.cuda.max_memory_allocated() / 2 ** 20}
    limit = {} if args.no_limit else measure_limit(paths, args.one_lesions, args.frames, args.voxels, args.threads,
                                                            args.device)
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak, **gpu, **limit}))


def median_seconds(work, repeats=5):
    work()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def gpu_gemm_seconds(m, k, n):
    """Median seconds of one float32 (m x k) @ (k x n) on the GPU, TF32 off."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    a = torch.randn(m, k, device="cuda")
    b = torch.randn(k, n, device="cuda")

    def work():
        torch.matmul(a, b)
        torch.cuda.synchronize()

    return median_seconds(work)


def gpu_copy_gbs(paths):
    """Host-to-GPU GB/s of one subject's frames: from pinned memory (what the link can
    do) and from the page-cache mapping of the shard (what a plain copy, as the kernel
    makes it, gets)."""
    import warnings

    import torch

    from shardmap.lnm.connectome.reader import ShardReader

    with ShardReader(paths) as reader, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        frames = reader.read(0)[0]
        mapped = torch.from_numpy(frames)
        pinned = torch.empty(mapped.shape, dtype=mapped.dtype, pin_memory=True).copy_(mapped)
        target = torch.empty(mapped.shape, dtype=mapped.dtype, device="cuda")
        result = {}
        for name, source in (("h2d_pinned_gbs", pinned), ("h2d_pageable_gbs", mapped)):
            def work():
                target.copy_(source, non_blocking=True)
                torch.cuda.synchronize()

            result[name] = frames.nbytes / median_seconds(work) / 1e9
    return result


def measure_limit(paths, n_lesions, n_frames, n_voxels, threads, device="cpu"):
    """GEMM GFLOP/s at (L x T) @ (T x 100k) and at 2048^3; read GB/s of the shard as a
    task sees it; on a GPU also the host-to-GPU copy speed. Each task measures these
    right after it ran, so that the fraction of the limit compares numbers taken under
    the same load on a shared machine."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from shardmap.lnm.connectome.reader import ShardReader

    rng = np.random.default_rng(0)
    result = {}
    with threadpool_limits(limits=threads, user_api="blas"):
        for name, (m, k, n) in {"at_shape": (n_lesions, n_frames, min(n_voxels, 100_000)),
                                "square": (2048, 2048, 2048)}.items():
            a = rng.standard_normal((m, k)).astype(np.float32)
            b = rng.standard_normal((k, n)).astype(np.float32)
            out = np.empty((m, n), dtype=np.float32)
            seconds = (gpu_gemm_seconds(m, k, n) if device == "cuda" else
                       median_seconds(lambda: np.matmul(a, b, out=out)))
            result[f"gemm_{name}_gflops"] = 2 * m * k * n / seconds / 1e9

    def read_all():
        # Each subject mapped from the page cache and every byte read once (by a max
        # reduction, which costs less than the bytes), by ``threads`` threads.
        with ShardReader(paths) as reader, ThreadPoolExecutor(threads) as pool:
            for _, frames, _, _ in reader.subjects():
                rows = -(-frames.shape[0] // threads)
                list(pool.map(lambda start: frames[start:start + rows].max(), range(0, frames.shape[0], rows)))

    result["read_gbs"] = os.path.getsize(paths["data"]) / median_seconds(read_all, repeats=3) / 1e9
    if device == "cuda":
        result.update(gpu_copy_gbs(paths))
    return result


def child(script_args, env):
    return run_in_fresh_process(__file__, script_args, env)


def kernel_split(n_lesions, n_frames, n_voxels, threads, repeats, per_pass):
    """Milliseconds per subject of each step of the CPU kernel, ``per_pass`` subjects
    per pass over the voxels (medians of ``repeats``)."""
    import numpy as np

    from shardmap.lnm.kernels import cpu

    rng = np.random.default_rng(0)
    subjects = []
    for _ in range(per_pass):
        frames = rng.standard_normal((n_frames, n_voxels), dtype=np.float32)
        frames /= np.linalg.norm(frames, axis=0)
        seeds = rng.standard_normal((n_frames, n_lesions))
        seeds /= np.linalg.norm(seeds, axis=0)
        subjects.append((frames, np.ones(n_voxels), seeds))
    weights = [np.ascontiguousarray(seeds.T, dtype=np.float32) for _, _, seeds in subjects]
    sums = np.zeros((n_lesions, 2, n_voxels))

    def tiles(mapper, with_z):
        def work(worker, blocks):
            r_full, scratch_full = mapper._tiles[worker][:2]
            for start, stop in blocks:
                r, scratch = r_full[:, :stop - start], scratch_full[:, :stop - start]
                for (frames, _, _), weight in zip(subjects, weights):
                    np.matmul(weight, frames[:, start:stop], out=r)
                    if with_z:
                        cpu.log_ratio_inplace(r, scratch)
                        np.multiply(r, r, out=scratch)
        return lambda: mapper._each_worker(work)

    with cpu.NumpyMapper(sums, threads) as mapper, cpu.NumpyMapper(sums, threads, compiled=True) as compiled:
        steps = {"product": tiles(mapper, False), "product + z passes in cache": tiles(mapper, True),
                 "pass (+ sums)": lambda: mapper.add_subjects(subjects)}
        if compiled._add_twice_z is not None:
            steps["pass, compiled epilogue"] = lambda: compiled.add_subjects(subjects)
        return {name: 1000 * median_seconds(step, repeats) / per_pass for name, step in steps.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voxels", type=int, default=230_000)
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--lesions", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--naive-lesions", type=int, default=2, help="lesions of the naive baseline (0: skip)")
    parser.add_argument("--memory-subjects", type=int, nargs="*", default=[],
                        help="also measure peak RSS at the first L for these shard sizes")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "torch-cpu"],
                        help="where our task computes (cuda: the torch kernel on a GPU, limit on the GPU)")
    parser.add_argument("--kernel-split", action="store_true", help="only the CPU kernel's per-subject steps")
    parser.add_argument("--subjects-per-pass", type=int, nargs="*", default=[],
                        help="with --kernel-split: subjects per pass to compare (default: the kernel's)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat")
    parser.add_argument("--one-lesions", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--method", default="ours", help=argparse.SUPPRESS)
    parser.add_argument("--no-limit", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    parser.add_argument("--before", metavar="SCRIPTS",
                        help="also run the task of another checkout's library (its workflow/scripts folder), "
                             "interleaved with ours, as rows 'before'")
    parser.add_argument("--library", help=argparse.SUPPRESS)
    parser.add_argument("--epilogues", nargs="*", default=[], choices=["numpy", "compiled"],
                        help="also run our task with this epilogue forced, whatever the task's size")
    parser.add_argument("--epilogue", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--groupings", nargs="*", default=[], choices=["grouped", "pairs", "single"],
                        help="add rows with our CPU kernel forced to 8 subjects per pass, 2, or 1")
    parser.add_argument("--per-pass", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--grouped-from", type=int, default=None,
                        help="force the lesion count from which our CPU kernel passes 8 subjects at once "
                             "(1: always grouped; a large number: never)")
    args = parser.parse_args()
    if args.one_lesions:
        return run_child(args)
    if args.smoke:
        args.voxels, args.frames, args.subjects, args.lesions, args.repeats = 5000, 30, 3, [1, 4], 1
        args.memory_subjects = [2, 4] if not args.memory_subjects else args.memory_subjects
    if args.kernel_split or args.smoke:
        print_kernel_split(args)
        if args.kernel_split:
            return
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMPDIR")) as folder:
        paths = make_shard(folder, args.voxels, args.frames, args.subjects, args.dtype)
        paths_file = Path(folder) / "paths.json"
        paths_file.write_text(json.dumps(paths))
        # An older library (--before) knows the shard's JSON without the per-subject checksums.
        info = json.loads(Path(paths["info"]).read_text())
        info.pop("checksums", None)
        old_info = Path(folder) / "info-before.json"
        old_info.write_text(json.dumps(info))
        before_paths_file = Path(folder) / "paths-before.json"
        before_paths_file.write_text(json.dumps(dict(paths, info=str(old_info))))
        reference_l = 64 if 64 in args.lesions else args.lesions[-1]
        bytes_per_subject = os.path.getsize(paths["data"]) / args.subjects
        print(f"V={args.voxels} T={args.frames} S={args.subjects} dtype={args.dtype} threads={args.threads} "
              f"device={args.device} repeats={args.repeats}")
        print()
        gpu = args.device == "cuda"
        print("| method | L | median s/task | ms per lesion-subject | lesion-subjects/s | limit ms (shape GEMM / "
              "best GEMM) | % of limit (shape / best; median of runs) | peak RSS MB |"
              + (" peak GPU MB |" if gpu else ""))
        print("|---|---|---|---|---|---|---|---|" + ("---|" if gpu else ""))
        ours, rates = {}, []
        ours_methods = (["ours"] + [f"ours-{e}" for e in args.epilogues] + [f"ours-{g}" for g in args.groupings]
                        + (["before"] if args.before else []))
        rows = [(m, n) for n in args.lesions for m in ours_methods]
        rows += [("naive", args.naive_lesions)] if args.naive_lesions else []

        def task(method, n_lesions):
            library = ["--library", args.before] if method == "before" else []
            variant = method.split("-", 1)[1] if method.startswith("ours-") else None
            epilogue = ["--epilogue", variant] if variant in ("numpy", "compiled") else []
            grouping = {"grouped": ["--grouped-from", "1"], "single": ["--grouped-from", str(10 ** 9)],
                        "pairs": ["--grouped-from", "1", "--per-pass", "2"]}.get(variant, [])
            return child(["--voxels", str(args.voxels), "--frames", str(args.frames), "--one-lesions",
                          str(n_lesions), "--paths", str(before_paths_file if method == "before" else paths_file),
                          "--threads", str(args.threads),
                          "--method", "naive" if method == "naive" else "ours", "--device", args.device,
                          *library, *epilogue, *grouping], env)

        runs_of = {}
        for n_lesions in args.lesions:
            for _ in range(args.repeats):  # ours and the --before library in turn, so both see the same load
                for method in ours_methods:
                    runs_of.setdefault((method, n_lesions), []).append(task(method, n_lesions))
        for method, n_lesions in rows:
            runs = runs_of.get((method, n_lesions)) or [task(method, n_lesions)]
            pairs = n_lesions * args.subjects
            seconds = median([r["seconds"] for r in runs])
            peak = max(r["peak_rss_mb"] for r in runs)
            ms = 1000 * seconds / pairs

            def limit_ms(run, key):
                # Every subject is read (and, on a GPU, copied to it over the link from
                # pinned memory, the best case) once per task, whatever L.
                moved_gbs = min(run["read_gbs"], run.get("h2d_pinned_gbs", float("inf")))
                read_ms = 1000 * bytes_per_subject / n_lesions / (moved_gbs * 1e9)
                return max(1000 * 2 * args.frames * args.voxels / (run[key] * 1e9), read_ms)

            limits = [median([limit_ms(r, key) for r in runs]) for key in ("gemm_at_shape_gflops",
                                                                               "gemm_square_gflops")]
            shares = [median([limit_ms(r, key) / (1000 * r["seconds"] / pairs) for r in runs])
                      for key in ("gemm_at_shape_gflops", "gemm_square_gflops")]
            rates.extend(runs)
            ours[(method, n_lesions)] = ms
            name = {"ours": "shardmap task", "before": "shardmap task, --before library",
                    "ours-numpy": "shardmap task, NumPy epilogue", "ours-compiled": "shardmap task, compiled epilogue",
                    "ours-grouped": "shardmap task, 8 subjects per pass",
                    "ours-single": "shardmap task, 1 subject per pass",
                    "ours-pairs": "shardmap task, 2 subjects per pass",
                    "naive": "(a) naive: keep every z map, float64"}[method]
            if method == "ours" and n_lesions == 1:
                name = "shardmap task = (b) per-lesion loop"
            peak_gpu = f" {max(r.get('peak_gpu_mb', 0) for r in runs):.0f} |" if gpu else ""
            print(f"| {name} | {n_lesions} | {seconds:.3f} | {ms:.3f} | {1000 / ms:.1f} | {limits[0]:.3f} / "
                  f"{limits[1]:.3f} | {100 * shares[0]:.0f} / {100 * shares[1]:.0f} | {peak:.0f} |{peak_gpu}")
        print()
        print(f"limit, medians over the runs: GEMM {median([r['gemm_at_shape_gflops'] for r in rates]):.0f} GFLOP/s "
              f"at each task's shape (L x {args.frames}) @ ({args.frames} x {min(args.voxels, 100_000)}), "
              f"{median([r['gemm_square_gflops'] for r in rates]):.0f} GFLOP/s at 2048^3; shard read "
              f"{median([r['read_gbs'] for r in rates]):.1f} GB/s (mapped from the page cache)")
        if gpu:
            print(f"host to GPU, one subject: {median([r['h2d_pinned_gbs'] for r in rates]):.1f} GB/s from pinned "
                  f"memory, {median([r['h2d_pageable_gbs'] for r in rates]):.1f} GB/s from the shard's mapping")
        if ("ours", reference_l) in ours:
            best = ours[("ours", reference_l)]
            for key, label in ((("ours", 1), "(b) per-lesion loop"), (("naive", args.naive_lesions), "(a) naive"),
                               (("before", reference_l), "the --before library")):
                if key in ours:
                    print(f"speed-up at L = {reference_l} over {label}: {ours[key] / best:.1f}x")
            per_pair = min(ms for (method, _), ms in ours.items() if method == "ours")
            print(f"projection, 1000 lesions x 1000 subjects at the fastest L here ({per_pair:.2f} ms per pair): "
                  f"{per_pair * 1e6 / 1000 / 3600:.2f} h on this machine")
        if args.memory_subjects:
            n_lesions = args.lesions[0] if args.smoke else (16 if 16 in args.lesions else args.lesions[0])
            print()
            print("| subjects in the shard | L | peak RSS MB | s/task |")
            print("|---|---|---|---|")
            for n_subjects in args.memory_subjects:
                more = make_shard(folder, args.voxels, args.frames, n_subjects, args.dtype, seed=5)
                more_file = Path(folder) / f"paths-{n_subjects}.json"
                more_file.write_text(json.dumps(more))
                run = child(["--voxels", str(args.voxels), "--frames", str(args.frames), "--one-lesions",
                             str(n_lesions), "--no-limit", "--paths",
                             str(more_file), "--threads", str(args.threads), "--device", args.device], env)
                print(f"| {n_subjects} | {n_lesions} | {run['peak_rss_mb']:.0f} | {run['seconds']:.2f} |")
                for path in more.values():
                    if os.path.exists(path):  # the shard has no degree sums here
                        os.remove(path)


def print_kernel_split(args):
    from shardmap.lnm.kernels import cpu

    print(f"CPU kernel, ms per subject: V={args.voxels} T={args.frames} threads={args.threads}, "
          f"medians of {max(args.repeats, 5)}")
    print()
    print("| L | subjects per pass | product | product + z passes in cache | whole pass (+ float32 tiles, "
          "float64 sums) | product share | whole pass, compiled epilogue | product share |")
    print("|---|---|---|---|---|---|---|---|")
    for n_lesions in args.lesions:
        for per_pass in args.subjects_per_pass or [cpu.SUBJECTS_PER_PASS]:
            ms = kernel_split(n_lesions, args.frames, args.voxels, args.threads, max(args.repeats, 5), per_pass)
            compiled = ms.get("pass, compiled epilogue", float("nan"))
            print(f"| {n_lesions} | {per_pass} | {ms['product']:.1f} | {ms['product + z passes in cache']:.1f} | "
                  f"{ms['pass (+ sums)']:.1f} | {100 * ms['product'] / ms['pass (+ sums)']:.0f} % | "
                  f"{compiled:.1f} | {100 * ms['product'] / compiled:.0f} % |")
    print()


if __name__ == "__main__":
    main()
