"""The hub controls through the Snakemake command line: the degree map, the hub-bias table,
the degree-regressed maps and the random-lesion null, checked against references."""

import csv

import nibabel as nib
import numpy as np
import pytest

from projects import assert_every_file_is_whole, load_map, snakemake, write_project
from reference import degree_map, lesion_weights, reference_maps
from synthetic import make_dataset

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("hubs")
    dataset = make_dataset(workdir / "data", np.random.default_rng(31))
    write_project(workdir, dataset, degree_regression=True,
                  null_lesions={"enabled": True, "n": 40, "resamples": 100, "method": "sphere", "keep_maps": True,
                                "batch_size": 40},
                  specificity={"enabled": True, "cases": ["g1"], "controls": ["g2"], "map": "T_degree-resid",
                               "n_permutations": 20, "permutation_shard_size": 20,
                               "alpha": 0.4})  # 2 cases against 2 controls cannot go below p = 1/3
    result = snakemake(workdir)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir, dataset


def read_tsv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_degree_map_and_hub_bias_table_equal_the_references(project):
    workdir, dataset = project
    out = workdir / "out" / "lnm"
    inside = load_map(dataset["mask"]) > 0
    degree = degree_map(dataset["mask"], dataset["subjects"]).mean(axis=0)
    np.testing.assert_allclose(load_map(out / "connectome" / "degree.nii.gz")[inside], degree, atol=1e-5)
    ref = reference_maps(dataset["mask"], dataset["subjects"], [p for _, p, _ in dataset["lesions"]])
    rows = {row["lesion_id"]: row for row in read_tsv(out / "qc" / "hub_bias.tsv") if row["kind"] == "lesion"}
    assert set(rows) == {lesion_id for lesion_id, _, _ in dataset["lesions"]}
    mask_img = nib.load(dataset["mask"])
    for lesion_id, path, group in dataset["lesions"]:
        lesion = lesion_weights(path, mask_img)[inside] > 0
        fz = ref[path]["AvgR_Fz"][inside]
        expected = np.corrcoef(fz[~lesion], degree[~lesion])[0, 1]
        assert float(rows[lesion_id]["r_with_degree"]) == pytest.approx(expected, abs=1e-3), lesion_id
        assert int(rows[lesion_id]["n_voxels_compared"]) == int((~lesion).sum())
        assert float(rows[lesion_id]["site_mean_degree"]) == pytest.approx(degree[lesion].mean(), abs=1e-5)
        assert rows[lesion_id]["group"] == group
    table = read_tsv(out / "qc" / "hub_bias.tsv")
    groups = {(row["group"], row["map"]) for row in table if row["kind"] == "group_map"}
    names = ("sensitivity_pos", "sensitivity_neg", "mean_AvgR_Fz")
    assert groups == {(group, name) for group in ("all", "g1", "g2") for name in names}


def test_degree_regressed_maps_are_the_residuals_of_a_least_squares_fit(project):
    workdir, dataset = project
    out = workdir / "out" / "lnm"
    inside = load_map(dataset["mask"]) > 0
    degree = load_map(out / "connectome" / "degree.nii.gz")[inside]
    mask_img = nib.load(dataset["mask"])
    for lesion_id, path, _ in dataset["lesions"]:
        fit = ~(lesion_weights(path, mask_img)[inside] > 0)
        for name in ("AvgR_Fz", "T"):
            values = load_map(out / "maps" / f"{lesion_id}_{name}.nii.gz")[inside]
            design = np.column_stack([np.ones(fit.sum()), degree[fit]])
            coef = np.linalg.lstsq(design, values[fit], rcond=None)[0]
            residual = load_map(out / "maps" / f"{lesion_id}_{name}_degree-resid.nii.gz")[inside]
            scale = max(1.0, np.abs(values).max())
            assert np.abs(residual - (values - coef[0] - coef[1] * degree)).max() <= 1e-5 * scale, (lesion_id, name)


def test_random_lesion_null_outputs(project):
    workdir, dataset = project
    out = workdir / "out" / "lnm"
    tables = sorted((out / "null" / "lesions").glob("batch-*.tsv"))
    nulls = [row for table in tables for row in read_tsv(table)]
    assert len(nulls) == 10 * len(dataset["lesions"])  # n = 40 over 4 lesions
    assert {row["method"] for row in nulls} == {"sphere"}
    for folder in (out / "group", out / "group" / "g1", out / "group" / "g2"):
        for name in ("sensitivity_vs_null", "sensitivity_neg_vs_null"):
            values = load_map(folder / f"{name}.nii.gz")[load_map(dataset["mask"]) > 0]
            assert values.min() >= 0 and values.max() <= 100
    null_pos = load_map(out / "null" / "group" / "sensitivity_pos.nii.gz")
    assert null_pos.min() >= 0 and null_pos.max() <= 1
    summary = read_tsv(out / "qc" / "null_summary.tsv")
    assert [row["group"] for row in summary] == ["all", "g1", "g2"]
    assert [int(row["n_null_lesions"]) for row in summary] == [40, 20, 20]
    assert len(tables) == 1  # lnm.null_lesions.batch_size: 40
    assert_every_file_is_whole(workdir / "out")


def test_keep_maps_keeps_the_null_sums_and_writes_each_null_lesions_maps(project):
    """(Without keep_maps the sums are temporary: tests/workflow/test_demo.py.)"""
    workdir, dataset = project
    out = workdir / "out" / "lnm" / "null"
    assert len(list((out / "stats").glob("batch-*.npy"))) == len(list((out / "lesions").glob("batch-*.npz")))
    for lesion_id, _, _ in dataset["lesions"]:
        for index in range(10):
            for name in ("AvgR", "AvgR_Fz", "T"):
                assert (out / "maps" / f"{lesion_id}.null{index:04d}_{name}.nii.gz").exists()


def test_the_specificity_glm_takes_the_degree_regressed_maps(project):
    """lnm.specificity.map: T_degree-resid: the GLM's t (cases g1 against controls g2, no
    covariates) equals the pooled two-sample t of the written _T_degree-resid maps."""
    workdir, dataset = project
    out = workdir / "out" / "lnm"
    inside = load_map(dataset["mask"]) > 0
    maps = {g: np.stack([load_map(out / "maps" / f"{lesion_id}_T_degree-resid.nii.gz")[inside]
                         for lesion_id, _, group in dataset["lesions"] if group == g]) for g in ("g1", "g2")}
    cases, controls = maps["g1"], maps["g2"]
    n1, n2 = len(cases), len(controls)
    pooled = (((cases - cases.mean(0)) ** 2).sum(0) + ((controls - controls.mean(0)) ** 2).sum(0)) / (n1 + n2 - 2)
    expected = (cases.mean(0) - controls.mean(0)) / np.sqrt(pooled * (1 / n1 + 1 / n2))
    tstat = load_map(out / "specificity" / "tstat.nii.gz")[inside]
    scale = np.maximum(1.0, np.abs(expected))
    assert np.abs(tstat - expected).max() / scale.max() < 1e-3


@pytest.mark.parametrize("change, fragment", [
    ({"null_lesions": {"enabled": True, "n": 20}}, "Set lnm.null_lesions.n to at least 40"),
    ({"specificity": {"enabled": True, "cases": ["g1"], "controls": ["g2"], "map": "AvgR_Fz_degree-resid",
                      "covariates": ["centrality"]}}, "drop centrality from lnm.specificity.covariates"),
])
def test_hub_settings_that_cannot_work_stop_before_any_job(tmp_path, change, fragment):
    dataset = make_dataset(tmp_path / "data", np.random.default_rng(5))
    write_project(tmp_path, dataset, **change)
    result = snakemake(tmp_path, "-n")
    assert result.returncode != 0
    assert fragment in result.stdout + result.stderr, (result.stdout + result.stderr)[-2000:]
    assert not (tmp_path / "out" / "lnm").exists()


def test_a_lesion_covering_the_brain_stops_degree_regression_before_any_mapping(tmp_path):
    """With lnm.degree_regression, a lesion that covers the whole mask leaves nothing to fit
    the degree map over: its batch's preparation names it, and nothing is mapped."""
    dataset = make_dataset(tmp_path / "data", np.random.default_rng(32))
    mask_img = nib.load(dataset["mask"])
    brain = nib.Nifti1Image((np.asarray(mask_img.dataobj) > 0).astype(np.uint8), mask_img.affine)
    path = str(tmp_path / "data" / "brain.nii.gz")
    nib.save(brain, path)
    dataset["lesions"].append(("whole-brain", path, "g2"))
    write_project(tmp_path, dataset, degree_regression=True)
    result = snakemake(tmp_path)
    assert result.returncode != 0
    assert "lesion 'whole-brain' leaves 0 of the brain mask's" in result.stderr
    assert "lnm.degree_regression: false" in result.stderr
    assert not (tmp_path / "out" / "logs" / "lnm" / "map").exists(), "a mapping task ran"
