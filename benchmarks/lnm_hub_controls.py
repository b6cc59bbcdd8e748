"""What the hub controls cost, on synthetic data made here (no download).

* the degree map: shard preparation with and without the degree sums, side by side
  (interleaved, medians), at the benchmark's shape (V voxels, T frames);
* null lesions: placing ``--null`` of them (shift and sphere) on nilearn's MNI152 brain
  mask at 2 mm (shipped with nilearn), from lesions of 5-10 mm radius;
* one mapping task of a batch of null lesions over the benchmark's shard (the same task
  as for real lesions), and the projection of a null run to GSP1000;
* the null group maps task: ``--null`` null lesions, ``--real`` real lesions in two groups,
  ``--resamples`` null groups, at V voxels, with its peak memory.

Each measurement runs in a fresh process, so its peak RSS (VmHWM) is its own.

    python benchmarks/lnm_hub_controls.py                 # the numbers of docs/benchmarks.md
    python benchmarks/lnm_hub_controls.py --smoke         # tiny sizes
    python benchmarks/lnm_hub_controls.py --sections prepare --repeats 7
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lnm_task import make_batch, make_shard  # noqa: E402
from measure import peak_rss_mb, run_in_fresh_process  # noqa: E402


def prepare_seconds(folder, n_voxels, n_frames, n_subjects, with_degree):
    """Seconds to store ``n_subjects`` random subjects as a shard (with or without degree)."""
    import numpy as np

    from shardmap.lnm.connectome.shards import shard_paths, write_shard
    from shardmap.lnm.hubs.degree import DegreeSums, degree_sums_path

    rng = np.random.default_rng(0)
    series = rng.standard_normal((n_frames, n_voxels))  # (T, V), a frame per row
    series -= series.mean(axis=0)
    prefix = Path(folder) / f"prepare-{int(with_degree)}"
    paths = shard_paths(prefix)
    degree = DegreeSums() if with_degree else None

    def subjects():
        for s in range(n_subjects):
            yield f"sub-{s}", [], series.copy(), np.full(n_voxels, 1.0 * n_frames)  # scaled in place

    started = time.perf_counter()
    write_shard(subjects(), n_subjects, n_voxels, "bench", paths["data"], paths["norms"], paths["info"], "float32",
                degree.add_subject if with_degree else None)
    if with_degree:
        degree.save(degree_sums_path(prefix))
    return time.perf_counter() - started


def child_degree_alone(args):
    """Milliseconds per subject of the degree itself: from the float64 unit time courses (as
    in the preparation) and from a stored float32 subject (the upgrade path)."""
    import numpy as np

    from shardmap.lnm.hubs.degree import degree_sums, stored_subject_degree, subject_degree

    rng = np.random.default_rng(0)
    unit = rng.standard_normal((args.frames, args.voxels))
    unit /= np.linalg.norm(unit, axis=0, keepdims=True)
    norm = np.ones(args.voxels)
    stored = unit.astype(np.float32)
    times = {"prepared": [], "stored": []}
    for _ in range(5):
        started = time.perf_counter()
        degree_sums(subject_degree(unit, norm))
        times["prepared"].append(time.perf_counter() - started)
        started = time.perf_counter()
        degree_sums(stored_subject_degree(stored, norm))
        times["stored"].append(time.perf_counter() - started)
    return {key: 1e3 * median(values) for key, values in times.items()}


def mni_mask(folder):
    """nilearn's MNI152 brain mask at 2 mm, saved as a file (returns its path)."""
    import nibabel as nib
    from nilearn.datasets import load_mni152_brain_mask

    path = Path(folder) / "mni_mask.nii.gz"
    if not path.exists():
        img = load_mni152_brain_mask(resolution=2)
        nib.save(nib.Nifti1Image((img.get_fdata() > 0).astype("uint8"), img.affine), str(path))
    return str(path)


def source_batch(folder, mask, n_lesions, seed=0):
    """``n_lesions`` spherical lesions of 5-10 mm radius at random mask voxels, as a batch."""
    import numpy as np

    from shardmap.lnm.lesions import LesionBatch

    rng = np.random.default_rng(seed)
    world = mask.ijk @ mask.affine[:3, :3].T + mask.affine[:3, 3]
    positions = []
    for _ in range(n_lesions):
        centre = world[rng.integers(mask.n_voxels)]
        positions.append(np.flatnonzero(((world - centre) ** 2).sum(axis=1) <= rng.uniform(5, 10) ** 2))
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in positions])]).astype(np.int64)
    batch = LesionBatch([f"L{i}" for i in range(n_lesions)], offsets, np.concatenate(positions), mask.fingerprint())
    path = Path(folder) / "sources.npz"
    batch.save(path)
    return str(path), [len(p) for p in positions]


def child_null_lesions(args):
    from shardmap.lnm.hubs.null_lesions import make_null_batch
    from shardmap.lnm.hubs.null_plan import null_plan
    from shardmap.lnm.nifti import load_mask

    mask = load_mask(mni_mask(args.folder))
    path, sizes = source_batch(args.folder, mask, args.real)
    plan = null_plan([(f"L{i}", None) for i in range(args.real)], args.null)
    started = time.perf_counter()
    make_null_batch(plan, [path], mask, args.method, seed=0)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "per_lesion_ms": 1e3 * seconds / len(plan), "n": len(plan), "voxels": mask.n_voxels,
            "lesion_voxels_median": median(sizes), "peak_mb": peak_rss_mb()}


def child_null_map(args):
    from shardmap.lnm.connectome.shards import shard_paths
    from shardmap.lnm.mapping import map_batch_over_shard

    paths = shard_paths(Path(args.folder) / f"shard-float32-{args.subjects}")
    batch = make_batch(args.voxels, args.batch_lesions)
    started = time.perf_counter()
    map_batch_over_shard(batch, paths, progress_every=1e9, device="cpu", threads=args.threads)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "per_pair_ms": 1e3 * seconds / (args.subjects * args.batch_lesions),
            "peak_mb": peak_rss_mb()}


def null_study(args):
    """Real lesion ids, their groups (two) and the null plan of the group-maps measurement."""
    from shardmap.lnm.hubs.null_plan import null_plan

    real_ids = [f"L{i}" for i in range(args.real)]
    groups = {lesion_id: "AB"[i % 2] for i, lesion_id in enumerate(real_ids)}
    return real_ids, groups, null_plan([(lesion_id, groups[lesion_id]) for lesion_id in real_ids], args.null)


def stats_files(folder, name, n_lesions, size=64):
    return [(str(Path(folder) / f"{name}-{b}.npy"), str(Path(folder) / f"{name}-{b}.json"))
            for b in range(0, n_lesions, size)]


def child_null_inputs(args):
    """Write merged sums of random z maps (eight subjects) for the real and null lesions."""
    import numpy as np

    from shardmap.lnm.stats import SufficientStats

    rng = np.random.default_rng(0)
    real_ids, _, plan = null_study(args)
    for ids, name in ((real_ids, "real"), ([null_id for null_id, *_ in plan], "null")):
        for b, (npy, info) in zip(range(0, len(ids), 64), stats_files(args.folder, name, len(ids))):
            stats = SufficientStats.zeros(ids[b:b + 64], args.voxels)
            sum_z = rng.normal(8 * 0.05, np.sqrt(8) * 0.1, (len(stats.lesion_ids), args.voxels))
            stats.sums[:, 0] = sum_z
            stats.sums[:, 1] = sum_z ** 2 / 8 + 0.01 * rng.chisquare(7, sum_z.shape)
            stats.n[:] = 8
            stats.save(npy, info)
    return {}


def child_null_group_maps(args):
    from shardmap.lnm.hubs.null_maps import null_group_maps

    real_ids, groups, plan = null_study(args)
    started = time.perf_counter()
    null_group_maps(stats_files(args.folder, "real", len(real_ids)), stats_files(args.folder, "null", len(plan)),
                    groups, {null_id: source for null_id, source, _, _ in plan}, 2.0, args.resamples, 0)
    return {"seconds": time.perf_counter() - started, "n_null": len(plan), "peak_mb": peak_rss_mb()}


def child_prepare(args):
    return {"seconds": prepare_seconds(args.folder, args.voxels, args.frames, args.subjects, args.with_degree),
            "peak_mb": peak_rss_mb()}


def run(args, mode, **extra):
    script_args = ["--child", mode, "--folder", args.folder, "--voxels", str(args.voxels), "--frames",
                   str(args.frames), "--subjects", str(args.subjects), "--null", str(args.null), "--real",
                   str(args.real), "--resamples", str(args.resamples), "--threads", str(args.threads),
                   "--batch-lesions", str(args.batch_lesions)]
    for key, value in extra.items():  # a later value of a key wins; False leaves a flag out
        if value is not False:
            script_args += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    return run_in_fresh_process(Path(__file__), script_args, env)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voxels", type=int, default=230_000)
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--subjects", type=int, default=20, help="subjects of the benchmark's shard")
    parser.add_argument("--prepare-subjects", type=int, default=4)
    parser.add_argument("--null", type=int, default=500)
    parser.add_argument("--real", type=int, default=50, help="real lesions (ten null lesions each for --null 500)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--batch-lesions", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--sections", nargs="+", default=["prepare", "null_lesions", "null_map", "null_group_maps"],
                        choices=["prepare", "null_lesions", "null_map", "null_group_maps"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--with-degree", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="shift", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        handler = {"prepare": child_prepare, "degree_alone": child_degree_alone, "null_lesions": child_null_lesions,
                   "null_map": child_null_map,
                   "null_inputs": child_null_inputs, "null_group_maps": child_null_group_maps}[args.child]
        print(json.dumps(handler(args)))
        return
    if args.smoke:
        args.voxels, args.frames, args.subjects, args.prepare_subjects = 5000, 40, 4, 2
        args.null, args.real, args.resamples, args.repeats, args.batch_lesions = 80, 8, 50, 1, 8

    with tempfile.TemporaryDirectory(prefix="shardmap-hubs-") as folder:
        args.folder = folder
        print(f"V = {args.voxels}, T = {args.frames}, {args.threads} threads, medians of {args.repeats}")
        if "prepare" in args.sections:
            prepare_section(args)
        if "null_lesions" in args.sections:
            null_lesions_section(args)
        if "null_map" in args.sections:
            null_map_section(args)
        if "null_group_maps" in args.sections:
            null_group_maps_section(args)


def prepare_section(args):
    """Preparation with and without the degree sums, interleaved; and the degree alone."""
    prepare = {False: [], True: []}
    for _ in range(args.repeats):  # interleaved, so both see the same machine
        for with_degree in (False, True):
            prepare[with_degree].append(run(args, "prepare", subjects=args.prepare_subjects,
                                            with_degree=with_degree)["seconds"])
    without, with_degree = median(prepare[False]), median(prepare[True])
    alone = run(args, "degree_alone")
    print(f"the degree of one subject: {alone['prepared']:.0f} ms from the float64 time courses (preparation), "
          f"{alone['stored']:.0f} ms from a stored float32 subject (the upgrade command)")
    extra_ms = 1e3 * (with_degree - without) / args.prepare_subjects
    print(f"prepare {args.prepare_subjects} subjects: {without:.2f} s without the degree, {with_degree:.2f} s with "
          f"(+{100 * (with_degree / without - 1):.1f} %; {extra_ms:.0f} ms per subject); runs without / with: "
          f"{' '.join(f'{v:.2f}' for v in prepare[False])} / {' '.join(f'{v:.2f}' for v in prepare[True])}; "
          "the mapping tasks are unchanged")


def null_lesions_section(args):
    for method in ("shift", "sphere"):
        result = run(args, "null_lesions", method=method)
        print(f"null lesions ({method}): {result['n']} on the MNI152 2 mm mask ({result['voxels']} voxels) in "
              f"{result['seconds']:.2f} s ({result['per_lesion_ms']:.1f} ms each; sources of median "
              f"{result['lesion_voxels_median']:.0f} voxels), peak {result['peak_mb']:.0f} MB")


def null_map_section(args):
    """The null run over the benchmark's shard: every batch of null lesions, one task each."""
    make_shard(args.folder, args.voxels, args.frames, args.subjects, "float32")
    batches = -(-args.null // args.batch_lesions)
    sizes = [min(args.batch_lesions, args.null - b * args.batch_lesions) for b in range(batches)]
    runs = [[run(args, "null_map", batch_lesions=size) for size in sizes] for _ in range(args.repeats)]
    totals = [sum(m["seconds"] for m in tasks) for tasks in runs]
    per_pair = median(1e3 * total / (args.null * args.subjects) for total in totals)
    print(f"the null run, {args.null} null lesions x {args.subjects} subjects in {batches} mapping tasks: "
          f"{median(totals):.1f} s ({per_pair:.2f} ms per pair; runs {' '.join(f'{t:.1f}' for t in totals)} s), "
          f"peak {max(m['peak_mb'] for tasks in runs for m in tasks):.0f} MB")
    task_seconds = per_pair * 1e-3 * args.batch_lesions * 100
    print(f"projected null run at GSP1000 (1000 subjects, shards of 100): {batches} batches x 10 shards = "
          f"{10 * batches} mapping tasks of about {task_seconds:.0f} s each at this per-pair time "
          f"({batches * 10 * task_seconds / 60:.0f} task-minutes in all; about {task_seconds:.0f} s of wall time "
          f"when a cluster runs them side by side, before queueing and the fixed cost of each task)")


def null_group_maps_section(args):
    run(args, "null_inputs")
    groups = [run(args, "null_group_maps") for _ in range(args.repeats)]
    print(f"null group maps: {args.real} real lesions (2 groups), {groups[0]['n_null']} null lesions, "
          f"{args.resamples} resamples, V = {args.voxels}: {median(g['seconds'] for g in groups):.1f} s, "
          f"peak {median(g['peak_mb'] for g in groups):.0f} MB")


if __name__ == "__main__":
    main()
