"""What a change reruns, from a finished project: every config change of the table below
reruns exactly the jobs listed, in a dry run and in the real run that follows it, and
the run after that has nothing left to do; outputs of an option turned off are moved
aside. The table is config/README.md's "What a change reruns".

The project has both arms: lesions mapped over a connectome in shards, with the
random-lesion null and the specificity test; a CPA model trained, its latents inferred in
shards, a counterfactual, a dose response and the evaluation. It is run once to the end,
then copied with Snakemake's metadata for each change.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import yaml

from projects import REPO, SNAKEMAKE
from shardmap.cpa.simulate import simulate_screen
from synthetic import MASK_AFFINE, MASK_SHAPE, lesion_on_grid, make_dataset, save, write_sheet

pytestmark = pytest.mark.workflow

COMMAND = SNAKEMAKE + ["-s", str(REPO / "Snakefile"), "--cores", "2", "--configfile", "my.yaml"]
LESION_BATCH, SUBJECT_SHARD = 3, 2


def extra_lesions(root):
    """Four spheres on the mask grid, so that each group has four lesions."""
    centre = (np.asarray(MASK_SHAPE) - 1) / 2
    world = MASK_AFFINE[:3, :3] @ centre + MASK_AFFINE[:3, 3]
    offsets = [(-8.0, 4.0, 0.0), (8.0, 8.0, -4.0), (-4.0, -8.0, 4.0), (4.0, -4.0, -4.0)]
    return [(f"extra-{k}", save(lesion_on_grid(world + offset, 5.0, MASK_AFFINE, MASK_SHAPE),
                                root / f"extra-{k}.nii.gz"), "g1" if k < 2 else "g2")
            for k, offset in enumerate(offsets)]


def write_sheets(workdir, lesions, subjects):
    """The lesion and subject sheets of ``lesions`` and ``subjects``, whose paths are relative
    to the project folder."""
    write_sheet(workdir / "lesions.tsv", ["lesion_id", "path", "group"], lesions)
    write_sheet(workdir / "subjects.tsv", ["subject_id", "path"],
                [(subject, run) for subject, runs in subjects for run in runs])


BASE = {
    "outdir": "out", "report": False,
    "lnm": {"lesions": "lesions.tsv", "connectome": {"subjects": "subjects.tsv", "mask": "data/mask.nii.gz"},
            "lesion_batch_size": LESION_BATCH, "subject_shard_size": SUBJECT_SHARD, "sensitivity_threshold": 2.0,
            "threads": 1, "device": "cpu",
            "null_lesions": {"enabled": True, "n": 80, "batch_size": 40, "resamples": 50},
            "specificity": {"enabled": True, "cases": ["g1"], "controls": ["g2"], "covariates": ["volume"],
                            "n_permutations": 100, "permutation_shard_size": 50}},
    "cpa": {"enabled": True, "adata": "screen.h5ad", "covariate_keys": ["cell_type"], "holdout": ["drug00+drug01"],
            "model": {"n_latent": 8, "n_hidden": 32}, "shard_size": 500, "threads": 1,
            "train": {"max_epochs": 3, "batch_size": 128, "accelerator": "cpu"},
            "counterfactuals": [{"perturbation": "drug04", "dosage": "1"}],
            "dose_response": {"drugs": ["drug02"], "doses": [0, 1], "n_cells": 50}},
}


def run(workdir, *args):
    return subprocess.run(COMMAND[:-2] + list(args) + COMMAND[-2:], cwd=workdir, capture_output=True, text=True,
                          timeout=600)


def planned_jobs(output):
    """{rule: jobs} of the 'Job stats' table Snakemake prints before it runs ({} for nothing
    to do); the rule 'all' left out."""
    if "Nothing to be done" in output:
        return {}
    table = output[output.index("Job stats:"):]
    jobs = {}
    for line in table.splitlines()[3:]:
        match = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not match or match.group(1) == "total":
            break
        jobs[match.group(1)] = int(match.group(2))
    jobs.pop("all", None)
    return jobs


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The project run to the end, with one lesion and one subject left out of its sheets
    (two changes below add them)."""
    workdir = tmp_path_factory.mktemp("reruns")
    dataset = make_dataset(workdir / "data", np.random.default_rng(7))
    rel = lambda path: os.path.relpath(path, workdir)  # noqa: E731
    lesions = [(i, rel(path), group) for i, path, group in dataset["lesions"] + extra_lesions(workdir / "data")]
    subjects = [(subject, [rel(run) for run in runs]) for subject, runs in dataset["subjects"]]
    screen = simulate_screen(n_cells=1200, n_genes=40, seed=11)
    del screen.uns["truth"]
    screen.write_h5ad(workdir / "screen.h5ad")
    (workdir / "my.yaml").write_text(yaml.safe_dump(BASE))
    write_sheets(workdir, lesions[:-1], subjects[:-1])
    result = run(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, lesions, subjects


def set_key(config, dotted, value):
    *path, last = dotted.split(".")
    for key in path:
        config = config.setdefault(key, {})
    config[last] = value


def add_lesion(workdir, lesions, subjects):
    write_sheets(workdir, lesions, subjects[:-1])


def add_subject(workdir, lesions, subjects):
    write_sheets(workdir, lesions[:-1], subjects)


# The finished project: 4 subjects in 2 shards, 7 lesions in 3 batches, 84 null lesions
# (12 per lesion) in 3 batches, 1200 cells in 3 shards.
N_SHARDS, N_BATCHES, N_NULL_BATCHES, N_CELL_SHARDS = 2, 3, 3, 3
MAPPING = {"lnm_map": N_BATCHES * N_SHARDS, "lnm_merge": N_BATCHES, "lnm_group_maps": 1, "lnm_hub_bias": 1,
           "lnm_null_map": N_NULL_BATCHES * N_SHARDS, "lnm_null_merge": N_NULL_BATCHES, "lnm_null_group_maps": 1,
           "lnm_specificity_prepare": 1, "lnm_specificity_sensitivity": 1, "lnm_specificity_permutations": 2,
           "lnm_specificity_merge": 1, "lnm_maps_table": 1, **{f"lnm_lesion_maps_{b:04d}": 1 for b in range(N_BATCHES)}}
# The null lesions' sums are temporary (lnm.null_lesions.keep_maps: false): what reads them
# maps the null lesions again.
NULL_SUMS = {"lnm_null_map": N_NULL_BATCHES * N_SHARDS, "lnm_null_merge": N_NULL_BATCHES}
MODEL_OUTPUTS = {"cpa_infer": N_CELL_SHARDS, "cpa_merge": 1, "cpa_predict": 1, "cpa_evaluate": 1,
                 "cpa_embeddings": 1, "cpa_dose_response": 1}

# (change, what it reruns, whether the test also runs it for real)
RERUNS = [
    ("lnm.threads", 2, {}, True),
    ("lnm.device", "auto", {}, True),
    ("cpa.threads", 2, {}, True),
    ("cpa.train.num_workers", 1, {}, False),
    ("cpa.train.accelerator", "auto", {}, True),
    ("cpa.infer.device", "auto", {}, True),
    ("lnm.sensitivity_threshold", 3.0,
     {"lnm_group_maps": 1, "lnm_hub_bias": 1, "lnm_null_group_maps": 1, **NULL_SUMS, "lnm_specificity_sensitivity": 1,
      "lnm_specificity_merge": 1}, True),
    ("lnm.specificity.alpha", 0.04, {"lnm_specificity_merge": 1}, True),
    ("lnm.null_lesions.resamples", 60, {"lnm_null_group_maps": 1, **NULL_SUMS}, True),
    ("lnm.degree_regression", True, {"lnm_maps_table": 1, **{f"lnm_lesion_maps_{b:04d}": 1 for b in range(N_BATCHES)}},
     True),
    ("lnm.connectome.name", "GSP1000MF", {"lnm_maps_table": 1, "lnm_connectome_provenance": 1}, True),
    ("cpa.dose_response.doses", [0, 0.5, 1], {"cpa_dose_response": 1}, True),
    ("cpa.dose_response.drugs", ["drug02", "drug05"], {"cpa_dose_response": 1}, False),
    ("cpa.counterfactuals", [{"perturbation": "drug04", "dosage": "1"}, {"perturbation": "drug05", "dosage": "2"}],
     {"cpa_predict": 1}, True),
    ("cpa.shard_size", 700, {"cpa_infer": 2, "cpa_merge": 1, "cpa_predict": 1}, False),
    ("cpa.query", [{"name": "again", "adata": "screen.h5ad"}],
     {"cpa_query_check": 1, "cpa_query_infer": N_CELL_SHARDS, "cpa_query_merge": 1, "cpa_query_table": 1}, True),
    ("cpa.holdout", ["drug01 + drug00"], {}, False),  # the same drugs held out, written otherwise
    ("lnm.specificity.map", "T_degree-resid",  # without lnm.degree_regression: regressed in the task
     {"lnm_specificity_prepare": 1, "lnm_specificity_sensitivity": 1, "lnm_specificity_permutations": 2,
      "lnm_specificity_merge": 1}, True),
    ("cpa.train.max_epochs", 4, {"cpa_train": 1, **MODEL_OUTPUTS}, True),
    ("cpa.holdout", ["drug02+drug03"], {"cpa_check_inputs": 1, "cpa_train": 1, **MODEL_OUTPUTS}, False),
    ("cpa.model.n_latent", 6, {"cpa_train": 1, **MODEL_OUTPUTS}, False),
]


def changed_project(finished, tmp_path, change, value):
    workdir, lesions, subjects = finished
    project = tmp_path / "project"
    shutil.copytree(workdir, project, symlinks=True, ignore=shutil.ignore_patterns("locks"))
    config = copy.deepcopy(BASE)
    if callable(change):
        change(project, lesions, subjects)
    else:
        set_key(config, change, value)
    (project / "my.yaml").write_text(yaml.safe_dump(config))
    return project


def assert_reruns(project, expected, real):
    """``expected`` reruns in a dry run and (``real``) in the run that follows; a run that
    makes any target anew also updates the outputs list (superseded_outputs)."""
    expected = {**expected, "superseded_outputs": 1} if expected else {}
    dry = run(project, "-n")
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    assert planned_jobs(dry.stdout) == expected, dry.stdout[-4000:]
    if not real:
        return
    done = run(project)
    assert done.returncode == 0, done.stderr[-3000:]
    assert planned_jobs(done.stdout + done.stderr) == expected
    after = run(project, "-n")
    assert planned_jobs(after.stdout) == {}, after.stdout[-3000:]


@pytest.mark.parametrize("change, value, expected, real", RERUNS, ids=[row[0] for row in RERUNS])
def test_a_config_change_reruns_exactly_what_it_changes(finished, tmp_path, change, value, expected, real):
    assert_reruns(changed_project(finished, tmp_path, change, value), expected, real)


def test_nothing_to_do_after_the_first_run(finished, tmp_path):
    assert planned_jobs(run(changed_project(finished, tmp_path, "lnm.threads", 1), "-n").stdout) == {}


def test_a_subject_added_to_the_connectome_maps_it(finished, tmp_path):
    """Its new shard is prepared (the others are kept), and every map is made again with it:
    the check of the runs reruns too, but gates nothing, so nothing behind it is skipped."""
    project = changed_project(finished, tmp_path, add_subject, None)
    expected = {"lnm_check_inputs": 1, "lnm_prepare_connectome": 1, "lnm_degree_map": 1, "lnm_connectome_provenance": 1,
                **MAPPING,
                "lnm_map": N_BATCHES * (N_SHARDS + 1), "lnm_null_map": N_NULL_BATCHES * (N_SHARDS + 1)}
    assert_reruns(project, expected, real=True)
    info = (project / "out" / "lnm" / "stats" / "batch-0000.json").read_text()
    assert all(subject in info for subject, _ in finished[2])


def test_a_lesion_added_to_the_lesion_sheet(finished, tmp_path):
    """Its batch is prepared, mapped and merged (the other batches are kept); the null
    lesions are made again, since their number per lesion follows the number of lesions
    (80 / 8: 2 null batches instead of 3); the group level follows."""
    project = changed_project(finished, tmp_path, add_lesion, None)
    expected = {"lnm_prepare_lesions": 1, "lnm_qc_table": 1, "lnm_map": N_SHARDS, "lnm_merge": 1,
                "lnm_lesion_maps_0002": 1, "lnm_maps_table": 1, "lnm_group_maps": 1, "lnm_hub_bias": 1,
                "lnm_null_lesions": 2,
                "lnm_null_map": 2 * N_SHARDS, "lnm_null_merge": 2, "lnm_null_group_maps": 1,
                "lnm_specificity_prepare": 1, "lnm_specificity_sensitivity": 1, "lnm_specificity_permutations": 2,
                "lnm_specificity_merge": 1}
    assert_reruns(project, expected, real=True)


def test_a_lesion_added_with_degree_regression_turned_on(finished, tmp_path):
    """Two changes at once: the new lesion is prepared and mapped, its batch's null lesions
    are made again, and every batch's maps get their degree-regressed versions."""
    workdir, lesions, subjects = finished
    project = changed_project(finished, tmp_path, add_lesion, None)
    config = copy.deepcopy(BASE)
    set_key(config, "lnm.degree_regression", True)
    (project / "my.yaml").write_text(yaml.safe_dump(config))
    dry = run(project, "-n")
    jobs = planned_jobs(dry.stdout)
    assert all(jobs.get(f"lnm_lesion_maps_{b:04d}") == 1 for b in range(N_BATCHES)), jobs
    done = run(project)
    assert done.returncode == 0, done.stderr[-3000:]
    maps = project / "out" / "lnm" / "maps"
    for lesion_id, _, _ in lesions:
        assert (maps / f"{lesion_id}_T_degree-resid.nii.gz").exists(), lesion_id
    assert planned_jobs(run(project, "-n").stdout) == {}


def test_changes_in_both_arms_at_once(finished, tmp_path):
    """A dose grid and the degree regression changed in one edit: both arms' jobs rerun in
    the same run (a rerun of the perturbation arm's check once hid every other job behind
    it, the lesion arm's new maps included, and the run ended 'done' without them)."""
    project = changed_project(finished, tmp_path, "cpa.dose_response.doses", [0, 0.5, 1])
    config = yaml.safe_load((project / "my.yaml").read_text())
    set_key(config, "lnm.degree_regression", True)
    (project / "my.yaml").write_text(yaml.safe_dump(config))
    expected = {"cpa_dose_response": 1, "lnm_maps_table": 1,
                **{f"lnm_lesion_maps_{b:04d}": 1 for b in range(N_BATCHES)}}
    assert_reruns(project, expected, real=True)


@pytest.mark.parametrize("key, files", [
    ("lnm.specificity.tfce", ["lnm/specificity/tfce.nii.gz", "lnm/specificity/p_fwe_tfce.nii.gz"]),
    ("lnm.degree_regression", ["lnm/maps/one-voxel_T_degree-resid.nii.gz", "lnm/maps/extra-0_AvgR_Fz_degree-resid.nii.gz"]),
])
def test_outputs_of_an_option_turned_off_are_moved_aside(finished, tmp_path, key, files):
    """On, then off again: the run that turns the option off moves its files to
    out/superseded/<date-time>/ (same paths below out, with a note), and stops there."""
    project = changed_project(finished, tmp_path, key, True)
    assert run(project).returncode == 0
    out = project / "out"
    assert all((out / name).exists() for name in files)
    (project / "my.yaml").write_text(yaml.safe_dump(BASE))
    done = run(project)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in files:
        assert not (out / name).exists(), name
        assert len(list((out / "superseded").glob(f"*/{name}"))) == 1, name
    assert len(list((out / "superseded").glob("*/NOTE.txt"))) == 1
    assert planned_jobs(run(project, "-n").stdout) == {}


def test_a_counterfactual_removed_from_the_config_is_moved_aside(finished, tmp_path):
    """No result changes, so the only job is the outputs list's, which moves the file aside."""
    project = changed_project(finished, tmp_path, "cpa.counterfactuals", [])
    assert planned_jobs(run(project, "-n").stdout) == {"superseded_outputs": 1}
    done = run(project)
    assert done.returncode == 0, done.stderr[-3000:]
    out = project / "out"
    assert not (out / "cpa" / "counterfactuals" / "drug04_at_1.h5ad").exists()
    assert len(list((out / "superseded").glob("*/cpa/counterfactuals/drug04_at_1.h5ad"))) == 1
    assert planned_jobs(run(project, "-n").stdout) == {}
