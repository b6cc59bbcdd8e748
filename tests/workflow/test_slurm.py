"""The workflow on a real single-node SLURM, through snakemake-executor-plugin-slurm.

Opt in with `pytest -m slurm` (root; SLURM and munge are installed with apt-get when
missing, see tests/slurm_cluster.py). The cluster enforces memory, and its node has one
fake GPU, so every request is checked by a real scheduler.

The project is the small two-arm one of test_cluster_profile.py: run once with
profiles/local and once with profiles/slurm edited the way the README tells a user to
(account, partition, squeue for job status because this cluster has no accounting
database), and the outputs must be the same files.
"""

import json
import re
import time

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from shardmap import resources as res
from shardmap.lnm import resources as lnm_res
from projects import write_project
from synthetic import make_dataset
from test_cluster_profile import LOCAL_PROFILE, SLURM_PROFILE, run_snakemake, write_cluster_project

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]


def user_profile(folder, cluster, **changes):
    """profiles/slurm/config.yaml as the README has a user edit it, for this cluster."""
    profile = yaml.safe_load((SLURM_PROFILE / "config.yaml").read_text())
    profile["default-resources"].update(slurm_account="shardmap-tests", slurm_partition="debug")
    profile["slurm-status-command"] = "squeue"  # the README's line for clusters without sacct
    profile["cores"] = cluster.cpus  # a group job must fit the test node
    # Test speed only: the first status check after 5 s instead of 40 s.
    profile["slurm-init-seconds-before-status-checks"] = 5
    profile.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


def sbatch_calls(text):
    """(comment, call) of every sbatch call the plugin logged (with --verbose)."""
    calls = re.findall(r"sbatch call: (sbatch .*)", text)
    return [(re.search(r"--comment '?([^' ]+)", call).group(1), call) for call in calls]


def test_node_kills_a_job_above_its_memory(slurm_cluster, tmp_path):
    """The harness has teeth: a job step using more than its --mem is killed."""
    job = slurm_cluster.run(
        "sbatch", "--parsable", "--mem=100", "--time=2", f"--output={tmp_path / 'job.log'}",
        f"--chdir={tmp_path}", "--wrap",
        "srun -n1 python3 -c 'import time; b = bytearray(400 * 2**20); time.sleep(5); print(\"survived\")'",
    ).stdout.strip()
    deadline = time.monotonic() + 60
    state = ""
    while time.monotonic() < deadline:
        state = slurm_cluster.run("squeue", "--noheader", "--states=all", "--format=%T", "--jobs", job).stdout.strip()
        if state in ("COMPLETED", "FAILED", "OUT_OF_MEMORY", "CANCELLED"):
            break
        time.sleep(1)
    assert state in ("FAILED", "OUT_OF_MEMORY"), state
    assert "survived" not in (tmp_path / "job.log").read_text()


@pytest.fixture(scope="module")
def runs(slurm_cluster, tmp_path_factory):
    """The same project run locally and on SLURM; returns both folders and the SLURM log."""
    local = tmp_path_factory.mktemp("local-run")
    write_cluster_project(local)
    started = time.monotonic()
    result = run_snakemake(local, "--profile", str(LOCAL_PROFILE), "--cores", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    local_seconds = time.monotonic() - started

    remote = tmp_path_factory.mktemp("slurm-run")
    write_cluster_project(remote)
    profile = user_profile(remote / "profile", slurm_cluster, **{"set-resources": {"cpa_train": {"gpu": 1}}})
    started = time.monotonic()
    result = run_snakemake(remote, "--profile", str(profile), "--verbose", env=slurm_cluster.env())
    slurm_seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:] + slurm_cluster.logs()
    print(f"local run {local_seconds:.0f} s, SLURM run {slurm_seconds:.0f} s")
    return local, remote, result.stdout + result.stderr


def data_files(root):
    return sorted(p.relative_to(root) for p in (root / "out").rglob("*")
                  if p.is_file() and "logs" not in p.relative_to(root).parts)


def test_slurm_outputs_equal_the_local_run(runs):
    local, remote, _ = runs
    files = data_files(local)
    assert files == data_files(remote)
    # per lesion 3 maps, 3 group maps for all and each of 2 groups, the 2 degree maps
    assert len([f for f in files if f.name.endswith(".nii.gz")]) == 4 * 3 + 3 * 3 + 2
    assert {f.suffix for f in files} >= {".gz", ".h5ad", ".tsv", ".npy", ".json", ".pt"}
    for name in files:
        if name.name == "model.pt":
            continue
        assert (local / name).read_bytes() == (remote / name).read_bytes(), name
    # The saved model also holds scvi-tools' run name (a time stamp) and a random uuid,
    # so compare what was learned: every tensor must be identical.
    ours, theirs = (torch.load(root / "out" / "cpa" / "model" / "model.pt", map_location="cpu",
                               weights_only=False)["model_state_dict"] for root in (local, remote))
    assert tensors(ours) and tensors(ours).keys() == tensors(theirs).keys()
    for key, value in tensors(ours).items():
        assert torch.equal(value, tensors(theirs)[key]), key


def tensors(tree, prefix=""):
    """{path: tensor} of a nested state dict."""
    if torch.is_tensor(tree):
        return {prefix: tree}
    found = {}
    for key, value in (tree.items() if isinstance(tree, dict) else []):
        found.update(tensors(value, f"{prefix}/{key}"))
    return found


def test_every_task_left_its_log(runs):
    local, remote, _ = runs
    logs = sorted(p.relative_to(local) for p in (local / "out" / "logs").rglob("*.log"))
    assert len(logs) >= 15
    assert logs == sorted(p.relative_to(remote) for p in (remote / "out" / "logs").rglob("*.log"))
    for log in logs:
        assert (remote / log).read_text().rstrip().endswith("done"), log


def test_jobs_were_submitted_with_their_requests(runs):
    _, remote, output = runs
    calls = sbatch_calls(output)
    assert calls, output[-3000:]
    for comment, call in calls:
        assert re.search(r" --mem \d+", call), call
        assert re.search(r" -t \d+", call), call
        assert " -A shardmap-tests" in call and " -p debug" in call, call
        # the GPU goes to the training job only, as --gpus (what SLURM understands)
        assert ("--gpus=1" in call) == (comment == "rule_cpa_train"), call
    comments = [comment for comment, _ in calls]
    # per-lesion map writing travels in one job per lesion batch, with that batch's merge
    assert not any(c.startswith("rule_lnm_lesion_maps") or c.startswith("rule_lnm_merge") for c in comments)
    groups = [call for comment, call in calls if comment.startswith("rule_lnm_batch")]
    assert len(groups) == 2, comments
    # Each group: the merge, then the one job that writes its batch's two lesions' maps: one
    # CPU, the larger of the two memory requests, and the two runtimes one after the other.
    mask = json.loads((remote / "out" / "lnm" / "connectome" / "mask.json").read_text())
    memory = max(lnm_res.merge_mem_mb(2, mask["n_voxels"]), lnm_res.maps_mem_mb(mask))
    minutes = res.MIN_RUNTIME_MIN + lnm_res.lesion_maps_runtime(2)
    for call in groups:
        assert "--cpus-per-task=1" in call and f" --mem {memory} " in call and f" -t {minutes} " in call, call


def test_a_failing_task_is_reported_as_failed_and_its_log_kept(slurm_cluster, tmp_path):
    dataset = make_dataset(tmp_path / "data", np.random.default_rng(5))
    far = tmp_path / "data" / "far.nii.gz"
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = 500.0
    volume = np.zeros((4, 4, 4), np.uint8)
    volume[1, 1, 1] = 1
    nib.save(nib.Nifti1Image(volume, affine), str(far))
    dataset["lesions"].append(("far-away", str(far), "g1"))
    write_project(tmp_path, dataset, lesion_batch_size=5, subject_shard_size=5)
    profile = user_profile(tmp_path / "profile", slurm_cluster)
    result = run_snakemake(tmp_path, "--profile", str(profile), env=slurm_cluster.env())
    text = result.stdout + result.stderr
    assert result.returncode != 0, text[-3000:]
    assert "Error in rule lnm_prepare_lesions" in text, text[-3000:]
    assert re.search(r"SLURM-job '\d+' failed, SLURM status is: 'FAILED'", text), text[-3000:]
    # the task's own log says what is wrong, and SLURM's log of the failed job is kept
    log = (tmp_path / "out" / "logs" / "lnm" / "prepare_lesions" / "batch-0000.log").read_text()
    assert "lesion 'far-away'" in log and "no voxel inside the brain mask" in log
    kept = list((tmp_path / ".snakemake" / "slurm_logs" / "rule_lnm_prepare_lesions").rglob("*.log"))
    assert kept and "Error in rule lnm_prepare_lesions" in kept[0].read_text()
    # nothing that looks like finished output of the failed batch, nothing downstream
    lesions = tmp_path / "out" / "lnm" / "lesions"
    assert not list(lesions.glob("batch-*")) if lesions.exists() else True
    # (the connectome's provenance sidecar, lnm/maps/connectome.json, depends on the shards
    # alone and may be written: it is no map of the failed batch)
    maps = tmp_path / "out" / "lnm" / "maps"
    assert not list(maps.glob("*.nii.gz")) if maps.exists() else True
    # and nothing of this run is left in the queue
    queue = slurm_cluster.run("squeue", "--noheader", "--states=PENDING,RUNNING,COMPLETING").stdout
    assert not queue.strip(), queue
