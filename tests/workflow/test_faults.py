"""Killed tasks, a killed Snakemake and deleted partial results: rerunning the same
command gives the outputs of an uninterrupted run, bit for bit.

Each arm's project is run once up to the heavy tasks (connectome and lesions prepared;
the CPA model trained) and copied, Snakemake's metadata included: one copy runs on
uninterrupted (the reference), the others are disturbed and rerun. The points at which
tasks are killed are drawn from seeded generators; a point that falls after every
target task has finished is a miss, and each test asserts that it hit a running task.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from projects import REPO, SNAKEMAKE, TEMPORARY_MARK, assert_every_file_is_whole, write_cpa_project, write_project
from synthetic import make_dataset

pytestmark = pytest.mark.workflow

COMMAND = SNAKEMAKE + ["-s", str(REPO / "Snakefile"), "--cores", "2", "--configfile", "my.yaml"]
# --configfile takes several values, so targets and options go before it
PREFIX, SUFFIX = COMMAND[:-2], COMMAND[-2:]


def run(workdir, *args):
    return subprocess.run(PREFIX + list(args) + SUFFIX, cwd=workdir, capture_output=True, text=True, timeout=300)


def copy_project(source, dest):
    shutil.copytree(source, dest, symlinks=True, ignore=shutil.ignore_patterns("locks"))
    return dest


def tasks_running(workdir, script):
    """PIDs of Snakemake script jobs of ``script`` (e.g. 'lnm_map.py') running in ``workdir``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd == str(workdir) and any(part.endswith(f".{script}".encode()) for part in cmdline):
            found.append(int(entry.name))
    return found


def alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] not in ("Z", "X")
    except OSError:
        return False


def run_and_kill(workdir, script, delay_s, whole_run=False, wait_for=None, targets=(), timeout_s=120):
    """Start the command; once a ``script`` task runs (and ``wait_for()`` is true), wait
    ``delay_s`` and SIGKILL a running ``script`` task, or Snakemake and all its tasks
    (``whole_run``). Returns (hit, returncode): whether a running task was killed."""
    log = open(workdir / "killed-run.log", "a")
    process = subprocess.Popen(PREFIX + list(targets) + SUFFIX, cwd=workdir, stdout=log, stderr=log,
                               start_new_session=True)
    deadline = time.monotonic() + timeout_s
    hit = False
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if tasks_running(workdir, script) and (wait_for is None or wait_for()):
                time.sleep(delay_s)
                victims = [p for p in tasks_running(workdir, script) if alive(p)]
                if victims:
                    hit = True
                    if whole_run:
                        os.killpg(process.pid, signal.SIGKILL)
                    else:
                        os.kill(victims[0], signal.SIGKILL)
                break
            time.sleep(0.02)
        returncode = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if whole_run:  # tasks orphaned by the killed Snakemake belong to its session too
            for pid in tasks_running(workdir, script):
                os.kill(pid, signal.SIGKILL)
        log.close()
    return hit, returncode


def result_files(out):
    """{relative path: bytes} of every output except logs (they hold times and PIDs)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and "logs" not in p.relative_to(out).parts}


def assert_same_results(disturbed, reference):
    got, want = result_files(disturbed / "out"), result_files(reference / "out")
    leftovers = [name for name in got if TEMPORARY_MARK in name]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    assert sorted(got) == sorted(want)
    differ = [name for name in want if got[name] != want[name]]
    assert not differ, f"not bit-identical to the uninterrupted run: {differ}"


# --- lesion network mapping ------------------------------------------------------------

@pytest.fixture(scope="module")
def lnm_projects(tmp_path_factory):
    """(prepared project, reference project): the first stops before mapping."""
    base = tmp_path_factory.mktemp("lnm-base")
    dataset = make_dataset(base / "data", np.random.default_rng(21))
    write_project(base, dataset)
    # 5 subjects in shards of 2, 4 lesions in batches of 3 (write_project)
    prepared = run(base, *[f"out/lnm/connectome/shard-{i:04d}.npy" for i in range(3)],
                   *[f"out/lnm/lesions/batch-{i:04d}.npz" for i in range(2)])
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    assert not (base / "out" / "lnm" / "partial").exists()
    reference = copy_project(base, tmp_path_factory.mktemp("lnm-reference") / "p")
    finished = run(reference)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return base, reference


def partial_files(workdir):
    return sorted((workdir / "out" / "lnm" / "partial").glob("batch-*/shard-*.npy"))


def test_killed_mapping_tasks_and_snakemake_rerun_to_identical_maps(lnm_projects, tmp_path):
    base, reference = lnm_projects
    project = copy_project(base, tmp_path / "p")
    rng = np.random.default_rng(5)
    hits = 0
    # two mapping tasks killed at random points, then Snakemake with all its tasks. A task
    # of this project lives about 0.3 s (its process start, imports and 0.1 s of mapping;
    # lnm.device: auto no longer imports torch on a node without a GPU).
    for whole_run in (False, False, True):
        hit, returncode = run_and_kill(project, "lnm_map.py", float(rng.uniform(0.0, 0.2)), whole_run)
        hits += hit
        if hit:
            assert returncode != 0
        assert_every_file_is_whole(project / "out")
        if whole_run:  # a killed Snakemake leaves its lock; Snakemake cannot tell it is stale
            assert run(project, "--unlock").returncode == 0
    assert hits >= 2, "the kill points missed the mapping tasks"
    rerun = run(project)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_same_results(project, reference)


def test_deleted_partial_sum_is_recomputed_to_identical_maps(lnm_projects, tmp_path):
    base, reference = lnm_projects
    project = copy_project(base, tmp_path / "p")
    rng = np.random.default_rng(6)
    hit, _ = run_and_kill(project, "lnm_map.py", float(rng.uniform(0.0, 0.2)),
                          wait_for=lambda: len(partial_files(project)) >= 2)
    assert hit
    # Snakemake removed the killed task's outputs even if it had written them
    done = partial_files(project)
    assert done, "no partial sum was finished before the kill"
    victim = done[int(rng.integers(len(done)))]
    victim.unlink()
    rerun = run(project)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"lnm/partial/{victim.parent.name}/{victim.name}" in rerun.stdout + rerun.stderr
    assert_same_results(project, reference)


def test_a_killed_lesion_maps_job_leaves_no_map_of_its_batch(tmp_path_factory):
    """One job writes the maps of a whole lesion batch (here 24 lesions, 72 files): killed
    once some of them are written, it leaves none of them under its final name, and the
    rerun writes them all, the same bytes as an uninterrupted run."""
    base = tmp_path_factory.mktemp("lnm-wide")
    dataset = make_dataset(base / "data", np.random.default_rng(22))
    lesion_files = [path for _, path, _ in dataset["lesions"]]
    dataset["lesions"] = [(f"les-{k:02d}", lesion_files[k % len(lesion_files)], "g1") for k in range(24)]
    write_project(base, dataset, lesion_batch_size=24)
    merged = run(base, "out/lnm/stats/batch-0000.npy")
    assert merged.returncode == 0, merged.stderr[-3000:]
    reference = copy_project(base, tmp_path_factory.mktemp("lnm-wide-reference") / "p")
    assert run(reference).returncode == 0
    maps = base / "out" / "lnm" / "maps"
    hit, returncode = run_and_kill(base, "lnm_lesion_maps.py", 0.0,
                                   wait_for=lambda: len(list(maps.glob("les-*.nii.gz"))) >= 3)
    assert hit and returncode != 0, "the kill missed the maps job"
    assert not list(maps.glob("les-*.nii.gz")) if maps.exists() else True, "a killed job left maps behind"
    assert (base / "out" / "logs" / "lnm" / "lesion_maps" / "batch-0000.log").exists()
    rerun = run(base)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_same_results(base, reference)


# --- CPA inference ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def cpa_projects(tmp_path_factory):
    """(trained project, reference project): the first stops once the model is trained."""
    base = tmp_path_factory.mktemp("cpa-base")
    write_cpa_project(base, 600, 30, 3, model={"n_latent": 4, "n_hidden": 16},
                      train={"max_epochs": 2, "batch_size": 128, "accelerator": "cpu"}, shard_size=300,
                      counterfactuals=[])
    trained = run(base, "out/cpa/model/model.pt")
    assert trained.returncode == 0, trained.stderr[-3000:]
    reference = copy_project(base, tmp_path_factory.mktemp("cpa-reference") / "p")
    finished = run(reference, *LATENTS)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return base, reference


# the command of these tests asks for the latents (the evaluation would only add time)
LATENTS = ["out/cpa/latents.h5ad"]


@pytest.mark.parametrize("whole_run, seed", [(False, 7), (True, 8)], ids=["task", "snakemake"])
def test_killed_inference_reruns_to_identical_latents(cpa_projects, tmp_path, whole_run, seed):
    """An inference task, or Snakemake with its tasks, killed at a seeded random point."""
    base, reference = cpa_projects
    project = copy_project(base, tmp_path / "p")
    # an inference task (about 1.5 s here) spends its first second importing torch, then
    # reads, infers and writes; the kill lands anywhere in it
    delay = float(np.random.default_rng(seed).uniform(0.0, 1.2))
    hit, returncode = run_and_kill(project, "cpa_infer.py", delay, whole_run, targets=LATENTS)
    assert hit, "the kill point missed the inference tasks"
    assert returncode != 0
    assert_every_file_is_whole(project / "out")
    if whole_run:
        assert run(project, "--unlock").returncode == 0
    rerun = run(project, *LATENTS)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (project / "out" / "cpa" / "latents.h5ad").exists()
    assert_same_results(project, reference)
