"""The hub controls on a synthetic connectome with one planted hub and one non-hub network:
the degree map finds the hub, maps of lesions anywhere resemble it, and the random-lesion
null singles out the network that the real lesions share."""

import nibabel as nib
import numpy as np
import pytest

from pipeline import map_and_merge, prepare_shards
from shardmap.errors import InputError
from shardmap.lnm.hubs.degree import merge_degree_files
from shardmap.lnm.hubs.hub_bias import lesion_rows, spatial_correlation
from shardmap.lnm.hubs.null_lesions import make_null_batch
from shardmap.lnm.hubs.null_maps import null_group_maps, null_groups, percentile_among
from shardmap.lnm.hubs.null_plan import null_plan
from shardmap.lnm.lesions import prepare_lesion_batch_files
from shardmap.lnm.nifti import load_mask
from shardmap.lnm.residual_maps import degree_residual
from shardmap.lnm.sheets import chunks
from synthetic import make_mask, save

THRESHOLD = 8.0
HUB_CENTRE, NETWORK_CENTRES = np.array([9.5, 6.0, 5.0]), (np.array([3.0, 4.0, 4.0]), np.array([4.0, 9.0, 5.0]))


def near(ijk, centre, radius):
    return ((ijk - centre) ** 2).sum(axis=1) <= radius ** 2


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Twelve subjects: a global signal loads 1.2 on the hub and 0.35 elsewhere; a network
    signal loads 1.2 on two blobs away from the hub. Six real lesions lie in the first
    blob; 60 null lesions are their shapes moved anywhere."""
    root = tmp_path_factory.mktemp("hubs")
    rng = np.random.default_rng(11)
    mask_img = make_mask()
    mask_path = save(mask_img, root / "mask.nii.gz")
    inside = np.asarray(mask_img.dataobj) > 0
    ijk = np.argwhere(inside)
    hub = near(ijk, HUB_CENTRE, 2.2)
    network = near(ijk, NETWORK_CENTRES[0], 1.8) | near(ijk, NETWORK_CENTRES[1], 1.8)
    subjects = []
    for s in range(12):
        signals = rng.standard_normal((2, 80))
        series = np.outer(np.where(hub, 1.2, 0.35), signals[0]) + np.outer(1.2 * network, signals[1])
        series += rng.standard_normal(series.shape) + 50.0
        volume = np.zeros(inside.shape + (80,), dtype=np.float32)
        volume[inside] = series
        subjects.append((f"s{s}", [save(nib.Nifti1Image(volume, mask_img.affine), root / f"s{s}.nii.gz")]))
    lesions = []
    blob = ijk[near(ijk, NETWORK_CENTRES[0], 1.8)]
    for index in range(6):
        volume = np.zeros(inside.shape, dtype=np.uint8)
        chosen = blob[rng.choice(len(blob), size=5, replace=False)]
        volume[tuple(chosen.T)] = 1
        lesions.append((f"L{index}", save(nib.Nifti1Image(volume, mask_img.affine), root / f"L{index}.nii.gz"), "net"))
    dataset = {"mask": mask_path, "subjects": subjects, "lesions": lesions}
    shards = prepare_shards(dataset, root, subject_shard_size=5)
    batch = root / "real.npz"
    prepare_lesion_batch_files(mask_path, lesions, batch, root / "real.qc.tsv")
    real = map_and_merge(batch, shards, root, "real")
    mask = load_mask(mask_path)
    sums, subject_ids = merge_degree_files([(s["degree"], s["info"]) for s in shards], mask.n_voxels)
    plan = null_plan([(lesion_id, group) for lesion_id, _, group in lesions], 60)

    def map_nulls(batch_size, name):
        """(merged sums, batch file) of each null batch."""
        files, batches = [], []
        for b, part in enumerate(chunks(plan, batch_size)):
            nulls, _ = make_null_batch(part, [batch], mask, "shift", seed=0)
            path = root / f"{name}-{b}.npz"
            nulls.save(path)
            files.append(map_and_merge(path, shards, root, f"{name}-{b}"))
            batches.append(str(path))
        return files, batches

    nulls, null_batches = map_nulls(7, "null7")
    return {"mask": mask, "hub": hub, "network": network, "degree": sums[0] / len(subject_ids),
            "real": [real], "plan": plan, "nulls": nulls, "null_batches": null_batches,
            "nulls_other_batches": map_nulls(60, "null60")[0], "groups": {les[0]: les[2] for les in lesions}}


def test_the_degree_map_peaks_in_the_hub(study):
    degree, hub = study["degree"], study["hub"]
    assert degree[hub].min() > np.percentile(degree[~hub], 99)


def test_maps_of_lesions_anywhere_resemble_the_degree_map(study):
    """The null lesions are the study's lesions moved anywhere: their maps correlate with
    the degree map, as van den Heuvel et al. (2025) report for real connectomes."""
    rows = lesion_rows(study["nulls"], study["null_batches"], study["degree"], {})
    r = np.array([row["r_with_degree"] for row in rows])
    print("null lesions' r with the degree map:", np.round(np.percentile(r, [0, 50, 100]), 3))
    assert len(r) == 60 and np.median(r) > 0.5


def test_the_real_sensitivity_stands_out_from_the_null_only_in_the_lesions_network(study):
    groups = study["groups"]
    sources = {null_id: source for null_id, source, _, _ in study["plan"]}
    maps, rows = null_group_maps(study["real"], study["nulls"], groups, sources, THRESHOLD, 400, 0,
                                 study["degree"])
    percentile = maps[(None, "sensitivity_vs_null")]
    network, hub = study["network"], study["hub"]
    print("percentile in the network, hub, elsewhere:", [np.round(np.percentile(percentile[where], [5, 50, 95]), 1)
                                                         for where in (network, hub, ~(network | hub))])
    assert np.mean(percentile[network] >= 95) > 0.8
    assert np.mean(percentile[~network] >= 95) < 0.02
    assert percentile[hub].max() < 95
    # the null lesions' maps resemble the hubs more than the real group's do
    summary = {row["group"]: row for row in rows}
    print({key: summary["all"][key] for key in ("r_null_mean_AvgR_Fz_degree", "r_real_mean_AvgR_Fz_degree")})
    assert summary["all"]["r_null_mean_AvgR_Fz_degree"] > summary["all"]["r_real_mean_AvgR_Fz_degree"]
    assert summary["net"]["n_null_lesions"] == 60 and summary["net"]["n_lesions"] == 6


def test_null_group_maps_do_not_depend_on_the_null_batches(study):
    sources = {null_id: source for null_id, source, _, _ in study["plan"]}
    first, _ = null_group_maps(study["real"], study["nulls"], study["groups"], sources, THRESHOLD, 200, 4)
    second, _ = null_group_maps(study["real"], study["nulls_other_batches"], study["groups"], sources,
                                THRESHOLD, 200, 4)
    for key in first:
        np.testing.assert_allclose(first[key], second[key], atol=1e-6, err_msg=str(key))


def test_too_few_null_lesions_per_lesion_are_refused(study):
    """With k null lesions per lesion the null groups' spread is (k - 1) / k of the true one."""
    sources = {null_id: source for null_id, source, _, index in study["plan"] if index < 9}
    with pytest.raises(InputError, match="need at least 10 per lesion"):
        null_group_maps(study["real"], study["nulls"], study["groups"], sources, THRESHOLD, 50, 0)


def test_null_groups_take_one_null_lesion_of_each_real_lesion():
    nulls_of = {"a": [0, 1, 2], "b": [3, 4], "c": [5]}
    selection = null_groups(["a", "b", "c"], nulls_of, 300, 1, "all")
    for members in nulls_of.values():
        assert np.all(selection[:, members].sum(axis=1) == 1)
    assert set(np.flatnonzero(selection[:, [0, 1, 2]].sum(axis=0))) == {0, 1, 2}  # every choice drawn


def test_percentile_counts_ties_as_half():
    null_counts = np.array([[0, 1, 3], [1, 1, 3], [2, 1, 3], [3, 1, 3]])
    real = np.array([2, 1, 0])
    expected = [100 * (2 + 0.5) / 4, 50.0, 0.0]
    np.testing.assert_allclose(percentile_among(real, null_counts), expected)


def test_spatial_correlation_and_degree_residual_match_numpy():
    rng = np.random.default_rng(2)
    degree, noise = rng.standard_normal(500), rng.standard_normal(500)
    values = 0.3 + 2.0 * degree + noise
    assert spatial_correlation(values, degree) == pytest.approx(np.corrcoef(values, degree)[0, 1], rel=1e-12)
    fit = np.arange(500) >= 20  # fitted outside a "lesion" of 20 voxels
    design = np.column_stack([np.ones(fit.sum()), degree[fit]])
    coef = np.linalg.lstsq(design, values[fit], rcond=None)[0]
    residual = degree_residual(values, degree, fit)
    np.testing.assert_allclose(residual, values - coef[0] - coef[1] * degree, atol=1e-10)
    assert abs(spatial_correlation(residual[fit], degree[fit])) < 1e-10
    assert np.isnan(spatial_correlation(np.zeros(10), np.arange(10.0)))
