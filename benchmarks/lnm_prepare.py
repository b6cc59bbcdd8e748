"""Where a connectome preparation task's time goes, per subject, at GSP1000's shape.

Writes gzipped NIfTI runs (91 x 109 x 91 x T float32, smooth shared signals and noise,
a mask of --voxels voxels), then times, per subject:

- **decode**: gunzip of a run file into memory with each decoder available (Python's zlib,
  python-isal's igzip, zlib-ng), the file read from the page cache;
- **before**, the steps of the preparation as they were (``--before`` library's order of
  work, done here by hand): nibabel's read of the whole 4D array (its gzip stream),
  **gather** (the mask voxels, as (V, T) float64), **centre**, **scale**, **cast**
  (float32, transposed to time by voxel), **write**;
- **now**, the steps as the library does them: read and decode (igzip, into a reused
  buffer), **gather** (frame
  by frame in memory order, into a reused array), **centre**, **scale**, **cast**,
  **degree** (the hub controls' sums), **write**, **checksum**;
- the whole task (``prepare_shard_files`` with the degree sums, as rule
  lnm_prepare_connectome runs it, in a fresh process), ours and the ``--before``
  library's in turn, with peak RSS; and the share of the task's wall time that decoding
  and writing alone take (decode with igzip plus write, measured in the same run).

    python benchmarks/lnm_prepare.py --before ../before/workflow/scripts   # V = 292,019, T = 120
    python benchmarks/lnm_prepare.py --smoke
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# The library measured: ours, or (in a child process) the --before checkout's.
sys.path.insert(0, os.environ.get("SHARDMAP_BENCH_LIBRARY", str(HERE.parent / "workflow" / "scripts")))
sys.path.insert(0, str(HERE))

from gsp_shape import add_shape_arguments, grid_of, read_file, save_mask, save_run  # noqa: E402
from gsp_shape import warm as warm_files  # noqa: E402


def write_runs(root, n_voxels, frames, n_subjects, grid):
    """Runs with smooth shared signals and noise (real fMRI compresses about like this)."""
    rng = np.random.default_rng(0)
    where = save_mask(root / "mask.nii.gz", n_voxels, grid)
    subjects = []
    for s in range(n_subjects):
        signals = rng.standard_normal((8, frames)).astype(np.float32)
        loadings = rng.standard_normal((n_voxels, 8)).astype(np.float32)
        values = 800 + 100 * rng.random((n_voxels, 1), dtype=np.float32) + loadings @ signals * 5
        values += rng.standard_normal((n_voxels, frames), dtype=np.float32) * 10
        path = root / f"sub-{s:02d}_run-1.nii.gz"
        save_run(path, values, where, grid)
        subjects.append([f"sub-{s:02d}", [str(path)]])
    return subjects


def decoders():
    found = {"zlib": lambda data: zlib.decompress(data, 31)}
    try:
        from isal import igzip

        found["isal"] = igzip.decompress
    except ImportError:
        pass
    try:
        from zlib_ng import gzip_ng

        found["zlib-ng"] = gzip_ng.decompress
    except ImportError:
        pass
    return found


def steps_before(root, subjects):
    """Seconds per step, the preparation's work as it was (nibabel reads the whole 4D array)."""
    import nibabel as nib

    from shardmap.lnm.nifti import load_mask

    mask = load_mask(root / "mask.nii.gz")
    i, j, k = mask.ijk.T
    rows = []
    with open(root / "steps.npy", "wb") as out:
        for _, runs in subjects:
            t = [time.perf_counter()]
            data = np.asanyarray(nib.load(runs[0]).dataobj)
            t.append(time.perf_counter())
            series = data[i, j, k].astype(np.float64)
            t.append(time.perf_counter())
            energy = np.einsum("vt,vt->v", series, series)
            series -= series.mean(axis=1, keepdims=True)
            t.append(time.perf_counter())
            norm = np.sqrt(np.einsum("vt,vt->v", series, series))
            unit = series * np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)[:, None]
            t.append(time.perf_counter())
            stored = np.ascontiguousarray(unit.T, dtype=np.float32)
            t.append(time.perf_counter())
            out.write(stored.tobytes())
            out.flush()
            os.fsync(out.fileno())
            t.append(time.perf_counter())
            rows.append(dict(zip(("read+decode", "gather", "centre", "scale", "cast", "write"),
                                 np.diff(t))))
            del data, series, unit, stored, energy
    return {step: statistics.median(r[step] for r in rows) for step in rows[0]}


def steps_now(root, subjects):
    """Seconds per step, the preparation's work as the library does it now."""
    from shardmap.lnm.connectome.buffers import Buffers
    from shardmap.lnm.connectome.runs import centre_run
    from shardmap.lnm.connectome.shards import unit_time_courses
    from shardmap.lnm.hubs.degree import DegreeSums
    from shardmap.lnm.nifti import decoded_bytes, decoded_size, load_image, load_mask, mask_frames

    mask = load_mask(root / "mask.nii.gz")
    buffers, degree = Buffers(), DegreeSums()
    rows = []
    with open(root / "steps.npy", "wb") as out:
        for _, runs in subjects:
            t = [time.perf_counter()]
            img = load_image(runs[0], "run")
            raw = decoded_bytes(runs[0], "run", img, buffers.get("decoded", (decoded_size(img),), np.uint8))
            t.append(time.perf_counter())
            frames = img.shape[3]
            series = mask_frames(img, raw, runs[0], "run", mask, buffers.get("subject", (frames, mask.n_voxels),
                                                                              np.float64),
                                 buffers.get("run as stored", (frames, mask.n_voxels), np.float32))
            del raw
            t.append(time.perf_counter())
            series, energy = centre_run(series, "run", runs[0])
            t.append(time.perf_counter())
            unit, norm = unit_time_courses(series, energy)
            t.append(time.perf_counter())
            stored = buffers.get("stored", unit.shape, np.float32)
            np.copyto(stored, unit, casting="same_kind")
            t.append(time.perf_counter())
            degree.add_subject(unit, norm)
            t.append(time.perf_counter())
            out.write(memoryview(stored).cast("B"))
            out.flush()
            os.fsync(out.fileno())
            t.append(time.perf_counter())
            zlib.crc32(stored)
            t.append(time.perf_counter())
            rows.append(dict(zip(("read+decode", "gather", "centre", "scale", "cast", "degree", "write",
                                  "checksum"), np.diff(t))))
    return {step: statistics.median(r[step] for r in rows) for step in rows[0]}


def task(args):
    """The preparation task as rule lnm_prepare_connectome runs it (with the degree sums),
    with this process's library (ours, or the --before one on sys.path)."""
    from measure import peak_rss_mb

    from shardmap.lnm.connectome.shards import prepare_shard_files, shard_paths
    try:
        from shardmap.lnm.hubs.degree import DegreeSums
    except ImportError:  # the layout before the hub wing
        from shardmap.lnm.connectome.degree import DegreeSums

    root = Path(args.root)
    subjects = json.loads((root / "subjects.json").read_text())
    paths = shard_paths(root / "shard")
    degree = DegreeSums()
    start = time.perf_counter()
    prepare_shard_files(root / "mask.nii.gz", subjects, paths["data"], paths["norms"], paths["info"],
                        on_subject=degree.add_subject)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds_per_subject": seconds / len(subjects), "peak_rss_mb": peak_rss_mb()}))


def warm(root):
    warm_files(root.glob("sub-*.nii.gz"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_arguments(parser, subjects=10)
    parser.add_argument("--before", metavar="SCRIPTS", help="another checkout's workflow/scripts, run in turn")
    parser.add_argument("--task", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.task:
        return task(args)
    from measure import run_in_fresh_process

    grid = grid_of(args)
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        root = Path(tmp)
        subjects = write_runs(root, args.voxels, args.frames, args.subjects, grid)
        (root / "subjects.json").write_text(json.dumps(subjects))
        size = os.path.getsize(subjects[0][1][0])
        raw_size = int(np.prod(grid)) * args.frames * 4
        print(f"V = {args.voxels}, T = {args.frames}, grid {grid}: a run is {raw_size / 1e6:.0f} MB as float32, "
              f"{size / 1e6:.0f} MB gzipped; {args.subjects} subjects, medians of {args.repeats} runs\n")
        sample = subjects[: min(4, len(subjects))]
        print("| decoder | decode s per run | MB/s (decoded) |")
        print("|---|---|---|")
        decode = {}
        for name, decoder in decoders().items():
            times = []
            for _ in range(args.repeats):
                for _, runs in sample:
                    data = read_file(runs[0])
                    start = time.perf_counter()
                    decoder(data)
                    times.append(time.perf_counter() - start)
            decode[name] = statistics.median(times)
            print(f"| {name} | {decode[name]:.3f} | {raw_size / decode[name] / 1e6:.0f} |")
        for label, steps_of in (("before", steps_before), ("now", steps_now)):
            runs = []
            for _ in range(args.repeats):
                warm(root)
                runs.append(steps_of(root, sample))
            steps = {step: statistics.median(r[step] for r in runs) for step in runs[0]}
            print(f"\nsteps {label}, s per subject (one thread, one after the other): "
                  + ", ".join(f"{step} {value:.3f}" for step, value in steps.items())
                  + f"; total {sum(steps.values()):.3f}")
            if label == "now":
                write_now = steps["write"]
        libraries = {"ours": str(HERE.parent / "workflow" / "scripts")}
        if args.before:
            libraries["before"] = str(Path(args.before).resolve())
        results = {name: [] for name in libraries}
        for _ in range(args.repeats):
            for name, library in libraries.items():  # in turn, so both see the same load
                warm(root)
                env = dict(os.environ, SHARDMAP_BENCH_LIBRARY=library)
                results[name].append(run_in_fresh_process(__file__, ["--task", "--root", str(root)], env))
        print("\n| library | task s per subject | peak RSS MB | decode (igzip) + write share of the task |")
        print("|---|---|---|---|")
        fastest = decode.get("isal", decode["zlib"])
        for name, runs in results.items():
            seconds = statistics.median(r["seconds_per_subject"] for r in runs)
            rss = statistics.median(r["peak_rss_mb"] for r in runs)
            share = (fastest + write_now) / seconds
            print(f"| {name} | {seconds:.3f} | {rss:.0f} | {100 * share:.0f} % |")


if __name__ == "__main__":
    main()
