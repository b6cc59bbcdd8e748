"""Results do not depend on how the work is split, and partial sums merge in any order."""

import itertools

import numpy as np
import pytest

from pipeline import run_library
from shardmap.lnm.stats import SufficientStats, maps_from_sums, merge


@pytest.fixture(scope="module")
def split_results(dataset, tmp_path_factory):
    splits = [(1, 1), (2, 3), (4, 5), (3, 2)]
    return {split: run_library(dataset, tmp_path_factory.mktemp(f"split-{split[0]}-{split[1]}"), *split)
            for split in splits}


def test_maps_do_not_depend_on_batch_or_shard_size(split_results):
    baseline = split_results[(1, 1)]
    for split, maps in split_results.items():
        for lesion_id, lesion_maps in maps.items():
            for name in ("AvgR_Fz", "AvgR"):
                diff = np.abs(lesion_maps[name] - baseline[lesion_id][name]).max()
                assert diff <= 1e-6, f"{split} {lesion_id} {name}: {diff}"
            t_rel = np.abs(lesion_maps["T"] - baseline[lesion_id]["T"]) / np.maximum(
                1.0, np.abs(baseline[lesion_id]["T"]))
            assert t_rel.max() <= 1e-5, f"{split} {lesion_id} T: {t_rel.max()}"


def random_parts(rng, n_parts=4, n_lesions=3, n_voxels=50):
    parts = []
    for k in range(n_parts):
        n_subjects = int(rng.integers(1, 6))
        z = rng.normal(size=(n_subjects, n_lesions, n_voxels))
        sums = np.stack([z.sum(axis=0), (z ** 2).sum(axis=0)], axis=1)
        parts.append((z, SufficientStats(["a", "b", "c"], np.full(n_lesions, n_subjects), sums,
                                         [f"p{k}-s{i}" for i in range(n_subjects)])))
    return parts


def test_merge_is_order_independent_and_matches_direct_statistics():
    rng = np.random.default_rng(7)
    parts = random_parts(rng)
    all_z = np.concatenate([z for z, _ in parts], axis=0)
    results = []
    for order in itertools.permutations(range(len(parts))):
        merged = merge(SufficientStats(p.lesion_ids, p.n.copy(), p.sums.copy(), list(p.subject_ids))
                       for p in (parts[i][1] for i in order))
        results.append(merged)
        assert merged.n.tolist() == [all_z.shape[0]] * 3
    for merged in results[1:]:
        np.testing.assert_allclose(merged.sums, results[0].sums, rtol=1e-13, atol=1e-12)
    fz, _, t = maps_from_sums(results[0].n[:, None], results[0].sum_z, results[0].sum_z2)
    np.testing.assert_allclose(fz, all_z.mean(axis=0), rtol=1e-12, atol=1e-12)
    expected_t = all_z.mean(axis=0) / (all_z.std(axis=0, ddof=1) / np.sqrt(all_z.shape[0]))
    np.testing.assert_allclose(t, expected_t, rtol=1e-10)


def test_merge_is_associative():
    rng = np.random.default_rng(8)
    (_, a), (_, b), (_, c), _ = random_parts(rng)
    copy = lambda s: SufficientStats(s.lesion_ids, s.n.copy(), s.sums.copy(), list(s.subject_ids))  # noqa: E731
    left = merge([merge([copy(a), copy(b)]), copy(c)])
    right = merge([copy(a), merge([copy(b), copy(c)])])
    np.testing.assert_allclose(left.sums, right.sums, rtol=1e-13, atol=1e-12)
    assert left.n.tolist() == right.n.tolist()
    assert sorted(left.subject_ids) == sorted(right.subject_ids)


def test_merge_refuses_overlapping_subjects_and_other_lesions():
    rng = np.random.default_rng(9)
    (_, a), (_, b), _, _ = random_parts(rng)
    with pytest.raises(ValueError, match="counted twice"):
        merge([a, SufficientStats(a.lesion_ids, a.n.copy(), a.sums.copy(), list(a.subject_ids))])
    other = SufficientStats(["x", "y", "z"], b.n, b.sums, b.subject_ids)
    with pytest.raises(ValueError, match="different lesion batches"):
        merge([a, other])


def test_t_is_zero_where_sd_is_zero_and_maps_are_finite():
    n = np.array([[5.0]])
    sum_z = np.array([[5 * 8.4056, 0.0, 1.0]])
    sum_z2 = np.array([[5 * 8.4056 ** 2, 0.0, 1.0]])
    fz, r, t = maps_from_sums(n, sum_z, sum_z2)
    assert t[0, 0] == 0.0 and t[0, 1] == 0.0
    assert np.isfinite(t).all() and np.isfinite(fz).all() and np.isfinite(r).all()
