"""How lesion values and thin lesions are read (lnm.lesion_values, lnm.lesion_resampling):
probabilistic lesions by a rule the user chooses, checked against the independent
reference; NaN, Inf and negative values refused with their count; thin lesions kept by
the coverage rule, checked against coverages computed by hand."""

import nibabel as nib
import numpy as np
import pytest

from pipeline import run_library
from reference import reference_maps
from shardmap.errors import InputError
from shardmap.lnm.lesions import LesionRules, prepare_lesion_batch_files, read_qc_table
from synthetic import save
from test_lnm_reference import assert_maps_match

# An RAS 3 mm grid offset from the 4 mm mask grid of the synthetic dataset (no ties).
RAS3 = np.diag([3.0, 3.0, 3.0, 1.0])
RAS3[:3, 3] = [-31.3, -29.6, -17.2]


def soft_sphere(path, centre=(2.0, 3.0, 1.0), core=5.0, halo=6.0):
    """A probabilistic lesion: 1 within ``core`` mm of the centre, falling linearly to
    0.001 at ``core + halo`` mm (an interpolation halo), 0 beyond."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in (22, 20, 14)], indexing="ij"), axis=-1)
    distance = np.sqrt((((ijk @ RAS3[:3, :3].T + RAS3[:3, 3]) - centre) ** 2).sum(-1))
    values = np.clip(1.0 - (distance - core) / halo, 0.0, 1.0)
    values[(values > 0) & (values < 0.001)] = 0.001
    values[distance > core + halo] = 0.0
    return save(nib.Nifti1Image(values.astype(np.float32), RAS3), path), values


@pytest.fixture(scope="module")
def soft(dataset):
    path, values = soft_sphere(dataset["root"] / "soft.nii.gz")
    return dict(dataset, lesions=[("soft", path, None)]), values


def test_a_probabilistic_lesion_is_refused_under_the_binary_rule(soft, tmp_path):
    data, values = soft
    fraction = int(((values > 0) & (values < 1)).sum())
    with pytest.raises(InputError) as info:
        prepare_lesion_batch_files(data["mask"], data["lesions"], tmp_path / "b.npz", tmp_path / "b.tsv")
    text = str(info.value)
    assert f"lesion 'soft' ('{data['lesions'][0][1]}') has {fraction} voxel(s) with values other than 0 and 1" in text
    assert "lnm.lesion_values: threshold" in text and "weighted" in text
    assert not (tmp_path / "b.npz").exists() and not (tmp_path / "b.tsv").exists()


@pytest.mark.parametrize("threshold", [0.5, 0.9])
def test_the_threshold_rule_maps_the_voxels_at_or_above_the_threshold(soft, tmp_path, threshold):
    data, values = soft
    rules = {"lesion_values": "threshold", "lesion_threshold": threshold}
    ours = run_library(data, tmp_path, lesion_rules=rules)
    ref = reference_maps(data["mask"], data["subjects"], [data["lesions"][0][1]], "threshold", threshold)
    assert_maps_match(ours["soft"], ref[data["lesions"][0][1]])
    (row,) = read_qc_table(tmp_path / "batch-0.qc.tsv")
    assert row["lesion_values"] == f"threshold>={threshold:g}" and row["resampling"] == "nearest"
    assert float(row["value_min"]) == pytest.approx(0.001) and float(row["value_max"]) == 1.0
    assert int(row["n_voxels_input"]) == int((values >= threshold).sum())


def test_the_weighted_rule_matches_the_value_weighted_seed_of_the_reference(soft, tmp_path):
    """connectome_quick's rule for weighted ROIs: the seed is the mean of the voxels' time
    courses, each multiplied by its value (here: sum of w x over sum of w, the same r)."""
    data, _ = soft
    ours = run_library(data, tmp_path, lesion_rules={"lesion_values": "weighted"})
    path = data["lesions"][0][1]
    weighted = reference_maps(data["mask"], data["subjects"], [path], "weighted")[path]
    assert_maps_match(ours["soft"], weighted)
    # and it is not the binarised lesion's map
    binary = reference_maps(data["mask"], data["subjects"], [path], "threshold", 1e-9)[path]
    assert np.abs(binary["T"] - weighted["T"]).max() > 0.1


def lesion_with(tmp_path, name, setter):
    """A 4 x 4 x 4 voxel block lesion on the RAS 3 mm grid, changed by ``setter``."""
    values = np.zeros((22, 20, 14), np.float32)
    values[8:12, 8:12, 5:9] = 1.0
    setter(values)
    return save(nib.Nifti1Image(values, RAS3), tmp_path / name)


@pytest.mark.parametrize("value, fragment", [(np.nan, "17 voxel(s) that are NaN or Inf"),
                                             (np.inf, "17 voxel(s) that are NaN or Inf"),
                                             (-1.0, "17 voxel(s) below 0 (down to -1)")])
@pytest.mark.parametrize("rule", ["binary", "threshold", "weighted"])
def test_nan_inf_and_negative_values_stop_with_their_count(dataset, tmp_path, value, fragment, rule):
    def spoil(values):
        values.reshape(-1)[np.flatnonzero(values.reshape(-1))[:17]] = value

    path = lesion_with(tmp_path, "spoilt.nii.gz", spoil)
    with pytest.raises(InputError) as info:
        prepare_lesion_batch_files(dataset["mask"], [("spoilt", path, None)], tmp_path / "b.npz",
                                   tmp_path / "b.tsv", {"lesion_values": rule})
    assert f"lesion 'spoilt' ('{path}') has {fragment}" in str(info.value)


def test_every_bad_lesion_of_a_batch_is_named(dataset, tmp_path):
    def halve(values):
        values[values > 0] = 0.5

    lesions = [("good", dataset["lesions"][0][1], None),
               ("soft-a", lesion_with(tmp_path, "a.nii.gz", halve), None),
               ("empty-b", lesion_with(tmp_path, "b.nii.gz", lambda v: v.fill(0)), None),
               ("nan-c", lesion_with(tmp_path, "c.nii.gz", lambda v: v.__setitem__((0, 0, 0), np.nan)), None)]
    with pytest.raises(InputError) as info:
        prepare_lesion_batch_files(dataset["mask"], lesions, tmp_path / "b.npz", tmp_path / "b.tsv")
    text = str(info.value)
    assert text.startswith("3 of the 4 lesions of this batch are unusable; nothing was mapped")
    for name in ("lesion 'soft-a'", "lesion 'empty-b'", "lesion 'nan-c'"):
        assert name in text
    assert "lesion 'good'" not in text


# --- thin lesions: an FSL-like 2 mm grid (voxel centres at even mm) and 1 mm lesions -----

MASK2 = np.diag([-2.0, 2.0, 2.0, 1.0])
MASK2[:3, 3] = [20.0, -20.0, -20.0]
ONE_MM = np.diag([1.0, 1.0, 1.0, 1.0])
ONE_MM[:3, 3] = [-20.0, -20.0, -20.0]


@pytest.fixture
def mask2(tmp_path):
    return save(nib.Nifti1Image(np.ones((21, 21, 21), np.uint8), MASK2), tmp_path / "mask2.nii.gz")


def slab(tmp_path, x_mm):
    """A lesion one 1 mm voxel thick at x = ``x_mm``, 11 x 11 mm in y and z (it covers the
    mask voxels centred at y, z = -4 ... 4 fully, and a quarter of those at -6 and 6)."""
    values = np.zeros((41, 41, 41), np.uint8)
    values[int(x_mm + 20), 15:26, 15:26] = 1
    return save(nib.Nifti1Image(values, ONE_MM), tmp_path / f"slab{x_mm}.nii.gz")


def test_a_thin_lesion_lost_by_nearest_neighbour_is_explained_with_the_fix(tmp_path, mask2):
    path = slab(tmp_path, -3)  # between the 2 mm voxel centres at -4 and -2
    with pytest.raises(InputError) as info:
        prepare_lesion_batch_files(mask2, [("thin", path, None)], tmp_path / "b.npz", tmp_path / "b.tsv")
    text = str(info.value)
    assert "121 of its 121 voxels lie inside the brain mask" in text
    assert "thinner than the mask's voxels" in text and "lnm.lesion_resampling: coverage" in text
    assert "check that the lesion is in the mask's space" not in text.lower()


@pytest.mark.parametrize("x_mm, n_mask_voxels", [(-3, 2 * 25), (-2, 25)])
def test_the_coverage_rule_keeps_a_one_voxel_thick_lesion(tmp_path, mask2, x_mm, n_mask_voxels):
    """Between two mask voxel centres the slab covers a quarter of each of the two mask
    voxels it crosses; on a centre it covers half of one."""
    path = slab(tmp_path, x_mm)
    batch = prepare_lesion_batch_files(mask2, [("thin", path, None)], tmp_path / "b.npz", tmp_path / "b.tsv",
                                       {"lesion_resampling": "coverage", "lesion_coverage": 0.25})
    assert batch.positions_of(0).size == n_mask_voxels
    (row,) = read_qc_table(tmp_path / "b.tsv")
    assert row["resampling"] == "coverage>=0.25" and int(row["n_voxels_in_mask"]) == n_mask_voxels
    if x_mm == -3:
        with pytest.raises(InputError, match=r"no mask voxel is lesioned over at least lnm.lesion_coverage = "
                                             r"0.3 of its volume \(the most is 0.25\)"):
            prepare_lesion_batch_files(mask2, [("thin", path, None)], tmp_path / "c.npz", tmp_path / "c.tsv",
                                       {"lesion_resampling": "coverage", "lesion_coverage": 0.3})


@pytest.mark.parametrize("lesion_values", ["binary", "weighted"])
def test_coverage_equals_the_lesioned_fraction_of_each_mask_voxel(tmp_path, mask2, lesion_values):
    """A 1 mm grid whose voxels tile the 2 mm mask voxels eight to one: a mask voxel's
    coverage is the fraction of its eight lesion voxels that are lesioned, and its weight
    (weighted values) the mean of their values, computed here by reshaping."""
    rng = np.random.default_rng(4)
    shape = (42, 42, 42)
    fine = np.diag([-1.0, 1.0, 1.0, 1.0])
    fine[:3, 3] = MASK2[:3, 3] + [0.5, -0.5, -0.5]
    values = np.where(rng.random(shape) < 0.4, rng.uniform(0.2, 3.0, shape), 0.0)
    values[:, :, 40:] = 0.0  # beyond the mask grid (21 voxels of 2 mm)
    if lesion_values == "binary":
        values = (values > 0).astype(np.float64)
    path = save(nib.Nifti1Image(values.astype(np.float32), fine), tmp_path / "fine.nii.gz")
    blocks = values.reshape(21, 2, 21, 2, 21, 2)
    coverage = (blocks > 0).mean(axis=(1, 3, 5))
    mean_value = blocks.mean(axis=(1, 3, 5))
    for fraction in (0.25, 0.5, 0.875):
        batch = prepare_lesion_batch_files(mask2, [("fine", path, None)], tmp_path / "b.npz", tmp_path / "b.tsv",
                                           {"lesion_values": lesion_values, "lesion_resampling": "coverage",
                                            "lesion_coverage": fraction})
        expected = np.flatnonzero((coverage >= fraction).ravel())  # the mask is the whole grid
        np.testing.assert_array_equal(batch.positions_of(0), expected)
        want = mean_value.ravel()[expected] if lesion_values == "weighted" else np.ones(expected.size)
        np.testing.assert_allclose(batch.weights_of(0), want, rtol=1e-6)


def test_rules_from_the_config_are_checked():
    assert LesionRules.from_config({}) == LesionRules("binary", 0.5, "nearest", 0.25)
    with pytest.raises(InputError, match="lnm.lesion_values is 'fuzzy'"):
        LesionRules.from_config({"lesion_values": "fuzzy"})
