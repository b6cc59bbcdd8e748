"""Connectomes prepared by other tools: convert them once into shards, or read them in every
mapping task? Measured per subject at GSP1000's shape, against preparing NIfTI runs.

For each format (lacuna's gzip-1 HDF5 with one chunk per subject, connectome_quick's
float16 .npy) and for NIfTI runs, in fresh processes, medians of --repeats runs:

- **convert**: the shard preparation task (``prepare_shard_files``), per subject: read,
  decode, match the voxels, centre per run, scale, write; with its peak RSS;
- **direct**: what a mapping task that read the format itself would do per subject and
  lesion batch before its kernel: read and decode, match the voxels, centre, scale to
  unit time courses in float32 (``SubjectReader.load_subject`` + ``unit_time_courses``);
- **shard read**: what a mapping task does now per subject and lesion batch: read the
  subject's rows of the prepared shard.

Every file is in the page cache for every measurement (each is read once before timing),
so the comparison is of decoding and arithmetic, not of the disk.

    python benchmarks/connectome_formats.py                 # V = 292,019, T = 120, 3 subjects
    python benchmarks/connectome_formats.py --smoke         # tiny sizes, for CI
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "workflow" / "scripts"))
sys.path.insert(0, str(HERE))

from gsp_shape import AFFINE, add_shape_arguments, grid_of, save_mask, save_run  # noqa: E402
from gsp_shape import warm as warm_files  # noqa: E402


def write_inputs(root, n_voxels, frames, n_subjects, grid):
    import h5py

    rng = np.random.default_rng(0)
    where = save_mask(root / "mask.nii.gz", n_voxels, grid)
    subjects, series = [], []
    for s in range(n_subjects):
        values = (500 + 50 * rng.standard_normal((n_voxels, 1)) + 10 * rng.standard_normal((n_voxels, frames)))
        values = values.astype(np.float32)
        path = root / f"sub-{s:02d}_run-1.nii.gz"
        save_run(path, values, where, grid)
        subjects.append([f"sub-{s:02d}", [str(path)]])
        series.append(values.T)  # (T, V), C order over the mask
    (root / "cq").mkdir(exist_ok=True)
    for s, values in enumerate(series):
        np.save(root / "cq" / f"sub-{s:02d}.npy", values.astype(np.float16))
    (root / "lacuna").mkdir(exist_ok=True)
    with h5py.File(root / "lacuna" / "gsp1000_chunk_000.h5", "w") as handle:
        handle.create_dataset("timeseries", data=np.stack(series), chunks=(1, frames, n_voxels), compression="gzip",
                              compression_opts=1)
        handle.create_dataset("mask_indices", data=np.vstack(where).T)
        handle.create_dataset("mask_affine", data=AFFINE)
        handle.attrs["mask_shape"] = grid
    return subjects


def warm(root):
    """Read every input once, so every measurement finds it in the page cache."""
    warm_files(root.rglob("*"))


def subjects_of(fmt, root, nifti_subjects):
    if fmt == "nifti":
        return nifti_subjects, {}
    from shardmap.lnm.connectome.formats import connectome_subjects

    path = root / ("lacuna" if fmt == "lacuna" else "cq")
    frames = None if fmt == "lacuna" else int(np.load(next(path.glob("*.npy")), mmap_mode="r").shape[0])
    subjects = connectome_subjects(fmt, path, frames)
    return [s.as_params() for s in subjects], {"format": fmt, "path": str(path), "run_frames": frames}


def child(args):
    """One measurement in this (fresh) process; prints a JSON line."""
    from measure import peak_rss_mb

    from shardmap.lnm.connectome.shards import prepare_shard_files, shard_paths, unit_time_courses

    root = Path(args.root)
    nifti_subjects = json.loads((root / "subjects.json").read_text())
    subjects, source = subjects_of(args.format, root, nifti_subjects)
    prefix = root / f"shard-{args.format}"
    paths = shard_paths(prefix)
    start = time.perf_counter()
    if args.mode == "convert":
        prepare_shard_files(root / "mask.nii.gz", subjects, paths["data"], paths["norms"], paths["info"], **source)
    elif args.mode == "direct":
        from shardmap.lnm.connectome.formats import open_connectome
        from shardmap.lnm.connectome.formats.base import SubjectReader
        from shardmap.lnm.connectome.runs import load_subject
        from shardmap.lnm.nifti import load_mask
        from shardmap.lnm.sheets import as_subjects

        mask = load_mask(root / "mask.nii.gz")
        if args.format == "nifti":
            load = lambda subject: load_subject(subject, mask)  # noqa: E731
        else:
            connectome = open_connectome(args.format, source["path"], source["run_frames"])
            load = SubjectReader(connectome, mask).load_subject
        start = time.perf_counter()
        for subject in as_subjects(subjects):
            series, energy, _ = load(subject)
            unit, _ = unit_time_courses(series, energy)
            unit.astype(np.float32)  # (T, V), as a mapping task would hold it
    else:  # shard read: the subjects' rows of the shard written by "convert"
        info = json.loads(Path(paths["info"]).read_text())
        offsets = info["frame_offsets"]
        data = np.load(paths["data"], mmap_mode="r")
        start = time.perf_counter()
        for first, last in zip(offsets[:-1], offsets[1:]):
            np.array(data[first:last])
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds_per_subject": seconds / len(subjects), "peak_rss_mb": peak_rss_mb()}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_arguments(parser, subjects=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--format", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    from measure import run_in_fresh_process

    grid = grid_of(args)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "cq").mkdir()
        subjects = write_inputs(root, args.voxels, args.frames, args.subjects, grid)
        (root / "subjects.json").write_text(json.dumps(subjects))
        sizes = {fmt: sum(f.stat().st_size for f in files) / args.subjects for fmt, files in (
            ("nifti", list(root.glob("sub-*.nii.gz"))), ("lacuna", list((root / "lacuna").glob("*.h5"))),
            ("connectome_quick", list((root / "cq").glob("*.npy"))))}
        rows = {}
        for fmt in ("nifti", "lacuna", "connectome_quick"):
            runs = {mode: [] for mode in ("convert", "shard", "direct")}
            for _ in range(args.repeats):
                for mode in runs:
                    warm(root)
                    runs[mode].append(run_in_fresh_process(__file__, ["--child", "--root", str(root), "--format", fmt,
                                                                      "--mode", mode], env))
            rows[fmt] = {mode: (statistics.median(r["seconds_per_subject"] for r in results),
                                statistics.median(r["peak_rss_mb"] for r in results))
                         for mode, results in runs.items()}
        shard_mb = args.subjects * args.frames * args.voxels * 4 / 1e6
        print(f"V = {args.voxels}, T = {args.frames}, {args.subjects} subjects per shard (one shard: "
              f"{shard_mb:.0f} MB as float32); medians of {args.repeats} runs, each in a fresh process\n")
        print("| format | MB per subject on disk | convert s/subject | convert peak RSS MB | direct s/subject/batch "
              "| shard read s/subject/batch | " + " | ".join(f"{b} batches: convert / direct s" for b in args.batches)
              + " |")
        print("|---" * (6 + len(args.batches)) + "|")
        for fmt, row in rows.items():
            convert, convert_rss = row["convert"]
            direct, shard = row["direct"][0], row["shard"][0]
            totals = " | ".join(f"{convert + b * shard:.2f} / {b * direct:.2f}" for b in args.batches)
            print(f"| {fmt} | {sizes[fmt] / 1e6:.0f} | {convert:.3f} | {convert_rss:.0f} | {direct:.3f} | {shard:.4f} "
                  f"| {totals} |")


if __name__ == "__main__":
    main()
