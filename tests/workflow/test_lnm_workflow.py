"""The workflow end to end through the Snakemake command line, run from another folder."""

import csv
import re
import subprocess

import nibabel as nib
import numpy as np
import pytest
import yaml

from projects import REPO, SNAKEMAKE, load_map, snakemake, write_project
from reference import reference_maps
from synthetic import make_dataset

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("project")
    dataset = make_dataset(workdir / "data", np.random.default_rng(99))
    write_project(workdir, dataset)
    result = snakemake(workdir)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir, dataset


def test_maps_equal_reference(project):
    workdir, dataset = project
    ref = reference_maps(dataset["mask"], dataset["subjects"], [p for _, p, _ in dataset["lesions"]])
    mask_img = nib.load(dataset["mask"])
    for lesion_id, path, _ in dataset["lesions"]:
        for name in ("AvgR", "AvgR_Fz", "T"):
            img = nib.load(str(workdir / "out" / "lnm" / "maps" / f"{lesion_id}_{name}.nii.gz"))
            assert img.get_data_dtype() == np.float32
            np.testing.assert_allclose(img.affine, mask_img.affine)
            ours = np.asarray(img.dataobj, dtype=np.float64)
            if name == "T":
                rel = np.abs(ours - ref[path][name]) / np.maximum(1.0, np.abs(ref[path][name]))
                assert rel.max() <= 1e-3
            else:
                assert np.abs(ours - ref[path][name]).max() <= 1e-4


def test_group_maps_count_lesions_beyond_threshold(project):
    workdir, dataset = project
    ref = reference_maps(dataset["mask"], dataset["subjects"], [p for _, p, _ in dataset["lesions"]])
    group = workdir / "out" / "lnm" / "group"
    for label in (None, "g1", "g2"):
        members = [p for _, p, g in dataset["lesions"] if label is None or g == label]
        t = np.stack([ref[p]["T"] for p in members])
        fz = np.stack([ref[p]["AvgR_Fz"] for p in members])
        folder = group if label is None else group / label
        # T within 1e-3 of the reference can flip a voxel sitting right at the threshold.
        near = (np.abs(np.abs(t) - 2.0) < 1e-2).any(axis=0)
        np.testing.assert_allclose(load_map(folder / "sensitivity_pos.nii.gz")[~near],
                                   (t > 2.0).mean(axis=0)[~near], atol=1e-6)
        np.testing.assert_allclose(load_map(folder / "sensitivity_neg.nii.gz")[~near],
                                   (t < -2.0).mean(axis=0)[~near], atol=1e-6)
        np.testing.assert_allclose(load_map(folder / "mean_AvgR_Fz.nii.gz"), fz.mean(axis=0), atol=1e-4)


def test_qc_table(project):
    workdir, dataset = project
    with open(workdir / "out" / "lnm" / "qc" / "lesions.tsv") as handle:
        rows = {row["lesion_id"]: row for row in csv.DictReader(handle, delimiter="\t")}
    assert list(rows) == [i for i, _, _ in dataset["lesions"]]
    for row in rows.values():
        assert {"n_voxels_input", "n_voxels_in_mask", "fraction_outside_mask"} <= set(row)
    assert float(rows["edge-ras25"]["fraction_outside_mask"]) > 0.05
    assert float(rows["sphere-ras3"]["fraction_outside_mask"]) == 0.0
    assert int(rows["one-voxel"]["n_voxels_in_mask"]) == 1


def test_report_false_skips_every_figure_rule(project):
    workdir, _ = project
    assert not (workdir / "out" / "figures").exists()
    assert not (workdir / "out" / "report").exists()
    assert not (workdir / "out" / "logs" / "report").exists()


def test_rerun_has_nothing_to_do(project):
    workdir, _ = project
    result = snakemake(workdir, "-n")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_bad_lesion_fails_cleanly(tmp_path):
    dataset = make_dataset(tmp_path / "data", np.random.default_rng(5))
    far = np.zeros((4, 4, 4), np.uint8)
    far[1, 1, 1] = 1
    far_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    far_affine[:3, 3] = 500.0
    nib.save(nib.Nifti1Image(far, far_affine), str(tmp_path / "data" / "far.nii.gz"))
    dataset["lesions"].append(("far-away", str(tmp_path / "data" / "far.nii.gz"), "g1"))
    write_project(tmp_path, dataset)
    result = snakemake(tmp_path)
    assert result.returncode != 0
    assert "lesion 'far-away'" in result.stderr and "no voxel inside the brain mask" in result.stderr
    assert "Traceback" not in result.stderr  # the message alone; the traceback is in the task's log
    maps = tmp_path / "out" / "lnm" / "maps"
    assert not any(p.name.startswith("far-away") for p in maps.glob("*")) if maps.exists() else True
    assert not (tmp_path / "out" / "lnm" / "group" / "sensitivity_pos.nii.gz").exists()
    log = tmp_path / "out" / "logs" / "lnm" / "prepare_lesions" / "batch-0001.log"
    assert "far-away" in log.read_text()


def test_unreadable_lesion_names_the_lesion_in_the_workflow(tmp_path):
    dataset = make_dataset(tmp_path / "data", np.random.default_rng(8))
    junk = tmp_path / "data" / "junk.nii.gz"
    junk.write_bytes(b"this is not an image")
    dataset["lesions"].append(("junk-lesion", str(junk), "g1"))
    write_project(tmp_path, dataset)
    result = snakemake(tmp_path)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "lesion 'junk-lesion'" in text and "junk.nii.gz" in text and "not a readable NIfTI" in text
    assert "InputFunctionException" not in text


def test_configfile_replaces_the_demo_config():
    """With --configfile, keys left out take the schema defaults, not config/config.yaml's."""
    result = subprocess.run(SNAKEMAKE + ["-n", "--forceall", "--cores", "2", "--configfile",
                                         str(REPO / "tests" / "data" / "demo_sheets_only.yaml")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is extended" not in result.stdout + result.stderr
    # 12 demo lesions in batches of the default 64, 12 subjects in shards of the default 100
    stats = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()
             if line.startswith("lnm_")}
    assert stats["lnm_prepare_lesions"] == "1" and stats["lnm_map"] == "1"


def test_sheet_errors_stop_before_any_job(tmp_path):
    dataset = make_dataset(tmp_path / "data", np.random.default_rng(6))
    dataset["lesions"].append(("sphere-ras3", dataset["lesions"][0][1], "g1"))
    write_project(tmp_path, dataset)
    result = snakemake(tmp_path, "-n")
    assert result.returncode != 0
    assert "lesion_id 'sphere-ras3' appears on lines 2 and 6" in result.stdout + result.stderr
    assert not (tmp_path / "out").exists()


def test_the_lesion_rules_of_the_config_reach_the_lesion_task(tmp_path):
    dataset = make_dataset(tmp_path / "data", np.random.default_rng(6))
    img = nib.load(dataset["lesions"][0][1])
    soft = np.asarray(img.dataobj).astype(np.float32) * 0.7
    nib.save(nib.Nifti1Image(soft, img.affine), str(tmp_path / "data" / "soft.nii.gz"))
    dataset["lesions"][0] = ("soft", str(tmp_path / "data" / "soft.nii.gz"), "g1")
    write_project(tmp_path, dataset, lesion_values="threshold", lesion_threshold=0.6,
                  lesion_resampling="coverage", lesion_coverage=0.5)
    result = snakemake(tmp_path, "--until", "lnm_qc_table")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "out" / "lnm" / "qc" / "lesions.tsv"), delimiter="\t"))
    assert {(row["lesion_values"], row["resampling"]) for row in rows} == {("threshold>=0.6", "coverage>=0.5")}
    assert rows[0]["lesion_id"] == "soft" and rows[0]["value_max"] == "0.7"


@pytest.mark.parametrize("cap, figured", [(2, ["sphere-ras3", "edge-ras25"]), ("all", None), (0, [])])
def test_per_lesion_figures_honour_the_cap_and_the_summary_covers_every_lesion(tmp_path, cap, figured):
    dataset = make_dataset(tmp_path / "data", np.random.default_rng(6))
    config = write_project(tmp_path, dataset, report=True)
    config["report_lesion_figures"] = cap
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "-n", "--forceall")
    assert result.returncode == 0, result.stderr[-3000:]
    figured = [lesion for lesion, _, _ in dataset["lesions"]] if figured is None else figured
    pngs = sorted(set(re.findall(r"out/figures/lnm/lesions/([\w.-]+)\.png", result.stdout)))
    assert pngs == sorted(figured)
    # one job per lesion batch with figures (batches of 3: the first holds the first three lesions)
    jobs = re.findall(r"^\s*(?:local)?rule (report_lesion_figures_\d{4}):", result.stdout, re.M)
    assert sorted(jobs) == sorted({f"report_lesion_figures_{0 if k < 3 else 1:04d}"
                                   for k, (lesion, _, _) in enumerate(dataset["lesions"]) if lesion in figured})
    assert "out/figures/lnm/lesions_summary.png" in result.stdout


@pytest.mark.parametrize("group", ["sensitivity_pos.nii.gz", "mean_AvgR_Fz.nii.gz", "sensitivity_vs_null.nii.gz",
                                   "all"])
def test_group_names_taken_by_the_outputs_are_refused_before_any_job(tmp_path, group):
    dataset = make_dataset(tmp_path / "data", np.random.default_rng(6))
    dataset["lesions"][1] = (*dataset["lesions"][1][:2], group)
    write_project(tmp_path, dataset)
    result = snakemake(tmp_path, "-n")
    assert result.returncode != 0
    assert f"group name(s) ['{group}'] are taken by the outputs for all lesions" in result.stdout + result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("column, value, fragment", [
    (0, "Sphere-RAS3", "lesion ids 'sphere-ras3' and 'Sphere-RAS3' differ only in upper and lower case"),
    (2, "G1", "groups 'G1' and 'g1' differ only in upper and lower case"),
])
def test_names_that_differ_only_in_case_are_refused_before_any_job(tmp_path, column, value, fragment):
    """They name output files (maps, group folders), which collide on a case-insensitive
    file system: one lesion's maps would silently overwrite the other's."""
    dataset = make_dataset(tmp_path / "data", np.random.default_rng(6))
    row = list(dataset["lesions"][1])
    row[column] = value
    dataset["lesions"][1] = tuple(row)
    write_project(tmp_path, dataset)
    result = snakemake(tmp_path, "-n")
    assert result.returncode != 0
    assert fragment in result.stdout + result.stderr and "Rename one of them" in result.stdout + result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, fragment", [
    ({"lesion_batch_size": "many"}, "config key 'lnm.lesion_batch_size' must be of type integer"),
    ({"lesion_batch_siz": 3}, "unknown config key 'lnm.lesion_batch_siz': did you mean 'lnm.lesion_batch_size'?"),
    ({"connectome": {"subjects": "sheets/subjects.tsv", "mask": "m.nii.gz", "dtype": "float8"}}, "float8"),
])
def test_config_errors(tmp_path, change, fragment):
    dataset = make_dataset(tmp_path / "data", np.random.default_rng(7))
    write_project(tmp_path, dataset, **change)
    result = snakemake(tmp_path, "-n")
    assert result.returncode != 0
    assert fragment in result.stdout + result.stderr, result.stdout + result.stderr
