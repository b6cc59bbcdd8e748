"""The workflow profiles and the resource requests a cluster sees, without a cluster.

A tiny project with both arms is run once with profiles/local; a dry run with
profiles/slurm over its finished outputs then shows the requests every job would be
submitted with (dry runs of a fresh project show most of them as <TBD>).
"""

import json
import os
import re
import subprocess

import numpy as np
import pytest
import yaml

from shardmap import resources as res
from shardmap.cpa import resources as cpa_res
from shardmap.lnm import resources as lnm_res
from shardmap.report import resources as report_res
from shardmap.cpa.simulate import simulate_screen
from projects import REPO, SNAKEMAKE, write_project
from synthetic import make_dataset

pytestmark = pytest.mark.workflow

SLURM_PROFILE = REPO / "profiles" / "slurm"
LOCAL_PROFILE = REPO / "profiles" / "local"


def write_cluster_project(workdir):
    """Both arms on small data: 4 lesions in 2 batches, 5 subjects in 1 shard, 1000 cells
    in 1 shard, one counterfactual. Returns the config."""
    dataset = make_dataset(workdir / "data", np.random.default_rng(99))
    config = write_project(workdir, dataset, lesion_batch_size=2, subject_shard_size=5)
    screen = simulate_screen(n_cells=1000, n_genes=40, seed=11)
    del screen.uns["truth"]
    screen.write_h5ad(workdir / "screen.h5ad")
    config["cpa"] = {"enabled": True, "adata": "screen.h5ad", "covariate_keys": ["cell_type"],
                     "holdout": ["drug00+drug01"], "model": {"n_latent": 8, "n_hidden": 32},
                     "train": {"max_epochs": 3, "batch_size": 128, "accelerator": "cpu"},
                     "shard_size": 1000, "threads": 1,
                     "counterfactuals": [{"perturbation": "drug05", "dosage": "1", "name": "d5"}]}
    (workdir / "my.yaml").write_text(yaml.safe_dump(config))
    return config


def run_snakemake(workdir, *args, env=None, timeout=600):
    cmd = SNAKEMAKE + ["-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", "my.yaml"]
    return subprocess.run(cmd + list(args), cwd=workdir, capture_output=True, text=True, timeout=timeout,
                          env=env)


def dry_run_requests(workdir, *args):
    """{rule: [resources of each job as a dict]} from a dry run with the slurm profile."""
    result = run_snakemake(workdir, "--profile", str(SLURM_PROFILE), "-n", *args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return parse_job_resources(result.stdout)


def parse_job_resources(text):
    """{rule: [resources of each job]} from Snakemake's job listing (grouped jobs are
    indented); a job without a resources line gets {}. The rules each lesion batch has of
    its own (lnm_lesion_maps_0000, ...) are listed under their common name."""
    requests, rule = {}, None
    for line in text.splitlines():
        found = re.match(r"^\s*rule (\w+):$", line)
        if found:
            rule = re.sub(r"_\d{4}$", "", found.group(1))
            requests.setdefault(rule, []).append({})
            continue
        found = re.match(r"^\s+resources: (.*)$", line)
        if found and rule:
            requests[rule][-1] = dict(item.split("=", 1) for item in found.group(1).split(", "))
            rule = None
    return requests


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cluster-project")
    config = write_cluster_project(workdir)
    result = run_snakemake(workdir, "--profile", str(LOCAL_PROFILE), "--cores", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir, config


def test_slurm_profile_requests_memory_and_runtime_for_every_job(finished):
    workdir, config = finished
    requests = dry_run_requests(workdir, "--forceall")
    rules = {"lnm_mask_info", "lnm_check_inputs", "cpa_check_inputs", "lnm_prepare_connectome", "lnm_prepare_lesions", "lnm_map", "lnm_merge",
             "lnm_lesion_maps", "lnm_group_maps", "lnm_qc_table",
             "cpa_train", "cpa_infer", "cpa_merge", "cpa_predict", "cpa_evaluate"}
    assert rules <= set(requests), rules - set(requests)
    floor = res.SNAKEMAKE_MB + res.BASE_MB
    for rule in rules:
        for job in requests[rule]:
            # a number computed from the data, never the profile's default (1000 MB, 30 min)
            assert job["mem_mb"].isdigit() and int(job["mem_mb"]) >= floor, (rule, job)
            assert job["runtime"].isdigit() and int(job["runtime"]) >= 1, (rule, job)
            assert job["slurm_account"] == "EDIT-your-account", (rule, job)
            assert job.get("gpu", "0") == "0", (rule, job)

    # the formulas of config/README.md, from the files the earlier tasks wrote
    out = workdir / "out" / "lnm"
    shard = json.loads((out / "connectome" / "shard-0000.json").read_text())
    mask = json.loads((out / "connectome" / "mask.json").read_text())
    assert {int(j["mem_mb"]) for j in requests["lnm_map"]} == {lnm_res.mapping_mem_mb(shard, 2)}
    assert {int(j["runtime"]) for j in requests["lnm_map"]} == {lnm_res.mapping_runtime(shard, 2, threads=2)}
    assert len(requests["lnm_lesion_maps"]) == 2  # one job per lesion batch
    assert {int(j["mem_mb"]) for j in requests["lnm_lesion_maps"]} == {lnm_res.maps_mem_mb(mask)}
    assert {int(j["runtime"]) for j in requests["lnm_lesion_maps"]} == {lnm_res.lesion_maps_runtime(2)}
    assert {int(j["mem_mb"]) for j in requests["lnm_merge"]} == {lnm_res.merge_mem_mb(2, mask["n_voxels"])}
    size_mb = os.path.getsize(workdir / "screen.h5ad") / 2 ** 20  # Snakemake's input.size_mb
    assert {int(j["mem_mb"]) for j in requests["cpa_train"]} == {cpa_res.train_mem_mb(size_mb, config["cpa"])}
    assert int(requests["cpa_train"][0]["mem_mb"]) >= floor + cpa_res.TORCH_MB
    assert {int(j["mem_mb"]) for j in requests["lnm_check_inputs"]} == {lnm_res.check_runs_mem_mb(mask)}
    assert {int(j["mem_mb"]) for j in requests["cpa_check_inputs"]} == {
        cpa_res.check_mem_mb(config["cpa"], str(workdir / "screen.h5ad"))}


@pytest.mark.parametrize("device, gpus", [("cuda", "1"), ("auto", "0"), ("cpu", "0")])
def test_mapping_asks_for_a_gpu_only_on_the_cuda_device(finished, device, gpus):
    workdir, config = finished
    config = {**config, "lnm": {**config["lnm"], "device": device}}
    (workdir / f"device-{device}.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(SNAKEMAKE + ["-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--profile",
                                         str(SLURM_PROFILE), "-n", "--forceall", "--until", "lnm_map",
                                         "--configfile", f"device-{device}.yaml"],
                            cwd=workdir, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    shard = json.loads((workdir / "out" / "lnm" / "connectome" / "shard-0000.json").read_text())
    jobs = parse_job_resources(result.stdout)["lnm_map"]
    assert jobs and all(job["gpu"] == gpus for job in jobs), jobs
    assert {int(job["mem_mb"]) for job in jobs} == {lnm_res.mapping_mem_mb(shard, 2, device)}


@pytest.mark.parametrize("device, gpus", [("cuda", "1"), ("auto", "0"), ("cpu", "0")])
def test_inference_asks_for_a_gpu_only_on_the_cuda_device(finished, device, gpus):
    workdir, config = finished
    config = {**config, "cpa": {**config["cpa"], "infer": {"device": device}}}
    (workdir / f"infer-{device}.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(SNAKEMAKE + ["-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--profile",
                                         str(SLURM_PROFILE), "-n", "--forceall", "--until", "cpa_infer", "cpa_predict",
                                         "--configfile", f"infer-{device}.yaml"],
                            cwd=workdir, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = parse_job_resources(result.stdout)
    for rule in ("cpa_infer", "cpa_predict"):
        assert jobs[rule] and all(job["gpu"] == gpus for job in jobs[rule]), (rule, jobs[rule])


def test_report_figure_rules_request_memory_and_runtime(finished):
    """The figure rules (report: true) have computed requests too (config/README.md)."""
    workdir, config = finished
    requests = dry_run_requests(workdir, "--forceall", "--config", "report=True")
    rules = {"report_lesion_figures", "report_lesion_summary", "report_group_figures", "report_software",
             "report_cpa_training", "report_cpa_umap", "report_cpa_prediction"}
    assert rules <= set(requests), rules - set(requests)
    for rule in rules:
        for job in requests[rule]:
            assert job["mem_mb"].isdigit() and int(job["mem_mb"]) >= res.SNAKEMAKE_MB + res.BASE_MB, (rule, job)
            assert job["runtime"].isdigit(), (rule, job)
    assert len(requests["report_lesion_figures"]) == 2  # one job per lesion batch, for its 2 lesions
    mask = json.loads((workdir / "out" / "lnm" / "connectome" / "mask.json").read_text())
    assert {int(j["mem_mb"]) for j in requests["report_group_figures"]} == {report_res.brain_figure_mem_mb(mask)}
    assert {int(j["runtime"]) for j in requests["report_lesion_figures"]} == {report_res.lesion_figures_runtime(2)}
    assert {int(j["mem_mb"]) for j in requests["report_cpa_umap"]} == {report_res.umap_mem_mb(1000, 8)}
    assert {int(j["runtime"]) for j in requests["report_cpa_umap"]} == {report_res.UMAP_RUNTIME_MIN}


@pytest.mark.parametrize("accelerator, gpus", [("gpu", "1"), ("cuda", "1"), ("cpu", "0"), ("auto", "0")])
def test_training_asks_for_a_gpu_only_when_configured(tmp_path, accelerator, gpus):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["cpa"]["train"]["accelerator"] = accelerator
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(SNAKEMAKE + ["--profile", str(SLURM_PROFILE), "-n", "--forceall", "--until", "cpa_train",
                                         "--configfile", str(tmp_path / "my.yaml")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (train,) = parse_job_resources(result.stdout)["cpa_train"]
    assert train["gpu"] == gpus, train


def test_slurm_profile_names_what_a_user_must_edit():
    """The README's promise: edit the account and the partition, nothing else is needed."""
    profile = yaml.safe_load((SLURM_PROFILE / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["default-resources"]["slurm_account"].startswith("EDIT")
    assert profile["default-resources"]["slurm_partition"].startswith("EDIT")
    # one cluster job per lesion batch: its merge joins the batch's map and figure rules
    # (group lnm_batch in the rules themselves), sized by `cores`
    assert set(profile["groups"]) == {"lnm_merge=lnm_batch"}
    assert isinstance(profile["cores"], int) and profile["cores"] >= 2
    readme = (REPO / "README.md").read_text()
    for needle in ("profiles/slurm/config.yaml", "slurm_account", "slurm_partition",
                   "slurm-status-command: squeue", "--sdm conda", "--conda-create-envs-only"):
        assert needle in readme, needle


def test_query_rules_request_memory_and_runtime_from_the_query_file(finished):
    """A query data set's rules (cpa.query) have the requests of config/README.md, computed
    from the query's file, not the training file's."""
    workdir, config = finished
    query = simulate_screen(n_cells=2500, n_genes=40, seed=12)
    del query.uns["truth"]
    query.write_h5ad(workdir / "query.h5ad")
    with_query = {**config, "cpa": {**config["cpa"], "query": [{"name": "lab", "adata": "query.h5ad"}],
                                    "counterfactuals": [{"perturbation": "drug05", "dosage": "1", "on": "lab"}]}}
    (workdir / "query.yaml").write_text(yaml.safe_dump(with_query))
    result = subprocess.run(SNAKEMAKE + ["-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--profile",
                                         str(SLURM_PROFILE), "-n", "--configfile", "query.yaml"],
                            cwd=workdir, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    requests = parse_job_resources(result.stdout)
    cfg, path = with_query["cpa"], str(workdir / "query.h5ad")
    cfg = {**cfg, "perturbation_key": "condition", "dosage_key": "dose", "model": {"n_latent": 8}}  # schema defaults
    assert len(requests["cpa_query_infer"]) == 3  # 2500 cells in shards of 1000
    assert {int(j["mem_mb"]) for j in requests["cpa_query_infer"]} == {cpa_res.query_infer_mem_mb(cfg, path)}
    assert {int(j["mem_mb"]) for j in requests["cpa_query_check"]} == {
        cpa_res.query_check_mem_mb(cfg, path, loads_model=False)}
    assert {int(j["mem_mb"]) for j in requests["cpa_query_predict"]} == {cpa_res.query_predict_mem_mb(cfg, path)}
    assert {int(j["runtime"]) for j in requests["cpa_query_predict"]} == {cpa_res.infer_runtime(cfg, 2500)}
    for rule in ("cpa_query_check", "cpa_query_infer", "cpa_query_merge", "cpa_query_predict", "cpa_query_table"):
        for job in requests[rule]:
            assert int(job["mem_mb"]) >= res.SNAKEMAKE_MB + res.BASE_MB and int(job["runtime"]) >= 1, (rule, job)
            assert job.get("gpu", "0") == "0", (rule, job)
