"""The specificity GLM and its sharded permutation inference, against references written
here: an ordinary least-squares fit per voxel, a plain loop over the permutations, and
nilearn's permuted_ols."""

from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pytest
from scipy import stats

from shardmap.lnm.group.design import DesignSpec, select_design_lesions
from shardmap.lnm.group.design_maps import DesignMap
from shardmap.lnm.nifti import BrainMask
from shardmap.lnm.group.permutations import TIE_RTOL, draw_permutation, permutation_ranges
from shardmap.lnm.nifti import write_map
from shardmap.lnm.group.permutations import NullShard, merge_null_shards
from shardmap.lnm.group.specificity import (cases_sensitivity, finish_specificity, fwe_p, fwe_threshold, permutation_task,
                                      prepare_specificity)


@dataclass(frozen=True)
class Row:
    lesion_id: str
    group: str
    columns: tuple = ()

    def column(self, name):
        return dict(self.columns).get(name)


def grid_mask(shape=(7, 6, 5)):
    flat = np.arange(int(np.prod(shape)))
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    header = nib.Nifti1Header()
    header.set_sform(affine, code=4)
    return BrainMask("in-memory mask", shape, affine, flat, header)


def make_study(rng, n_cases=9, n_controls=11, n_voxels=None, mask=None, effect=0.0, effect_voxels=(),
               age_effect=0.5):
    """Lesion rows with an 'age' covariate, and maps = noise + age effect + case effect."""
    n = n_cases + n_controls
    n_voxels = n_voxels or mask.n_voxels
    groups = ["case"] * n_cases + ["control"] * n_controls
    order = rng.permutation(n)
    groups = [groups[i] for i in order]
    age = rng.normal(60, 10, n)
    rows = [Row(f"les{i:02d}", g, (("age", f"{a:.6f}"),)) for i, (g, a) in enumerate(zip(groups, age))]
    maps = rng.normal(size=(n, n_voxels)) + age_effect * (age[:, None] - 60) / 10
    maps[:, list(effect_voxels)] += effect * np.array([g == "case" for g in groups])[:, None]
    return rows, maps


def run_study(tmp_path, rows, maps, mask, n_permutations=200, shard_size=None, n_chunks=1, seed=3,
              covariates=("age",), tfce=False, positions=None):
    spec = DesignSpec(("case",), ("control",), tuple(covariates))
    selected = select_design_lesions(rows, spec, "sheet.tsv")
    sheet_covariates = {name: [float(les.column(name)) for les, _ in selected]
                        for name in covariates if name in ("age",)}
    design_maps = [DesignMap(r.lesion_id, maps[i], maps[i], None if positions is None else positions[i])
                   for i, r in enumerate(rows)]
    work = tmp_path / "work"
    work.mkdir(parents=True, exist_ok=True)
    prepare_specificity(design_maps, selected, sheet_covariates, list(covariates), mask, tfce,
                        tmp_path / "design.tsv", work / "residuals.npy", work / "glm.npz")
    positive, negative = cases_sensitivity(design_maps, [les.lesion_id for les, case in selected if case], 1.0,
                                           mask.n_voxels)
    sensitivity = {"pos": work / "pos.nii.gz", "neg": work / "neg.nii.gz"}
    write_map(sensitivity["pos"], positive, mask)
    write_map(sensitivity["neg"], negative, mask)
    shard_paths = []
    for p, perm_range in enumerate(permutation_ranges(n_permutations, shard_size or n_permutations)):
        for chunk in range(n_chunks):
            path = work / f"perm-{p}_chunk-{chunk}.npz"
            permutation_task(work / "residuals.npy", work / "glm.npz", mask, seed, n_permutations, perm_range,
                             chunk, n_chunks, tfce, path)
            shard_paths.append(path)
    names = ["tstat", "p_uncorrected", "p_fwe", "conjunction", "null_max"] + (["tfce", "p_fwe_tfce"] if tfce else [])
    out = tmp_path / "out"
    paths = {name: out / (f"{name}.tsv" if name == "null_max" else f"{name}.nii.gz") for name in names}
    maps_out = finish_specificity(work / "glm.npz", shard_paths, sensitivity, n_permutations, 0.05, 0.75, mask, paths)
    null = np.loadtxt(paths["null_max"], delimiter="\t", skiprows=1)
    return maps_out, null, paths


def ols_t(design, y):
    """t of column 1 of ``design`` at every column of ``y``, by a least-squares fit."""
    beta, _, _, _ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ beta
    dof = design.shape[0] - design.shape[1]
    covariance = np.linalg.inv(design.T @ design)[1, 1]
    return beta[1] / np.sqrt((residual ** 2).sum(axis=0) / dof * covariance)


def design_of(rows, covariates=("age",)):
    case = np.array([r.group == "case" for r in rows], dtype=float)
    columns = [np.ones(len(rows)), case]
    for name in covariates:
        v = np.array([float(r.column(name)) for r in rows])
        columns.append((v - v.mean()) / v.std())
    return np.column_stack(columns)


def reference_permutation_test(rows, maps, n_permutations, seed):
    """Freedman-Lane by the book, one permutation at a time: permute the residuals of the
    nuisance model, refit the full model, take |t|."""
    design = design_of(rows)
    nuisance = design[:, [0, 2]]
    gamma, _, _, _ = np.linalg.lstsq(nuisance, maps, rcond=None)
    fitted = nuisance @ gamma
    residual = maps - fitted
    observed = np.abs(ols_t(design, maps))
    exceed = np.zeros(maps.shape[1], dtype=int)
    maxima = np.empty(n_permutations)
    for i in range(n_permutations):
        perm = draw_permutation(seed, i, len(rows))
        t = np.abs(ols_t(design, fitted + residual[perm]))
        maxima[i] = t.max()
        exceed += t >= observed * (1 - TIE_RTOL)
    p_uncorrected = (1 + exceed) / (1 + n_permutations)
    p_fwe = (1 + (maxima[None, :] >= observed[:, None] * (1 - TIE_RTOL)).sum(axis=1)) / (1 + n_permutations)
    return observed, maxima, p_uncorrected, p_fwe


def test_t_map_equals_least_squares(tmp_path):
    mask = grid_mask()
    rows, maps = make_study(np.random.default_rng(0), mask=mask, effect=1.0, effect_voxels=range(20))
    result, _, paths = run_study(tmp_path, rows, maps, mask, n_permutations=64)
    expected = ols_t(design_of(rows), maps)
    np.testing.assert_allclose(result["tstat"], expected, rtol=1e-5, atol=1e-9)
    written = nib.load(paths["tstat"]).get_fdata().ravel()
    np.testing.assert_allclose(written, expected, rtol=1e-5, atol=1e-6)
    design = np.loadtxt(tmp_path / "design.tsv", delimiter="\t", skiprows=1, usecols=(2, 3, 4))
    np.testing.assert_allclose(design, design_of(rows), atol=1e-9)


def test_p_values_equal_a_plain_permutation_loop(tmp_path):
    mask = grid_mask((5, 4, 3))
    rows, maps = make_study(np.random.default_rng(1), n_cases=5, n_controls=6, mask=mask, effect=4.0,
                            effect_voxels=range(8))
    result, null, _ = run_study(tmp_path, rows, maps, mask, n_permutations=150, shard_size=70)
    observed, maxima, p_uncorrected, p_fwe = reference_permutation_test(rows, maps, 150, seed=3)
    np.testing.assert_allclose(null[:, 1], maxima, rtol=1e-9)
    np.testing.assert_array_equal(result["p_uncorrected"], p_uncorrected)
    np.testing.assert_array_equal(result["p_fwe"], p_fwe)
    assert np.all(result["p_fwe"] >= result["p_uncorrected"])


def test_a_planted_effect_is_found(tmp_path):
    mask = grid_mask((5, 4, 3))
    rows, maps = make_study(np.random.default_rng(7), n_cases=12, n_controls=12, mask=mask, effect=2.5,
                            effect_voxels=range(10, 18))
    result, _, _ = run_study(tmp_path, rows, maps, mask, n_permutations=300, shard_size=100)
    significant = np.flatnonzero(result["p_fwe"] < 0.05)
    np.testing.assert_array_equal(significant, np.arange(10, 18))
    assert np.all(result["tstat"][significant] > 0)


def test_results_do_not_depend_on_the_split(tmp_path):
    mask = grid_mask((40, 30, 10))  # 12,000 voxels: six tiles
    rows, maps = make_study(np.random.default_rng(2), n_cases=6, n_controls=7, mask=mask)
    whole, null_whole, _ = run_study(tmp_path / "a", rows, maps, mask, n_permutations=150)
    split, null_split, _ = run_study(tmp_path / "b", rows, maps, mask, n_permutations=150, shard_size=37,
                                     n_chunks=4)
    np.testing.assert_array_equal(null_whole, null_split)
    for name in ("p_uncorrected", "p_fwe", "tstat"):
        np.testing.assert_array_equal(whole[name], split[name])


def test_false_positive_rate_stays_near_alpha(tmp_path):
    """With labels unrelated to the maps, some voxel is FWE-significant in about alpha of
    the studies (here 200 small ones), within the binomial 99 % band."""
    rng = np.random.default_rng(4)
    mask = grid_mask((5, 4, 3))
    hits = 0
    n_studies, n_permutations = 200, 99
    for study in range(n_studies):
        rows, maps = make_study(rng, n_cases=6, n_controls=8, mask=mask)
        result, _, _ = run_study(tmp_path / str(study), rows, maps, mask, n_permutations=n_permutations,
                                 seed=study)
        hits += bool((result["p_fwe"] < 0.05).any())
    # With 99 permutations, p < 0.05 needs at most 3 permutation maxima above: 4 % by design.
    low, high = stats.binom.interval(0.99, n_studies, 4 / 100)
    assert low <= hits <= high, hits


def test_tfce_and_t_equal_nilearn_permuted_ols(tmp_path):
    from nilearn.maskers import NiftiMasker
    from nilearn.mass_univariate import permuted_ols

    mask = grid_mask((8, 8, 6))
    rows, maps = make_study(np.random.default_rng(5), mask=mask, effect=1.2,
                            effect_voxels=np.flatnonzero(mask.to_volume(1.0).ravel() * 0 + 1)[:40])
    result, null, _ = run_study(tmp_path, rows, maps, mask, n_permutations=40, tfce=True)
    mask_img = nib.Nifti1Image(np.ones(mask.shape, dtype=np.uint8), mask.affine)
    masker = NiftiMasker(mask_img).fit()
    design = design_of(rows)
    theirs = permuted_ols(design[:, [1]], maps, confounding_vars=design[:, [2]], model_intercept=True,
                          n_perm=0, two_sided_test=True, tfce=True, masker=masker, output_type="dict")
    np.testing.assert_allclose(result["tstat"], theirs["t"][0], rtol=1e-6)
    np.testing.assert_allclose(result["tfce"], theirs["tfce"][0], rtol=1e-6)
    assert null.shape == (40, 3) and np.all(null[:, 2] > 0)
    assert np.all(result["p_fwe_tfce"] >= 1 / 41)


def test_covariates_volume_and_centrality_are_built_in(tmp_path):
    mask = grid_mask((5, 4, 3))
    rng = np.random.default_rng(6)
    rows, maps = make_study(rng, n_cases=5, n_controls=5, mask=mask)
    positions = [np.sort(rng.choice(mask.n_voxels, size=2 + i, replace=False)) for i in range(len(rows))]
    run_study(tmp_path, rows, maps, mask, n_permutations=8, covariates=("volume", "centrality"),
              positions=positions)
    table = np.genfromtxt(tmp_path / "design.tsv", delimiter="\t", names=True, dtype=None, encoding="utf-8")
    np.testing.assert_array_equal(table["volume_raw"], [p.size for p in positions])
    expected = [np.delete(maps[i], positions[i]).mean() for i in range(len(rows))]
    np.testing.assert_allclose(table["centrality_raw"], expected, rtol=1e-8)


def test_a_voxel_constant_over_lesions_has_t_zero(tmp_path):
    mask = grid_mask((5, 4, 3))
    rows, maps = make_study(np.random.default_rng(8), mask=mask)
    maps[:, 3] = 1e4  # the same large value in every lesion's map
    maps[:, 4] = -7.5
    result, _, _ = run_study(tmp_path, rows, maps, mask, n_permutations=20)
    assert result["tstat"][3] == 0 and result["tstat"][4] == 0
    assert result["p_uncorrected"][3] == 1.0


def test_a_voxel_the_design_fits_exactly_gets_a_finite_t_and_counts_its_ties(tmp_path):
    """A map that is a + b * case at one voxel: no residual. Its t is large but finite, and
    every permutation that keeps the cases together reaches it (counted as ties)."""
    mask = grid_mask((5, 4, 3))
    rows, maps = make_study(np.random.default_rng(9), n_cases=3, n_controls=3, mask=mask)
    case = np.array([r.group == "case" for r in rows], dtype=float)
    maps[:, 5] = 2.0 + 3.0 * case
    result, null, _ = run_study(tmp_path, rows, maps, mask, n_permutations=200, covariates=())
    assert np.isfinite(result["tstat"]).all() and result["tstat"][5] > 1e5
    # permutations that give back the case set (or its complement: |t| is two-sided)
    same = sum(set(np.flatnonzero(case[draw_permutation(3, i, 6)])) in (set(np.flatnonzero(case)),
                                                                          set(np.flatnonzero(1 - case)))
               for i in range(200))
    assert same > 0
    assert result["p_uncorrected"][5] == (1 + same) / 201
    assert np.isfinite(null).all()


def test_the_merge_refuses_a_repeated_or_missing_task():
    def shard(p0, p1, v0, v1):
        return NullShard(p0, p1, v0, v1, np.ones(p1 - p0), np.zeros(v1 - v0, dtype=np.int64))

    whole = [shard(0, 10, 0, 2048), shard(0, 10, 2048, 4096)]
    merge_null_shards(whole, 10, 4096)
    with pytest.raises(ValueError, match="overlap"):
        merge_null_shards([whole[0], whole[0]], 10, 4096)  # repeated, and the other chunk missing
    with pytest.raises(ValueError, match="missing"):
        merge_null_shards([whole[0], shard(0, 6, 2048, 4096)], 10, 4096)


def test_the_fwe_threshold_separates_the_significant_statistics():
    null = np.random.default_rng(10).gamma(4.0, size=999)
    for alpha in (0.05, 0.01, 0.2):
        threshold = fwe_threshold(null, alpha)
        values = np.linspace(0, null.max() * 1.1, 5001)
        significant = fwe_p(values, null) < alpha
        assert not significant[values <= threshold].any() and significant[values > threshold * (1 + 1e-9)].all()
    assert fwe_threshold(null[:10], 0.05) is None  # 10 permutations cannot reach p < 0.05
