"""Connectomes prepared by lacuna, connectome_quick and Lead-DBS give the shards (so the
maps) that the same data give as NIfTI runs: bit for bit where the stored values are the
same float32, within float16's rounding for connectome_quick. And every way such a
connectome can be wrong stops before any mapping, naming the file and the fix."""

import json

import nibabel as nib
import numpy as np
import pytest

from prepared_connectomes import write_connectome_quick, write_lacuna, write_leaddbs
from shardmap.errors import InputError
from shardmap.lnm.connectome.formats import check_connectome_files, connectome_subjects, write_connectome_mask
from shardmap.lnm.connectome.shards import prepare_shard_files, shard_paths
from shardmap.lnm.nifti import load_mask
from synthetic import make_dataset, write_sheet

SINGLE_RUNS = (("s1", (20,)), ("s2", (20,)), ("s3", (20,)))
EQUAL_RUNS = (("s1", (12, 12)), ("s2", (12,)), ("s3", (12, 12)))


def prepare(tmp_path, name, mask, subjects, **source):
    paths = shard_paths(tmp_path / name)
    info = prepare_shard_files(mask, subjects, paths["data"], paths["norms"], paths["info"], **source)
    return np.load(paths["data"]), np.load(paths["norms"]), info


def assert_same_shard(ours, reference):
    data, norms, info = ours
    ref_data, ref_norms, ref_info = reference
    assert data.dtype == ref_data.dtype and data.shape == ref_data.shape
    assert np.array_equal(data, ref_data)  # bit for bit
    assert np.array_equal(norms, ref_norms)
    assert info.frame_offsets == ref_info.frame_offsets
    assert info.checksums == ref_info.checksums


@pytest.fixture(scope="module")
def single_runs(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("single"), np.random.default_rng(3), SINGLE_RUNS)


@pytest.fixture(scope="module")
def multi_runs(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("multi"), np.random.default_rng(4))


@pytest.fixture(scope="module")
def float16_runs(tmp_path_factory):
    """Runs of 12 frames whose values float16 holds exactly (and the same runs unrounded)."""
    root = tmp_path_factory.mktemp("f16")
    raw = make_dataset(root / "raw", np.random.default_rng(5), EQUAL_RUNS)
    rounded = make_dataset(root / "rounded", np.random.default_rng(5), EQUAL_RUNS)
    for _, runs in rounded["subjects"]:
        for run in runs:
            img = nib.load(run)
            data = np.asarray(img.dataobj, dtype=np.float32).astype(np.float16).astype(np.float32)
            nib.save(nib.Nifti1Image(data, img.affine), run)
    return raw, rounded


# -- lacuna ---------------------------------------------------------------------------

@pytest.mark.parametrize("indices", ["V3", "3V"])
def test_lacuna_equals_nifti_runs(single_runs, tmp_path, indices):
    write_lacuna(tmp_path / "lacuna", single_runs["mask"], single_runs["subjects"], indices=indices)
    subjects = connectome_subjects("lacuna", tmp_path / "lacuna")
    assert [s.subject_id for s in subjects] == ["pos0000", "pos0001", "pos0002"]
    assert [s.position for s in subjects] == [0, 1, 0]  # two files of two and one subjects
    ours = prepare(tmp_path, "lacuna-shard", single_runs["mask"], subjects, format="lacuna", path=tmp_path / "lacuna")
    reference = prepare(tmp_path, "nifti-shard", single_runs["mask"], single_runs["subjects"])
    assert_same_shard(ours, reference)


def test_lacuna_flipped_mask_gives_the_same_shard(single_runs, tmp_path):
    write_lacuna(tmp_path / "flipped", single_runs["mask"], single_runs["subjects"], flip=True)
    subjects = connectome_subjects("lacuna", tmp_path / "flipped")
    ours = prepare(tmp_path, "flipped-shard", single_runs["mask"], subjects, format="lacuna", path=tmp_path / "flipped")
    assert_same_shard(ours, prepare(tmp_path, "nifti-shard", single_runs["mask"], single_runs["subjects"]))
    # Its own mask, written when lnm.connectome.mask is left out, holds the same places.
    write_connectome_mask("lacuna", tmp_path / "flipped", tmp_path / "own.nii.gz")
    own, mask = load_mask(tmp_path / "own.nii.gz"), load_mask(single_runs["mask"])
    assert own.affine[0, 0] == -mask.affine[0, 0]
    world = lambda m: {tuple(x) for x in np.round(m.ijk @ m.affine[:3, :3].T + m.affine[:3, 3], 3)}  # noqa: E731
    assert world(own) == world(mask)


def test_extra_connectome_voxels_are_ignored(single_runs, tmp_path):
    grid = nib.load(single_runs["mask"]).shape
    write_lacuna(tmp_path / "whole", single_runs["mask"], single_runs["subjects"], mask_inside=np.ones(grid, bool))
    subjects = connectome_subjects("lacuna", tmp_path / "whole")
    ours = prepare(tmp_path, "whole-shard", single_runs["mask"], subjects, format="lacuna", path=tmp_path / "whole")
    assert_same_shard(ours, prepare(tmp_path, "nifti-shard", single_runs["mask"], single_runs["subjects"]))


def test_mask_voxels_missing_from_the_connectome_stop_the_run(single_runs, tmp_path):
    inside = np.asarray(nib.load(single_runs["mask"]).dataobj) > 0
    smaller = inside.copy()
    smaller[tuple(np.argwhere(inside)[:7].T)] = False
    write_lacuna(tmp_path / "small", single_runs["mask"], single_runs["subjects"], mask_inside=smaller)
    subjects = connectome_subjects("lacuna", tmp_path / "small")
    with pytest.raises(InputError, match=r"7 of the \d+ voxels of the brain mask .* not voxels of the connectome"):
        check_connectome_files("lacuna", tmp_path / "small", None, single_runs["mask"],
                               [s.as_params() for s in subjects], tmp_path / "runs.tsv")
    assert not (tmp_path / "runs.tsv").exists()


def test_lacuna_nan_in_a_subject_stops_its_shard(single_runs, tmp_path):
    files = write_lacuna(tmp_path / "nan", single_runs["mask"], single_runs["subjects"])
    import h5py

    with h5py.File(files[0], "r+") as handle:
        handle["timeseries"][1, 4, 10] = np.nan
    subjects = connectome_subjects("lacuna", tmp_path / "nan")
    with pytest.raises(InputError, match=r"subject 'pos0001'.*gsp1000_chunk_000.h5.*NaN or Inf"):
        prepare(tmp_path, "nan-shard", single_runs["mask"], subjects, format="lacuna", path=tmp_path / "nan")
    assert not (tmp_path / "nan-shard.npy").exists()


def test_truncated_lacuna_file_stops_the_run(single_runs, tmp_path):
    files = write_lacuna(tmp_path / "cut", single_runs["mask"], single_runs["subjects"])
    data = files[1].read_bytes()
    files[1].write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"gsp1000_chunk_001.h5' is not a readable HDF5 file.*copy it again"):
        connectome_subjects("lacuna", tmp_path / "cut")


def test_subset_sheet_selects_exactly_its_subjects(single_runs, tmp_path):
    write_lacuna(tmp_path / "lacuna", single_runs["mask"], single_runs["subjects"])
    sheet = write_sheet(tmp_path / "subset.tsv", ["subject_id", "age"], [("pos0002", "61"), ("pos0000", "70")])
    subjects = connectome_subjects("lacuna", tmp_path / "lacuna", subset_sheet=sheet)
    assert [(s.subject_id, s.position) for s in subjects] == [("pos0002", 0), ("pos0000", 0)]
    ours = prepare(tmp_path, "subset", single_runs["mask"], subjects, format="lacuna", path=tmp_path / "lacuna")
    picked = [single_runs["subjects"][2], single_runs["subjects"][0]]
    assert_same_shard(ours, prepare(tmp_path, "nifti-subset", single_runs["mask"], picked))
    unknown = write_sheet(tmp_path / "unknown.tsv", ["subject_id"], [("pos0000",), ("sub-7",)])
    with pytest.raises(InputError, match=r"names 1 subject\(s\) .* does not have: \['sub-7'\].*pos0000, pos0001"):
        connectome_subjects("lacuna", tmp_path / "lacuna", subset_sheet=unknown)


# -- connectome_quick ---------------------------------------------------------------------

def test_connectome_quick_equals_nifti_runs(float16_runs, tmp_path):
    _, rounded = float16_runs
    write_connectome_quick(tmp_path / "cq", rounded["mask"], rounded["subjects"])
    subjects = connectome_subjects("connectome_quick", tmp_path / "cq")
    assert [s.subject_id for s in subjects] == ["s1", "s2", "s3"]  # the norms files are not subjects
    ours = prepare(tmp_path, "cq-shard", rounded["mask"], subjects, format="connectome_quick", path=tmp_path / "cq",
                   run_frames=12)
    assert_same_shard(ours, prepare(tmp_path, "nifti-shard", rounded["mask"], rounded["subjects"]))


def test_connectome_quick_within_float16_rounding_of_float32_runs(float16_runs, tmp_path):
    raw, _ = float16_runs
    write_connectome_quick(tmp_path / "cq", raw["mask"], raw["subjects"])
    subjects = connectome_subjects("connectome_quick", tmp_path / "cq")
    data, _, info = prepare(tmp_path, "cq", raw["mask"], subjects, format="connectome_quick", path=tmp_path / "cq",
                            run_frames=12)
    ref, ref_norms, _ = prepare(tmp_path, "nifti", raw["mask"], raw["subjects"])
    for s, (start, stop) in enumerate(zip(info.frame_offsets[:-1], info.frame_offsets[1:])):
        # Rounding each raw value by at most half a float16 step (delta) moves a centred
        # time course by at most delta * sqrt(T), its unit vector by twice that over its norm.
        frames = stop - start
        raw_max = max(np.abs(np.asarray(nib.load(r).dataobj)).max() for r in raw["subjects"][s][1])
        delta = np.spacing(np.float16(raw_max)).astype(np.float64) / 2
        live = ref_norms[s, 0] > 0
        bound = np.divide(2 * delta * np.sqrt(frames), ref_norms[s, 0], out=np.zeros_like(ref_norms[s, 0]),
                          where=live)
        gap = np.linalg.norm(data[start:stop].astype(np.float64) - ref[start:stop], axis=0)
        assert (gap[live] <= bound[live] + 1e-5).all()
        assert gap[live].max() > 0  # the rounding is there, and bounded


def test_connectome_quick_refusals(float16_runs, tmp_path):
    _, rounded = float16_runs
    folder = write_connectome_quick(tmp_path / "cq", rounded["mask"], rounded["subjects"])
    subjects = [s.as_params() for s in connectome_subjects("connectome_quick", folder)]
    with pytest.raises(InputError, match=r"s1.npy' has 24 time points, which lnm.connectome.run_frames \(10\)"):
        check_connectome_files("connectome_quick", folder, 10, rounded["mask"], subjects, tmp_path / "runs.tsv")
    # Another mask than the one the files were made with: V differs.
    img = nib.load(rounded["mask"])
    bigger = np.ones(img.shape, dtype=np.uint8)
    nib.save(nib.Nifti1Image(bigger, img.affine), tmp_path / "other.nii.gz")
    with pytest.raises(InputError, match=r"s1.npy' has \d+ voxels but the brain mask .* has 1820.*lnm.connectome.mask"):
        check_connectome_files("connectome_quick", folder, 12, tmp_path / "other.nii.gz", subjects,
                               tmp_path / "runs.tsv")
    # A truncated file.
    data = (folder / "s2.npy").read_bytes()
    (folder / "s2.npy").write_bytes(data[:-100])
    with pytest.raises(InputError, match=r"s2.npy' cannot be read as a .npy array.*copy it again"):
        check_connectome_files("connectome_quick", folder, 12, rounded["mask"], subjects, tmp_path / "runs.tsv")


def test_pfc_toolkit_folder_is_refused(tmp_path):
    for name in ("AvgR", "T"):
        (tmp_path / "pfc" / name).mkdir(parents=True)
    np.save(tmp_path / "pfc" / "0_AvgR.npy", np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(InputError, match=r"pfc-toolkit precomputed connectome.*no per-subject time series"):
        connectome_subjects("connectome_quick", tmp_path / "pfc")


# -- Lead-DBS -------------------------------------------------------------------------------

@pytest.mark.parametrize("formatversion, version, legacy", [(1, "5", False), (2, "7.3", False), (1, "7.3", True),
                                                            (2, "5", True)])
def test_leaddbs_equals_nifti_runs(multi_runs, tmp_path, formatversion, version, legacy):
    folder = write_leaddbs(tmp_path / "GSP 1000 (Yeo 2011)", multi_runs["mask"], multi_runs["subjects"],
                           formatversion=formatversion, version=version, legacy=legacy)
    subjects = connectome_subjects("leaddbs", folder)
    assert [s.subject_id for s in subjects] == [s for s, _ in multi_runs["subjects"]]
    assert [len(s.runs) for s in subjects] == [len(runs) for _, runs in multi_runs["subjects"]]
    rows = check_connectome_files("leaddbs", folder, None, multi_runs["mask"], [s.as_params() for s in subjects],
                                  tmp_path / "runs.tsv")
    assert [row["frames"] for row in rows] == [20, 15, 12, 18, 10, 10, 25]
    ours = prepare(tmp_path, "lead-shard", multi_runs["mask"], subjects, format="leaddbs", path=folder)
    assert_same_shard(ours, prepare(tmp_path, "nifti-shard", multi_runs["mask"], multi_runs["subjects"]))
    write_connectome_mask("leaddbs", folder, tmp_path / "own.nii.gz")
    own, mask = load_mask(tmp_path / "own.nii.gz"), load_mask(multi_runs["mask"])
    np.testing.assert_allclose(own.affine, mask.affine)  # SPM's 1-based matrix undone
    assert np.array_equal(own.flat_index, mask.flat_index)


def test_leaddbs_matrix_connectome_is_refused(multi_runs, tmp_path):
    folder = write_leaddbs(tmp_path / "matrix", multi_runs["mask"], multi_runs["subjects"], matrix=True)
    with pytest.raises(InputError, match=r"fMRI_matrix.*no per-subject time series.*fMRI_timecourses"):
        connectome_subjects("leaddbs", folder)


def test_leaddbs_wrong_formatversion_is_named(multi_runs, tmp_path):
    folder = write_leaddbs(tmp_path / "lead", multi_runs["mask"], multi_runs["subjects"], formatversion=2)
    info = json.loads((folder / "dataset_info.json").read_text())
    (folder / "dataset_info.json").write_text(json.dumps(dict(info, formatversion=1)))
    subjects = [s.as_params() for s in connectome_subjects("leaddbs", folder)]
    with pytest.raises(InputError, match=r"s1_run-1.mat': gmtc is 20 x \d+, but formatversion 1 means V x T"):
        check_connectome_files("leaddbs", folder, None, multi_runs["mask"], subjects, tmp_path / "runs.tsv")


def test_leaddbs_missing_run_file_is_named(multi_runs, tmp_path):
    folder = write_leaddbs(tmp_path / "lead", multi_runs["mask"], multi_runs["subjects"])
    (folder / "vol" / "s2_run-2.mat").unlink()
    subjects = [s.as_params() for s in connectome_subjects("leaddbs", folder)]
    with pytest.raises(InputError, match=r"s2_run-2.mat' does not exist; vol.subIDs names it"):
        check_connectome_files("leaddbs", folder, None, multi_runs["mask"], subjects, tmp_path / "runs.tsv")


def test_a_subject_constant_at_every_voxel_stops_its_shard(single_runs, tmp_path):
    """An empty or placeholder subject (all zeros, say) would add r = 0 everywhere and
    shrink every map towards 0: refused, named, for prepared formats and NIfTI runs alike."""
    files = write_lacuna(tmp_path / "flat", single_runs["mask"], single_runs["subjects"])
    import h5py

    with h5py.File(files[0], "r+") as handle:
        handle["timeseries"][1] = 0.0
    subjects = connectome_subjects("lacuna", tmp_path / "flat")
    with pytest.raises(InputError, match=r"subject 'pos0001' .* is constant in time at every brain voxel"):
        prepare(tmp_path, "flat-shard", single_runs["mask"], subjects, format="lacuna", path=tmp_path / "flat")
    img = nib.load(single_runs["subjects"][1][1][0])
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.full(img.shape, 3.0, dtype=np.float32), img.affine), flat)
    with pytest.raises(InputError, match=r"subject 's2' .*flat.nii.gz\) is constant in time at every brain voxel"):
        prepare(tmp_path, "flat-nifti", single_runs["mask"], [("s1", single_runs["subjects"][0][1]), ("s2", [flat])])
