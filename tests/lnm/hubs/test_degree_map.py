"""The connectome's degree map against a brute-force float64 V x V correlation matrix."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipeline import prepare_shards
from reference import degree_map
from shardmap.errors import InputError
from shardmap.lnm.hubs.degree import add_degree_to_stored_shard, merge_degree_files, write_degree_maps


def brute_force_degree(dataset):
    """The mask, and the degree and degree_Fz maps from each subject's V x V correlation matrix."""
    inside = np.asarray(nib.load(dataset["mask"]).dataobj) > 0
    degrees = degree_map(dataset["mask"], dataset["subjects"])
    return inside, degrees.mean(axis=0), np.arctanh(degrees).mean(axis=0)


@pytest.mark.parametrize("shard_size,dtype", [(1, "float32"), (2, "float32"), (5, "float16")])
def test_degree_map_equals_the_brute_force_correlation_matrix(dataset, tmp_path, shard_size, dtype):
    shards = prepare_shards(dataset, tmp_path, shard_size, dtype)
    paths = {"degree": tmp_path / "degree.nii.gz", "degree_Fz": tmp_path / "degree_Fz.nii.gz"}
    write_degree_maps([(s["degree"], s["info"]) for s in shards], dataset["mask"], paths)
    inside, degree, degree_fz = brute_force_degree(dataset)
    got = np.asarray(nib.load(paths["degree"]).dataobj, dtype=np.float64)
    got_fz = np.asarray(nib.load(paths["degree_Fz"]).dataobj, dtype=np.float64)
    assert np.abs(degree).max() > 0.05  # the synthetic networks give the voxels a degree
    np.testing.assert_allclose(got[inside], degree, atol=1e-5)
    np.testing.assert_allclose(got_fz[inside], degree_fz, atol=1e-5)
    assert not got[~inside].any()


def test_a_subject_in_two_shards_is_refused(dataset, tmp_path):
    shards = prepare_shards(dataset, tmp_path, 2)
    pairs = [(shards[0]["degree"], shards[0]["info"])] * 2
    with pytest.raises(InputError, match="in another shard too"):
        merge_degree_files(pairs, np.load(shards[0]["degree"]).shape[1])


@pytest.mark.parametrize("dtype,tolerance", [("float32", 1e-5), ("float16", 5e-5)])
def test_degree_of_a_shard_prepared_without_it_comes_from_its_stored_time_courses(dataset, tmp_path, dtype,
                                                                                 tolerance):
    """An outdir prepared before the degree map existed: the sums come from the stored data."""
    shards = prepare_shards(dataset, tmp_path, 2, dtype)
    for shard in shards:
        Path(shard["degree"]).unlink()
        add_degree_to_stored_shard(shard["data"].removesuffix(".npy"))
    n_voxels = np.load(shards[0]["norms"]).shape[2]
    sums, subjects = merge_degree_files([(s["degree"], s["info"]) for s in shards], n_voxels)
    inside, degree, degree_fz = brute_force_degree(dataset)
    assert len(subjects) == len(dataset["subjects"])
    np.testing.assert_allclose(sums[0] / len(subjects), degree, atol=tolerance)
    np.testing.assert_allclose(sums[1] / len(subjects), degree_fz, atol=tolerance)


def test_degree_sums_of_another_mask_are_refused_by_name(dataset, tmp_path):
    shards = prepare_shards(dataset, tmp_path, 5)
    np.save(shards[0]["degree"], np.zeros((3, 17)))
    with pytest.raises(InputError, match=r"degree sums '.*shard-0.degree.npy' have shape \(3, 17\).*delete the "
                                         r"prepared connectome"):
        merge_degree_files([(shards[0]["degree"], shards[0]["info"])], np.load(shards[0]["norms"]).shape[2])
