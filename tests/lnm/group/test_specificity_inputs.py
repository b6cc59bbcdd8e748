"""The specificity test's inputs: the design's checks (each bad design stops with a message
naming the group, covariate, lesion or file), the lesion sheet's extra columns, and maps
made elsewhere, resampled to the mask by world coordinates."""

import nibabel as nib
import numpy as np
import pytest

from shardmap.errors import InputError
from shardmap.lnm.group.design import (DesignSpec, build_design, check_covariate_values, select_design_lesions,
                                 sheet_covariate_values)
from shardmap.lnm.nifti import load_mask, values_on_mask
from shardmap.lnm.sheets import Lesion, read_lesion_maps, read_lesions
from synthetic import MASK_AFFINE, make_mask, save, write_sheet


def lesions(groups, **columns):
    return [Lesion(f"les{i}", f"les{i}.nii.gz", g,
                   tuple((name, values[i]) for name, values in columns.items() if values[i] is not None))
            for i, g in enumerate(groups)]


def design_error(rows, spec, *fragments):
    with pytest.raises(InputError) as info:
        selected = select_design_lesions(rows, spec, "sheet.tsv")
        values = sheet_covariate_values(selected, spec, "sheet.tsv")
        build_design(selected, values)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    return str(info.value)


GROUPS = ["a", "a", "a", "b", "b", "b", "c"]


def test_a_group_in_both_cases_and_controls():
    design_error(lesions(GROUPS), DesignSpec(("a", "b"), ("b",)), "['b']", "both cases and controls")


def test_a_group_with_no_lesion():
    design_error(lesions(GROUPS), DesignSpec(("a",), ("stroke_other",)), "stroke_other", "no lesion")


def test_fewer_than_two_lesions_in_a_group():
    design_error(lesions(GROUPS), DesignSpec(("a",), ("c",)), "controls", "['c']", "1 lesion", "at least 2")


def test_empty_cases():
    design_error(lesions(GROUPS), DesignSpec((), ("b",)), "lnm.specificity.cases is empty")


def test_a_covariate_missing_from_the_sheet():
    rows = lesions(GROUPS, age=["60", "61", "62", "63", "64", "65", "66"])
    design_error(rows, DesignSpec(("a",), ("b",), ("volume", "agee")), "'agee'", "age",
                 "neither a built-in covariate")


def test_a_missing_covariate_value():
    rows = lesions(GROUPS, age=["60", None, "62", "63", "64", "65", "66"])
    design_error(rows, DesignSpec(("a",), ("b",), ("age",)), "'age'", "les1", "empty",
                 "every case and control needs a")


def test_a_non_numeric_covariate_value():
    rows = lesions(GROUPS, age=["60", "61", "sixty", "63", "64", "65", "66"])
    design_error(rows, DesignSpec(("a",), ("b",), ("age",)), "'age'", "les2", "'sixty'", "not a finite number")


def test_a_decimal_comma_is_refused_not_misread():
    rows = lesions(GROUPS, age=["60", "61", "62,5", "63", "64", "65", "66"])
    design_error(rows, DesignSpec(("a",), ("b",), ("age",)), "'62,5'", "decimal point")


def test_a_constant_covariate():
    rows = lesions(GROUPS, site=["1"] * 7)
    design_error(rows, DesignSpec(("a",), ("b",), ("site",)), "'site'", "constant")


def test_a_covariate_collinear_with_case():
    rows = lesions(GROUPS, scanner=["1", "1", "1", "0", "0", "0.1", "5"])
    design_error(rows, DesignSpec(("a",), ("b",), ("scanner",)), "'scanner'", "correlates with case vs control")


def test_covariates_that_are_linear_combinations():
    rows = lesions(GROUPS, x=["1", "2", "3", "1", "3", "2", "0"], y=["2", "4", "6", "2", "6", "4", "0"])
    design_error(rows, DesignSpec(("a",), ("b",), ("x", "y")), "linearly dependent")


@pytest.mark.parametrize("columns, covariates, fragment", [
    ({"site": ["2"] * 7}, ("site",), "'site' is constant"),
    ({"scanner": ["1", "1", "1", "0", "0", "0.1", "5"]}, ("scanner",), "'scanner' correlates with case vs control"),
    ({"age": ["60", "61", "62", "63", "64", "65", "66"]}, ("age", "volume", "centrality", "x1", "x2"),
     "no degree of freedom"),
    ({"onset": ["50", "55", "40", "61", "48", "52", "70"], "years": ["3", "1", "8", "2", "5", "4", "1"],
      "now": ["53", "56", "48", "63", "53", "56", "71"]}, ("onset", "years", "now"), "(nearly) linearly dependent"),
])
def test_sheet_covariates_are_checked_while_the_job_graph_is_built(columns, covariates, fragment):
    """The standard-library checks the workflow runs before any job (no NumPy)."""
    rows = lesions(GROUPS, **columns)
    spec = DesignSpec(("a",), ("b",), tuple(name for name in covariates if name in columns))
    selected = select_design_lesions(rows, spec, "sheet.tsv")
    values = sheet_covariate_values(selected, spec, "sheet.tsv")
    with pytest.raises(InputError) as info:
        check_covariate_values(selected, values, len(covariates))
    assert fragment in str(info.value)


def sub_scores(n, rng):
    """Two sub-scores and their total as a spreadsheet exports it (6 decimals)."""
    first, second = rng.normal(10, 3, n), rng.normal(20, 5, n)
    return first, second, np.round(first + second, 6)


def test_nearly_collinear_sheet_covariates_stop_the_job_graph():
    """c3 = c1 + c2 rounded to 6 decimals: NumPy's rank test passes the design (condition
    number about 1e7), and the GLM would silently drop a direction of rounding noise. The
    variance inflation check names the three covariates while the job graph is built."""
    groups = ["a"] * 10 + ["b"] * 10
    c1, c2, c3 = sub_scores(20, np.random.default_rng(4))
    assert np.linalg.matrix_rank(np.column_stack([np.ones(20), np.repeat([1.0, 0.0], 10), c1, c2, c3])) == 5
    rows = lesions(groups, c1=[f"{v:.6f}" for v in c1], c2=[f"{v:.6f}" for v in c2], c3=[f"{v:.6f}" for v in c3])
    spec = DesignSpec(("a",), ("b",), ("c1", "c2", "c3"))
    selected = select_design_lesions(rows, spec, "sheet.tsv")
    with pytest.raises(InputError) as info:
        check_covariate_values(selected, sheet_covariate_values(selected, spec, "sheet.tsv"), 3)
    text = str(info.value)
    assert "(nearly) linearly dependent" in text and "variance inflation factor" in text, text
    assert all(f"'{name}'" in text for name in ("c1", "c2", "c3")) and "Drop one of them" in text


def test_correlated_but_distinct_covariates_pass():
    """Age now and age at onset (r about 0.9 here) are correlated, not redundant."""
    rng = np.random.default_rng(5)
    onset = rng.normal(60, 8, 20)
    now = onset + rng.normal(3, 3, 20)
    assert 0.8 < np.corrcoef(onset, now)[0, 1] < 0.97
    rows = lesions(["a"] * 10 + ["b"] * 10, onset=[f"{v:.2f}" for v in onset], now=[f"{v:.2f}" for v in now])
    spec = DesignSpec(("a",), ("b",), ("onset", "now"))
    selected = select_design_lesions(rows, spec, "sheet.tsv")
    values = sheet_covariate_values(selected, spec, "sheet.tsv")
    check_covariate_values(selected, values, 2)
    assert build_design(selected, values).covariates.shape == (20, 2)


def test_the_variance_inflation_factor_against_its_definition():
    """The bound applies to 1 / (1 - R^2) of each covariate on the other columns, checked here
    against statsmodels' variance_inflation_factor on the same design."""
    from statsmodels.stats.outliers_influence import variance_inflation_factor

    from shardmap.lnm.group.design import MAX_VARIANCE_INFLATION, check_collinearity

    rng = np.random.default_rng(6)
    case = np.repeat([1.0, 0.0], 12)
    base = rng.normal(size=24)
    for noise in (0.05, 0.2, 1.0):
        other = base + noise * rng.normal(size=24)
        design = np.column_stack([np.ones(24), case, base, other])
        expected = max(variance_inflation_factor(design, k) for k in (2, 3))
        if expected > MAX_VARIANCE_INFLATION:
            with pytest.raises(InputError, match=f"variance inflation factor {expected:.3g}"):
                check_collinearity(case, {"base": base, "other": other})
        else:
            check_collinearity(case, {"base": base, "other": other})


@pytest.mark.parametrize("cases, controls, n_permutations, alpha, fragment", [
    (10, 10, 200, 0.001, "set lnm.specificity.n_permutations to at least 1000"),
    (10, 10, 19, 0.05, "set lnm.specificity.n_permutations to at least 20"),
    (2, 2, 10_000, 0.05, "in only 3 distinct ways"),
    (3, 3, 10_000, 0.05, "in only 10 distinct ways"),
])
def test_an_alpha_no_voxel_could_reach_is_refused(cases, controls, n_permutations, alpha, fragment):
    from shardmap.lnm.group.design import check_reachable_alpha

    with pytest.raises(InputError, match="no voxel could"):
        check_reachable_alpha(cases, controls, n_permutations, alpha)
    with pytest.raises(InputError) as info:
        check_reachable_alpha(cases, controls, n_permutations, alpha)
    assert fragment in str(info.value)


def test_the_smallest_p_against_an_enumeration_of_the_splits():
    """A 3-vs-3 design: every permutation of six lesions, two-sided t of the group means on
    random data; the smallest share of permutations reaching the largest |t| is 1/10."""
    from itertools import permutations

    from shardmap.lnm.group.design import check_reachable_alpha, smallest_p

    values = np.random.default_rng(8).normal(size=6)
    case = np.array([1, 1, 1, 0, 0, 0], bool)

    def abs_t(order):
        y = values[list(order)]
        a, b = y[case], y[~case]
        return abs(a.mean() - b.mean()) / np.sqrt(a.var(ddof=1) / 3 + b.var(ddof=1) / 3)

    stats = np.array([abs_t(order) for order in permutations(range(6))])
    share = (stats >= stats.max() * (1 - 1e-9)).mean()
    assert share == pytest.approx(smallest_p(3, 3, 10 ** 6)[0])
    check_reachable_alpha(3, 3, 10 ** 6, 0.11)
    check_reachable_alpha(10, 10, 20, 0.05)


def test_a_sheet_column_named_like_a_built_in_covariate():
    rows = lesions(GROUPS, volume=["1", "2", "3", "4", "5", "6", "7"])
    design_error(rows, DesignSpec(("a",), ("b",), ("volume",)), "column(s) ['volume']", "built-in", "rename")


def test_the_design_z_scores_covariates_and_leaves_other_groups_out():
    rows = lesions(GROUPS, age=["60", "70", "50", "65", "55", "62", "99"])
    spec = DesignSpec(("a",), ("b",), ("age",))
    selected = select_design_lesions(rows, spec, "sheet.tsv")
    design = build_design(selected, sheet_covariate_values(selected, spec, "sheet.tsv"))
    assert design.lesion_ids == [f"les{i}" for i in range(6)]
    np.testing.assert_array_equal(design.case, [1, 1, 1, 0, 0, 0])
    age = np.array([60, 70, 50, 65, 55, 62.0])
    np.testing.assert_allclose(design.covariates[:, 0], (age - age.mean()) / age.std())


# ---- the lesion sheet's columns ---------------------------------------------------------

def test_extra_columns_are_kept(tmp_path):
    sheet = write_sheet(tmp_path / "lesions.tsv", ["lesion_id", "path", "group", "age", "notes"],
                        [("a", "a.nii.gz", "g", "61.5", "left MCA, 2019"), ("b", "b.nii.gz", "g", "", "x")])
    first, second = read_lesions(sheet, check_files=False)
    assert first.column("age") == "61.5" and first.column("notes") == "left MCA, 2019"
    assert second.column("age") is None


@pytest.mark.parametrize("header, wrong, right", [
    (["lesoin_id", "path"], "lesoin_id", "lesion_id"),
    (["lesion_id", "pth"], "pth", "path"),
    (["lesion_id", "path", "grp"], "grp", "group"),
    (["lesion_id", "path", "Group"], "Group", "group"),
])
def test_misspelt_columns_are_named(tmp_path, header, wrong, right):
    sheet = write_sheet(tmp_path / "lesions.tsv", header, [tuple("x" for _ in header)])
    with pytest.raises(InputError) as info:
        read_lesions(sheet, check_files=False)
    assert f"'{wrong}' (did you mean '{right}'?)" in str(info.value)


def test_lesion_map_sheet(tmp_path):
    sheet = write_sheet(tmp_path / "maps.tsv", ["lesion_id", "map", "group", "age", "t_map"],
                        [("a", "a_Fz.nii.gz", "case", "70", "a_T.nii.gz"), ("b", "b_Fz.nii.gz", "control", "", "")])
    rows = read_lesion_maps(sheet, check_files=False)
    assert [(r.lesion_id, r.map_path, r.group, r.path, r.column("age"), r.t_map_path) for r in rows] == [
        ("a", "a_Fz.nii.gz", "case", None, "70", "a_T.nii.gz"), ("b", "b_Fz.nii.gz", "control", None, None, None)]
    with pytest.raises(InputError, match="map of lesion 'a'.*a_Fz.nii.gz' does not exist"):
        read_lesion_maps(sheet)


# ---- maps made elsewhere -----------------------------------------------------------------

def linear_field(affine, shape):
    """A map that is linear in world coordinates: trilinear interpolation reproduces it
    exactly at any point inside the grid."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    return (0.5 * world[..., 0] - 0.25 * world[..., 1] + 0.1 * world[..., 2] + 3.0).astype(np.float32)


@pytest.fixture
def mask(tmp_path):
    return load_mask(save(make_mask(), tmp_path / "mask.nii.gz"))


def test_a_map_on_another_grid_is_resampled_by_world_coordinates(tmp_path, mask):
    ras = np.diag([2.0, 2.0, 2.0, 1.0])
    ras[:3, 3] = [-32.0, -30.0, -20.0]  # RAS 2 mm, covering the radiological 4 mm mask
    path = save(nib.Nifti1Image(linear_field(ras, (34, 30, 24)), ras), tmp_path / "map.nii.gz")
    values = values_on_mask(path, mask, "map")
    world = mask.ijk @ mask.affine[:3, :3].T + mask.affine[:3, 3]
    expected = 0.5 * world[:, 0] - 0.25 * world[:, 1] + 0.1 * world[:, 2] + 3.0
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-4)


def test_a_map_on_the_mask_grid_is_read_as_it_is(tmp_path, mask):
    data = np.random.default_rng(0).normal(size=mask.shape).astype(np.float32)
    path = save(nib.Nifti1Image(data, MASK_AFFINE), tmp_path / "map.nii.gz")
    np.testing.assert_array_equal(values_on_mask(path, mask, "map"), data.ravel()[mask.flat_index])


def test_a_map_that_does_not_cover_the_mask(tmp_path, mask):
    small = np.diag([2.0, 2.0, 2.0, 1.0])
    small[:3, 3] = [0.0, 0.0, 0.0]  # one octant of the brain only
    path = save(nib.Nifti1Image(np.ones((20, 20, 20), np.float32), small), tmp_path / "half.nii.gz")
    with pytest.raises(InputError) as info:
        values_on_mask(path, mask, "map of lesion 'x'")
    assert "half.nii.gz" in str(info.value) and "does not cover" in str(info.value)


def test_a_map_with_nan_inside_the_mask(tmp_path, mask):
    data = np.ones(mask.shape, np.float32)
    data.ravel()[mask.flat_index[3]] = np.nan
    path = save(nib.Nifti1Image(data, MASK_AFFINE), tmp_path / "nan.nii.gz")
    with pytest.raises(InputError, match="nan.nii.gz' is NaN or Inf at 1 voxel"):
        values_on_mask(path, mask, "map")


def offset_grid():
    """A RAS 3 mm grid whose points are never a mask voxel's centre (nor on its planes)."""
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = [-40.3, -37.9, -25.6]
    return affine, (30, 28, 22)


def trilinear_over_finite(data, affine, world):
    """By hand: for each world point, the 8 grid neighbours' values weighted by trilinear
    weights, NaN neighbours left out and the weights renormalised."""
    ijk = (np.linalg.inv(affine) @ np.c_[world, np.ones(len(world))].T)[:3].T
    base = np.floor(ijk).astype(int)
    frac = ijk - base
    out = np.empty(len(world))
    for n, (corner, f) in enumerate(zip(base, frac)):
        total = weights = 0.0
        for offset in np.ndindex(2, 2, 2):
            w = np.prod([f[a] if offset[a] else 1.0 - f[a] for a in range(3)])
            value = data[tuple(corner + np.array(offset))]
            if np.isfinite(value):
                total, weights = total + w * value, weights + w
        out[n] = total / weights if weights > 0 else np.nan
    return out


def test_nan_outside_the_brain_of_a_map_on_another_grid_does_not_spread_in(tmp_path, mask):
    """As FSL and SPM write maps: NaN wherever their own brain mask is 0, which here is every
    grid point farther than one grid step outside ours, plus scattered NaN next to it. The
    values equal a hand-made trilinear interpolation over the finite neighbours."""
    affine, shape = offset_grid()
    rng = np.random.default_rng(12)
    data = rng.normal(size=shape)
    grid_world = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1) @ affine[:3, :3].T + \
        affine[:3, 3]
    mask_world = mask.ijk @ mask.affine[:3, :3].T + mask.affine[:3, 3]
    near = np.min(np.linalg.norm(grid_world.reshape(-1, 1, 3) - mask_world[None, ::7], axis=2), axis=1)
    data.ravel()[near > 12.0] = np.nan
    data.ravel()[rng.choice(data.size, 200, replace=False)] = np.nan
    data.ravel()[rng.choice(data.size, 50, replace=False)] = np.inf  # Inf counts as NaN does
    path = save(nib.Nifti1Image(data, affine), tmp_path / "fsl.nii.gz")
    values = values_on_mask(path, mask, "map")
    expected = trilinear_over_finite(data, nib.load(path).affine, mask_world)  # the header's float32 affine
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(values, expected, rtol=1e-10, atol=1e-12)


def test_a_mask_voxel_with_no_finite_neighbour_is_counted(tmp_path, mask):
    affine, shape = offset_grid()
    data = np.ones(shape)
    mask_world = mask.ijk @ mask.affine[:3, :3].T + mask.affine[:3, 3]
    ijk = (np.linalg.inv(affine) @ np.c_[mask_world[:2], np.ones(2)].T)[:3].T
    for corner in np.floor(ijk).astype(int):  # every neighbour of the first two mask voxels
        for offset in np.ndindex(2, 2, 2):
            data[tuple(corner + np.array(offset))] = np.nan
    expected = np.isnan(trilinear_over_finite(data, affine, mask_world)).sum()
    path = save(nib.Nifti1Image(data, affine), tmp_path / "holes.nii.gz")
    with pytest.raises(InputError, match=f"holes.nii.gz' has no finite value .* at {expected} of the"):
        values_on_mask(path, mask, "map")


def test_a_4d_map(tmp_path, mask):
    path = save(nib.Nifti1Image(np.ones(mask.shape + (3,), np.float32), MASK_AFFINE), tmp_path / "4d.nii.gz")
    with pytest.raises(InputError, match="4d.nii.gz' has shape"):
        values_on_mask(path, mask, "map")


def test_a_map_sheet_gives_the_t_map_of_the_sensitivity_threshold_apart(tmp_path, mask):
    from shardmap.lnm.group.design_maps import maps_from_sheet
    from shardmap.lnm.lesions import LesionRules
    from shardmap.lnm.sheets import LesionMap

    rng = np.random.default_rng(3)
    fz, t = (rng.normal(size=mask.shape).astype(np.float32) for _ in range(2))
    fz_path = save(nib.Nifti1Image(fz, MASK_AFFINE), tmp_path / "a_Fz.nii.gz")
    t_path = save(nib.Nifti1Image(t, MASK_AFFINE), tmp_path / "a_T.nii.gz")
    rows = [LesionMap("a", fz_path, "case", t_map_path=t_path), LesionMap("b", fz_path, "control")]
    first, second = maps_from_sheet(rows, mask, LesionRules(), "maps.tsv")
    np.testing.assert_array_equal(first.values, fz.ravel()[mask.flat_index])
    np.testing.assert_array_equal(first.t_map, t.ravel()[mask.flat_index])
    np.testing.assert_array_equal(second.t_map, second.values)  # no t_map: the map serves
