"""The specificity test through Snakemake: on maps made elsewhere (no connectome), with the
permutations and voxels split into tasks, TFCE, built-in and sheet covariates; and a bad
design stopping the run before any job."""

import os

import nibabel as nib
import numpy as np
import pytest
import yaml

from projects import assert_every_file_is_whole, snakemake
from synthetic import MASK_AFFINE, MASK_SHAPE, lesion_on_grid, make_mask, save, write_sheet

pytestmark = pytest.mark.workflow

N_CASES, N_CONTROLS = 7, 8


def linear_map(coefficients, affine, shape):
    """A map linear in world coordinates, which trilinear resampling reproduces exactly."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    return world @ coefficients[:3] + coefficients[3]


def write_maps_project(workdir, **specificity):
    """Lesion maps (half on the mask's grid, half linear maps on a RAS 2 mm grid), lesion
    masks on the mask's grid, a sheet with an age column and a notes column; the config
    has no lesion sheet and no connectome. Returns the reference maps on the mask and the
    reference design (intercept, case, volume, age, raw)."""
    rng = np.random.default_rng(11)
    mask_img = make_mask()
    mask_path = save(mask_img, workdir / "mask.nii.gz")
    inside = np.asarray(mask_img.dataobj) > 0
    mask_world = np.argwhere(inside) @ MASK_AFFINE[:3, :3].T + MASK_AFFINE[:3, 3]
    ras2 = np.diag([2.0, 2.0, 2.0, 1.0])
    ras2[:3, 3] = [-32.0, -30.0, -20.0]
    rows, maps, volumes, ages, cases = [], [], [], [], []
    for i in range(N_CASES + N_CONTROLS):
        case = i < N_CASES
        lesion_id = f"L{i:02d}"
        if i % 2:
            coefficients = rng.normal(size=4) * [0.05, 0.05, 0.05, 1.0] + [0, 0, 0.08 * case, 0]
            data = linear_map(coefficients, ras2, (34, 30, 24))
            map_path = save(nib.Nifti1Image(data.astype(np.float64), ras2), workdir / f"{lesion_id}_T.nii.gz")
            maps.append(mask_world @ coefficients[:3] + coefficients[3])
        else:
            data = rng.normal(size=MASK_SHAPE) + 1.5 * case * (np.arange(MASK_SHAPE[0]) < 5)[:, None, None]
            map_path = save(nib.Nifti1Image(data.astype(np.float64), MASK_AFFINE), workdir / f"{lesion_id}_T.nii.gz")
            maps.append(data[inside])
        centre = mask_world[rng.integers(len(mask_world))]
        lesion = lesion_on_grid(centre, 4.0 + 2.0 * rng.random(), MASK_AFFINE, MASK_SHAPE)
        lesion_path = save(lesion, workdir / f"{lesion_id}_lesion.nii.gz")
        volumes.append(int((np.asarray(lesion.dataobj) > 0)[inside].sum()))
        age = round(float(rng.normal(60, 8)), 1)
        ages.append(age)
        cases.append(case)
        rows.append((lesion_id, os.path.basename(map_path), "aphasia" if case else "other",
                     os.path.basename(lesion_path), age, "note"))
    rows.append(("X99", rows[0][1], "unrelated", rows[0][3], 50, ""))  # another group: left out
    write_sheet(workdir / "maps.tsv", ["lesion_id", "map", "group", "path", "age", "notes"], rows)
    config = {"outdir": "out", "report": False,
              "lnm": {"connectome": {"mask": os.path.basename(mask_path)}, "sensitivity_threshold": 1.0,
                      "specificity": {"enabled": True, "maps": "maps.tsv", "cases": ["aphasia"],
                                      "controls": ["other"], "covariates": ["volume", "age"],
                                      "n_permutations": 100, "permutation_shard_size": 30, **specificity}}}
    (workdir / "my.yaml").write_text(yaml.safe_dump(config))
    return np.array(maps), np.array(cases, float), np.array(volumes, float), np.array(ages)


def ols_t(design, y):
    beta, _, _, _ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ beta
    dof = design.shape[0] - design.shape[1]
    return beta[1] / np.sqrt((residual ** 2).sum(axis=0) / dof * np.linalg.inv(design.T @ design)[1, 1])


def zscore(v):
    return (v - v.mean()) / v.std()


@pytest.mark.parametrize("split", [{"voxel_chunks": 3}, {"tfce": True}])
def test_specificity_on_maps_made_elsewhere(tmp_path, split):
    maps, case, volume, age = write_maps_project(tmp_path, **split)
    run = snakemake(tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    folder = tmp_path / "out" / "lnm" / "specificity"
    mask = np.asarray(make_mask().dataobj) > 0
    design = np.column_stack([np.ones(case.size), case, zscore(volume), zscore(age)])
    t = np.asarray(nib.load(str(folder / "tstat.nii.gz")).dataobj)[mask]
    np.testing.assert_allclose(t, ols_t(design, maps), rtol=1e-4, atol=1e-4)
    table = np.genfromtxt(folder / "design.tsv", delimiter="\t", names=True, dtype=None, encoding="utf-8")
    np.testing.assert_array_equal(table["volume_raw"], volume)
    assert list(table["lesion_id"]) == [f"L{i:02d}" for i in range(case.size)]  # X99 is left out
    p_fwe = np.asarray(nib.load(str(folder / "p_fwe.nii.gz")).dataobj)[mask]
    p_unc = np.asarray(nib.load(str(folder / "p_uncorrected.nii.gz")).dataobj)[mask]
    assert np.all(p_fwe >= p_unc - 1e-7) and p_fwe.min() >= 1 / 101 - 1e-7
    null = np.loadtxt(folder / "null_max.tsv", delimiter="\t", skiprows=1)
    assert null.shape == (100, 3 if split.get("tfce") else 2)
    assert (folder / "p_fwe_tfce.nii.gz").exists() == bool(split.get("tfce"))
    assert not (folder / "work" / "residuals.npy").exists(), "the residuals (8 n V bytes) are temporary"
    assert len(list((folder / "work" / "null").glob("*.npz"))) == 4 * split.get("voxel_chunks", 1)  # kept: small
    assert (folder / "cases_sensitivity_pos.nii.gz").exists()
    log = (tmp_path / "out" / "logs" / "lnm" / "specificity" / "prepare.log").read_text()
    assert "not used by the GLM: notes" in log
    assert not (tmp_path / "out" / "lnm" / "maps").exists()  # nothing was mapped
    assert_every_file_is_whole(tmp_path / "out")


@pytest.mark.parametrize("change, fragments", [
    ({"controls": ["aphasia"]}, ["['aphasia']", "both cases and controls"]),
    ({"controls": ["stroke_other"]}, ["stroke_other", "no lesion"]),
    ({"controls": ["unrelated"]}, ["controls", "1 lesion", "at least 2"]),
    ({"covariates": ["volume", "lesion_age"]}, ["'lesion_age'", "neither a built-in"]),
    ({"tfce": True, "voxel_chunks": 2}, ["voxel_chunks: 1"]),
    ({"alpha": 0.001, "n_permutations": 200}, ["smallest p the test can give is 1/201", "at least 1000"]),
])
def test_a_bad_design_stops_before_any_job(tmp_path, change, fragments):
    write_maps_project(tmp_path, **change)
    run = snakemake(tmp_path, "-n")
    assert run.returncode != 0
    text = run.stdout + run.stderr  # Snakemake prints errors raised while parsing to stdout
    for fragment in fragments:
        assert fragment in text, text[-2000:]
    assert not (tmp_path / "out" / "lnm").exists()


def test_a_map_that_cannot_be_resampled_stops_the_task(tmp_path):
    write_maps_project(tmp_path)
    small = np.diag([2.0, 2.0, 2.0, 1.0])  # one octant of the brain only
    save(nib.Nifti1Image(np.ones((20, 20, 20), np.float32), small), tmp_path / "L03_T.nii.gz")
    run = snakemake(tmp_path)
    assert run.returncode != 0
    assert "map of lesion 'L03'" in run.stderr and "L03_T.nii.gz" in run.stderr, run.stderr[-2000:]
    assert "does not cover" in run.stderr
    folder = tmp_path / "out" / "lnm" / "specificity"
    assert not list(folder.glob("*.nii.gz")) and not (folder / "design.tsv").exists()
    assert_every_file_is_whole(tmp_path / "out")


def test_built_in_covariates_need_the_lesion_masks(tmp_path):
    write_maps_project(tmp_path)
    rows = [line.split("\t") for line in (tmp_path / "maps.tsv").read_text().splitlines()]
    (tmp_path / "maps.tsv").write_text("".join("\t".join(row[:3] + row[4:]) + "\n" for row in rows))  # no path
    run = snakemake(tmp_path, "-n")
    assert run.returncode != 0
    assert "computed from each lesion's mask" in run.stdout and "add a path column or drop them" in run.stdout
