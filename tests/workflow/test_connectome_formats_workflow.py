"""A lab's prepared connectome through Snakemake: the same project run on NIfTI runs and on
the same data as a Lead-DBS connectome (format and path changed, no mask given) gives the
same maps; the provenance sidecar names the connectome; and the maps sheet (lnm/maps.tsv),
given back as lnm.specificity.maps, gives the specificity test of the run itself."""

import csv
import json

import numpy as np
import pytest
import yaml

from prepared_connectomes import write_leaddbs
from projects import load_map, snakemake, write_project
from synthetic import make_dataset

pytestmark = pytest.mark.workflow

SPECIFICITY = {"enabled": True, "cases": ["g1"], "controls": ["g2"], "covariates": ["volume"], "n_permutations": 20,
               "permutation_shard_size": 20, "alpha": 0.4}  # 2 cases against 2 controls: p >= 1/3


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    dataset = make_dataset(root / "data", np.random.default_rng(41))
    nifti, lead = root / "nifti", root / "lead"
    for workdir in (nifti, lead):
        workdir.mkdir()
        config = write_project(workdir, dataset, specificity=SPECIFICITY)
    write_leaddbs(lead / "GSP 1000 (Yeo 2011)", dataset["mask"], dataset["subjects"], formatversion=2, version="7.3")
    config["lnm"]["connectome"] = {"format": "leaddbs", "path": "GSP 1000 (Yeo 2011)", "name": "GSP1000-test"}
    (lead / "my.yaml").write_text(yaml.safe_dump(config))
    for workdir in (nifti, lead):
        result = snakemake(workdir)
        assert result.returncode == 0, result.stderr[-4000:]
    return dataset, nifti, lead


def test_leaddbs_maps_equal_the_nifti_runs_maps(projects):
    dataset, nifti, lead = projects
    assert (lead / "out" / "lnm" / "connectome" / "mask.nii.gz").exists()  # its own mask, as none was given
    for lesion_id, _, _ in dataset["lesions"]:
        for name in ("AvgR", "AvgR_Fz", "T"):
            ours = load_map(lead / "out" / "lnm" / "maps" / f"{lesion_id}_{name}.nii.gz")
            reference = load_map(nifti / "out" / "lnm" / "maps" / f"{lesion_id}_{name}.nii.gz")
            assert np.array_equal(ours, reference)
    for name in ("mean_AvgR_Fz", "sensitivity_pos"):
        assert np.array_equal(load_map(lead / "out" / "lnm" / "group" / f"{name}.nii.gz"),
                              load_map(nifti / "out" / "lnm" / "group" / f"{name}.nii.gz"))


def test_provenance_names_the_connectome_and_its_subjects(projects):
    dataset, nifti, lead = projects
    record = json.loads((lead / "out" / "lnm" / "maps" / "connectome.json").read_text())
    assert record["name"] == "GSP1000-test" and record["format"] == "leaddbs"
    assert record["path"].endswith("GSP 1000 (Yeo 2011)")
    assert [s["subject_id"] for s in record["subjects"]] == [s for s, _ in dataset["subjects"]]
    assert [len(s["runs"]) for s in record["subjects"]] == [len(runs) for _, runs in dataset["subjects"]]
    assert record["mask"]["n_voxels"] == int((load_map(dataset["mask"]) > 0).sum())
    # The same numbers mapped: the same content fingerprint as the NIfTI runs' (whose
    # mask file differs but holds the same grid and voxels).
    reference = json.loads((nifti / "out" / "lnm" / "maps" / "connectome.json").read_text())
    assert reference["name"] == "subjects" and reference["format"] == "nifti"
    assert record["content_fingerprint"] == reference["content_fingerprint"]
    inventory = list(csv.DictReader(open(lead / "out" / "lnm" / "checked" / "runs.tsv"), delimiter="\t"))
    assert len(inventory) == sum(len(runs) for _, runs in dataset["subjects"])
    assert "averages r across runs" in inventory[0]["note"]


def test_maps_sheet_gives_the_runs_specificity_test(projects):
    dataset, _, lead = projects
    with open(lead / "out" / "lnm" / "maps.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [row["lesion_id"] for row in rows] == [i for i, _, _ in dataset["lesions"]]
    for row, (lesion_id, path, group) in zip(rows, dataset["lesions"]):
        assert row["group"] == group and row["connectome"] == "GSP1000-test"
        assert row["map"] == row["T"] == f"out/lnm/maps/{lesion_id}_T.nii.gz"
        assert (lead / row["AvgR"]).exists() and int(row["n_voxels_in_mask"]) > 0
    config = {"outdir": "from_sheet", "report": False,
              "lnm": {"connectome": {"mask": "out/lnm/connectome/mask.nii.gz"}, "sensitivity_threshold": 2.0,
                      "specificity": dict(SPECIFICITY, maps="out/lnm/maps.tsv")}}
    (lead / "sheet.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(lead, configfile="sheet.yaml")
    assert result.returncode == 0, result.stderr[-4000:]
    run, sheet = lead / "out" / "lnm" / "specificity", lead / "from_sheet" / "lnm" / "specificity"
    assert (run / "design.tsv").read_text() == (sheet / "design.tsv").read_text()
    # The run's GLM reads its float64 sums, the sheet's the float32 map files; with one
    # residual degree of freedom (4 lesions, 3 columns) |t| reaches 1500, so the maps'
    # float32 rounding (1e-7 relative) shows at 1e-4.
    np.testing.assert_allclose(load_map(sheet / "tstat.nii.gz"), load_map(run / "tstat.nii.gz"), rtol=1e-3,
                               atol=1e-5)
    for name in ("p_fwe", "p_uncorrected", "cases_sensitivity_pos", "cases_sensitivity_neg"):
        np.testing.assert_allclose(load_map(sheet / f"{name}.nii.gz"), load_map(run / f"{name}.nii.gz"), atol=1e-6)


@pytest.mark.parametrize("connectome, message", [
    ({"format": "connectome_quick", "path": "cq"}, "lnm.connectome.mask is required with format connectome_quick"),
    ({"format": "lacuna"}, "'lnm.connectome.path' is required but missing"),
    ({"subjects": "sheets/subjects.tsv", "mask": "data/mask.nii.gz", "path": "cq"},
     "lnm.connectome.path is set but format is nifti"),
    ({"format": "connectome_quick", "path": "pfc", "mask": "data/mask.nii.gz"}, "pfc-toolkit precomputed connectome"),
    ({"format": "leaddbs", "path": "matrix"}, "fMRI_matrix"),
])
def test_a_connectome_config_that_cannot_work_stops_before_any_job(tmp_path, connectome, message):
    dataset = make_dataset(tmp_path / "data", np.random.default_rng(2))
    config = write_project(tmp_path, dataset)
    config["lnm"]["connectome"] = connectome
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "cq").mkdir()
    np.save(tmp_path / "cq" / "s1.npy", np.zeros((12, 3), dtype=np.float16))
    (tmp_path / "pfc" / "AvgR").mkdir(parents=True)
    np.save(tmp_path / "pfc" / "0_AvgR.npy", np.zeros((2, 3), dtype=np.float32))
    write_leaddbs(tmp_path / "matrix", dataset["mask"], dataset["subjects"], matrix=True)
    result = snakemake(tmp_path, "-n")
    assert result.returncode != 0
    assert message in result.stdout + result.stderr, result.stdout[-3000:] + result.stderr[-3000:]
    assert not (tmp_path / "out" / "lnm").exists()
