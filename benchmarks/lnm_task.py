"""Throughput and peak memory of one lesion network mapping task on synthetic data.

Each configuration runs in a fresh subprocess so its peak RSS is its own. Data are made
here (no download): S subjects of T frames on V voxels, L random compact lesions.

    python benchmarks/lnm_task.py --voxels 230000 --frames 240 --subjects 4 --lesions 1 16 64
    python benchmarks/lnm_task.py --smoke      # tiny sizes, for CI
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))

from measure import peak_rss_mb  # noqa: E402


def make_shard(folder, n_voxels, n_frames, n_subjects, dtype, seed=0):
    import numpy as np

    from shardmap.connectome import shard_paths, write_shard

    rng = np.random.default_rng(seed)

    def subjects():
        for s in range(n_subjects):
            series = rng.standard_normal((n_voxels, n_frames))
            series -= series.mean(axis=1, keepdims=True)
            yield f"sub-{s}", [], series, np.full(n_voxels, 1.0 * n_frames)

    paths = shard_paths(Path(folder) / f"shard-{dtype}")
    write_shard(subjects(), n_subjects, n_voxels, "bench", paths["data"], paths["norms"], paths["info"], dtype)
    return paths


def make_batch(n_voxels, n_lesions, lesion_voxels=100, seed=1):
    import numpy as np

    from shardmap.lesions import LesionBatch

    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n_voxels - lesion_voxels, n_lesions)
    positions = np.concatenate([np.arange(s, s + lesion_voxels) for s in starts]).astype(np.int64)
    offsets = np.arange(n_lesions + 1, dtype=np.int64) * lesion_voxels
    return LesionBatch([f"l{i}" for i in range(n_lesions)], offsets, positions, "bench")


def run_one(args):
    """Child process: time one mapping task and report JSON."""
    from shardmap.mapping import map_batch_over_shard

    with open(args.paths) as handle:
        paths = json.load(handle)
    batch = make_batch(args.voxels, args.one_lesions)
    started = time.perf_counter()
    map_batch_over_shard(batch, paths, progress_every=1e9)
    seconds = time.perf_counter() - started
    peak_mb = peak_rss_mb()
    print(json.dumps({"lesions": args.one_lesions, "seconds": seconds, "peak_rss_mb": peak_mb}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voxels", type=int, default=230_000)
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--lesions", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat")
    parser.add_argument("--one-lesions", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_lesions:
        return run_one(args)
    if args.smoke:
        args.voxels, args.frames, args.subjects, args.lesions, args.repeats = 5000, 30, 3, [1, 4], 1
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory() as folder:
        paths = make_shard(folder, args.voxels, args.frames, args.subjects, args.dtype)
        paths_file = Path(folder) / "paths.json"
        paths_file.write_text(json.dumps(paths))
        print(f"V={args.voxels} T={args.frames} S={args.subjects} dtype={args.dtype} threads={args.threads}")
        print("| L | median s/task | ms per lesion-subject | lesion-subjects/s | GFLOP/s (2TV per pair) | peak RSS MB |")
        print("|---|---|---|---|---|---|")
        for n_lesions in args.lesions:
            runs = []
            for _ in range(args.repeats):
                out = subprocess.run([sys.executable, __file__, "--voxels", str(args.voxels), "--one-lesions",
                                      str(n_lesions), "--paths", str(paths_file)], env=env, check=True,
                                     capture_output=True, text=True)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            seconds = sorted(r["seconds"] for r in runs)[len(runs) // 2]
            pairs = n_lesions * args.subjects
            gflops = 2 * args.frames * args.voxels * pairs / seconds / 1e9
            peak = max(r["peak_rss_mb"] for r in runs)
            print(f"| {n_lesions} | {seconds:.3f} | {1000 * seconds / pairs:.2f} | {pairs / seconds:.1f} | "
                  f"{gflops:.1f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
