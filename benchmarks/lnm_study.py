"""Whole-study time of the lesion arm: the real workflow on a synthetic study, with the
wall time of every rule from Snakemake's own records.

A study is made here (no download): nilearn's MNI152 brain mask on a radiological grid
of ``--grid-mm`` millimetres, ``--subjects`` subjects of one 120-frame run each (smooth
network signals and noise), and ``--lesions`` spherical lesions of 4-12 mm radius at
random places in the brain, on the mask grid. The workflow then runs on it with
``snakemake --cores 2`` (``--report`` / ``--no-report``), and ``--notemp`` so that the
records of the temporary partial sums stay.

Per rule it prints the number of jobs and the sum of their wall times, from the start
and end times Snakemake records for every job (``.snakemake/metadata``; they include
each job's process start and imports), and the share of each rule. "After mapping" is
every rule that runs on the mapping tasks' results (merge, maps, group maps, QC table,
report figures), set against the mapping tasks' own time. It also times the dry run
(the job graph) on the same sheets.

    python benchmarks/lnm_study.py --lesions 1000 --subjects 20 --grid-mm 4
    python benchmarks/lnm_study.py --lesions 1000 --subjects 20 --grid-mm 4 --no-report
    python benchmarks/lnm_study.py --lesions 200 --subjects 20 --grid-mm 2
    python benchmarks/lnm_study.py --smoke        # tiny, for CI
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FRAMES = 120
# Rules whose jobs produce what the user reads after the mapping tasks.
BEFORE_MAPPING = {"lnm_mask_info", "lnm_check_inputs", "lnm_prepare_lesions", "lnm_prepare_connectome"}
MAPPING = {"lnm_map"}


def grown_to(inside, n_voxels):
    """``inside`` grown by one-voxel dilations to exactly ``n_voxels`` voxels (of the last
    ring, those nearest the mask's centre), as FSL's dilated brain mask grows the brain."""
    import numpy as np
    from scipy import ndimage

    inside = inside.copy()
    centre = np.argwhere(inside).mean(axis=0)
    while inside.sum() < n_voxels:
        ring = np.argwhere(ndimage.binary_dilation(inside) & ~inside)
        needed = n_voxels - int(inside.sum())
        if len(ring) > needed:
            ring = ring[np.argsort(((ring - centre) ** 2).sum(axis=1), kind="stable")[:needed]]
        inside[tuple(ring.T)] = True
    return inside


def brain_mask(grid_mm, n_voxels=None):
    """nilearn's MNI152 brain mask (shipped inside nilearn) on a radiological grid; with
    ``n_voxels``, grown to that many voxels (292,019: FSL's dilated 2 mm mask, GSP1000's)."""
    import nibabel as nib
    import numpy as np
    from nilearn import datasets, image

    template = datasets.load_mni152_brain_mask(resolution=2)
    shape = tuple(int(np.ceil(extent / grid_mm)) + 1 for extent in (180, 216, 180))
    affine = np.array([[-grid_mm, 0, 0, 90.0], [0, grid_mm, 0, -126.0], [0, 0, grid_mm, -72.0], [0, 0, 0, 1]])
    resampled = image.resample_img(template, target_affine=affine, target_shape=shape, interpolation="nearest",
                                   force_resample=True, copy_header=True)
    inside = np.asarray(resampled.dataobj) > 0
    if n_voxels:
        inside = grown_to(inside, n_voxels)
    return nib.Nifti1Image(inside.astype(np.uint8), affine)


def make_study(folder, n_lesions, n_subjects, grid_mm, seed=0, n_voxels=None):
    """Write the mask, runs, lesions and both sheets under ``folder``; return the number of
    mask voxels."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    mask = brain_mask(grid_mm, n_voxels)
    nib.save(mask, str(folder / "mask.nii.gz"))
    inside = np.asarray(mask.dataobj) > 0
    ijk = np.argwhere(inside)
    world = ijk @ mask.affine[:3, :3].T + mask.affine[:3, 3]
    centres = world[rng.choice(len(world), 6, replace=False)]
    maps = np.exp(-((world[None] - centres[:, None]) ** 2).sum(-1) / (2 * 20.0 ** 2))  # (6, V)
    subjects = []
    for s in range(n_subjects):
        courses = rng.standard_normal((6, FRAMES))
        series = 500 + 3.0 * maps.T @ courses + rng.standard_normal((len(world), FRAMES))
        volume = np.zeros(inside.shape + (FRAMES,), np.float32)
        volume[inside] = series
        path = folder / "runs" / f"sub-{s:04d}_bld001.nii.gz"
        path.parent.mkdir(exist_ok=True)
        run = nib.Nifti1Image(volume, mask.affine)
        run.header.set_zooms((grid_mm,) * 3 + (3.0,))
        run.header.set_xyzt_units("mm", "sec")
        nib.save(run, str(path))
        subjects.append((f"sub-{s:04d}", path))
    lesions = []
    for k in range(n_lesions):
        centre, radius = world[rng.integers(len(world))], rng.uniform(4.0, 12.0)
        lesioned = ((world - centre) ** 2).sum(-1) <= max(radius, grid_mm * 0.6) ** 2
        volume = np.zeros(inside.shape, np.uint8)
        volume[tuple(ijk[lesioned].T)] = 1
        path = folder / "lesions" / f"les-{k:04d}.nii.gz"
        path.parent.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(volume, mask.affine), str(path))
        lesions.append((f"les-{k:04d}", path, "stroke" if k % 2 else "control"))
    (folder / "lesions.tsv").write_text("lesion_id\tpath\tgroup\n" + "".join(
        f"{i}\t{p.relative_to(folder)}\t{g}\n" for i, p, g in lesions))
    (folder / "subjects.tsv").write_text("subject_id\tpath\n" + "".join(
        f"{i}\t{p.relative_to(folder)}\n" for i, p in subjects))
    return int(inside.sum())


def write_config(folder, report, extra):
    import yaml

    config = {"outdir": "out", "report": report,
              "lnm": {"lesions": "lesions.tsv", "connectome": {"subjects": "subjects.tsv", "mask": "mask.nii.gz"},
                      "sensitivity_threshold": 4.0}}
    config.update(extra)
    (folder / "my.yaml").write_text(yaml.safe_dump(config))


def snakemake(folder, *args, snakefile=REPO / "Snakefile"):
    command = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory", str(folder),
               "--configfile", "my.yaml", "--cores", "2", *args]
    # Snakemake appends a script's folder to sys.path, after an installed shardmap (pip
    # install -e puts this checkout's library there): PYTHONPATH makes each workflow's
    # tasks import its own library.
    env = dict(os.environ, PYTHONPATH=str(Path(snakefile).parent / "workflow" / "scripts"))
    started = time.monotonic()
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"snakemake {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return time.monotonic() - started


def job_times(folder):
    """{rule: [seconds of each job]} from Snakemake's records of every output file: the
    outputs of one job share its job hash; the job ran from the earliest start to the
    latest end recorded for them."""
    spans = {}
    for record in (folder / ".snakemake" / "metadata").rglob("*"):
        if not record.is_file():
            continue
        meta = json.loads(record.read_text())
        if meta.get("starttime") is None or meta.get("rule") is None:
            continue
        key = (meta["rule"], meta["job_hash"])
        start, end = spans.get(key, (meta["starttime"], meta["endtime"]))
        spans[key] = (min(start, meta["starttime"]), max(end, meta["endtime"]))
    times = defaultdict(list)
    for (rule, _), (start, end) in spans.items():
        # the rules each lesion batch has of its own (lnm_lesion_maps_0003) under one name
        times[re.sub(r"_\d{4}$", "_NNNN", rule)].append(end - start)
    return times


def summary(times, wall_s, dag_s, n_voxels, args):
    total = sum(sum(v) for v in times.values())
    mapping = sum(sum(times[r]) for r in MAPPING if r in times)
    after = sum(sum(v) for r, v in times.items() if r not in BEFORE_MAPPING | MAPPING)
    rows = [{"rule": rule, "jobs": len(v), "job_s": round(sum(v), 1), "share": round(sum(v) / total, 3)}
            for rule, v in sorted(times.items(), key=lambda item: -sum(item[1]))]
    return {"lesions": args.lesions, "subjects": args.subjects, "grid_mm": args.grid_mm, "voxels": n_voxels,
            "report": args.report, "wall_s": round(wall_s, 1), "dag_s": round(dag_s, 2),
            "job_s_total": round(total, 1), "mapping_job_s": round(mapping, 1),
            "after_mapping_job_s": round(after, 1),
            "after_over_mapping": round(after / mapping, 3) if mapping else None, "rules": rows}


def print_table(result):
    print(f"\n{result['lesions']} lesions x {result['subjects']} subjects, {result['grid_mm']} mm grid "
          f"({result['voxels']} voxels), report {'on' if result['report'] else 'off'}: wall {result['wall_s']} s, "
          f"dry run {result['dag_s']} s")
    print(f"{'rule':28s} {'jobs':>6s} {'job s':>9s} {'share':>7s}")
    for row in result["rules"]:
        print(f"{row['rule']:28s} {row['jobs']:6d} {row['job_s']:9.1f} {100 * row['share']:6.1f}%")
    print(f"after the mapping tasks: {result['after_mapping_job_s']} job s = "
          f"{result['after_over_mapping']} x the mapping tasks' {result['mapping_job_s']} job s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lesions", type=int, default=1000)
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--grid-mm", type=float, default=4.0)
    parser.add_argument("--report", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--config", default="{}", help="more config as JSON, e.g. '{\"report_lesion_figures\": 50}'")
    parser.add_argument("--workdir", help="keep the study here (default: a temporary folder)")
    parser.add_argument("--voxels", type=int, help="grow the mask to this many voxels (292019: GSP1000's)")
    parser.add_argument("--before", metavar="SNAKEFILE", help="also run another checkout's workflow on the same "
                        "study, in turn with ours (--repeats times each), and compare wall times")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="12 lesions x 3 subjects on a 8 mm grid")
    args = parser.parse_args()
    if args.smoke:
        args.lesions, args.subjects, args.grid_mm, args.report = 12, 3, 8.0, False
    workflows = {"ours": REPO / "Snakefile"}
    if args.before:
        workflows["before"] = Path(args.before).resolve()
    with tempfile.TemporaryDirectory() as scratch:
        study = Path(args.workdir or scratch).resolve() / "study"
        n_voxels = make_study(study, args.lesions, args.subjects, args.grid_mm, n_voxels=args.voxels)
        write_config(study, args.report, json.loads(args.config))
        walls = {name: [] for name in workflows}
        results = {}
        for _ in range(args.repeats):
            for name, snakefile in workflows.items():  # in turn, so both see the same load
                folder = study.parent / f"run-{name}"
                if folder.exists():
                    shutil.rmtree(folder)
                shutil.copytree(study, folder)
                for path in folder.rglob("*.nii.gz"):  # every input in the page cache, as for the peers
                    path.read_bytes()
                dag_s = snakemake(folder, "-n", "--quiet", snakefile=snakefile)
                os.sync()
                wall_s = snakemake(folder, "--notemp", "--quiet", snakefile=snakefile)
                walls[name].append(wall_s)
                results[name] = summary(job_times(folder), wall_s, dag_s, n_voxels, args)
    for name, result in results.items():
        if len(results) > 1:
            print(f"\n== {name} (the last run)")
        print_table(result)
    ours = results["ours"]
    for name, values in walls.items():
        print(f"wall, {name}: median {statistics.median(values):.1f} s of {[round(v, 1) for v in values]}")
    print(json.dumps(ours))


if __name__ == "__main__":
    main()
