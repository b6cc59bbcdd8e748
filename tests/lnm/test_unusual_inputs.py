"""Files as real studies hold them: other NIfTI storage (scaled integers, qform only,
NIfTI-2, big-endian, uncompressed, extra singleton axes, 0/255 masks) gives the same
lesion voxels and the same prepared connectome as the plain float copy, by the rules the
README states; what cannot be read stops with a message that names the fix."""

import nibabel as nib
import numpy as np
import pytest

from shardmap.errors import InputError
from shardmap.lnm.connectome.reader import ShardReader
from shardmap.lnm.connectome.shards import prepare_shard_files, shard_paths
from shardmap.lnm.lesions import prepare_lesion_batch_files, read_qc_table
from shardmap.lnm.sheets import read_lesions
from synthetic import MASK_AFFINE, MASK_SHAPE, lesion_on_grid, make_mask, make_subject_runs, save, write_sheet

RAS3 = np.diag([3.0, 3.0, 3.0, 1.0])
RAS3[:3, 3] = [-31.3, -29.6, -17.2]


@pytest.fixture
def mask(tmp_path):
    return save(make_mask(), tmp_path / "mask.nii.gz")


@pytest.fixture
def sphere():
    return lesion_on_grid((4.0, 2.0, 3.0), 7.5, RAS3, (22, 20, 14))


def positions(mask, path, tmp_path, rules=None):
    batch = prepare_lesion_batch_files(mask, [("l", str(path), None)], tmp_path / "b.npz", tmp_path / "b.tsv", rules)
    return batch.positions_of(0)


def test_a_0_255_mask_asks_for_a_rule_and_maps_with_threshold(tmp_path, mask, sphere):
    plain = save(sphere, tmp_path / "plain.nii.gz")
    scaled = np.asarray(sphere.dataobj).astype(np.uint8) * 255
    path = save(nib.Nifti1Image(scaled, RAS3), tmp_path / "mask255.nii.gz")
    with pytest.raises(InputError, match=r"values other than 0 and 1 \(from 255 to 255\).*lnm.lesion_values: "
                                         r"threshold"):
        positions(mask, path, tmp_path)
    np.testing.assert_array_equal(positions(mask, path, tmp_path, {"lesion_values": "threshold"}),
                                  positions(mask, plain, tmp_path))


def test_other_storage_of_the_same_lesion_selects_the_same_voxels(tmp_path, mask, sphere):
    data = np.asarray(sphere.dataobj)
    expected = positions(mask, save(sphere, tmp_path / "plain.nii.gz"), tmp_path)
    assert expected.size > 10
    # int16 stored as 2 with a slope of 0.5: the values are 1 once scaled
    scaled = nib.Nifti1Image((data * 2).astype(np.int16), RAS3)
    scaled.header.set_slope_inter(0.5, 0.0)
    # only a qform (sform code 0), as some converters write
    qform_only = nib.Nifti1Image(data.astype(np.uint8), None)
    qform_only.set_qform(RAS3, code=1)
    qform_only.set_sform(None, code=0)
    # big-endian float64
    big_endian = nib.Nifti1Image(data.astype(">f8"), RAS3)
    variants = {"scaled.nii.gz": scaled, "qform.nii.gz": qform_only, "big-endian.nii.gz": big_endian,
                "nifti2.nii.gz": nib.Nifti2Image(data.astype(np.float32), RAS3),
                "plain.nii": nib.Nifti1Image(data.astype(np.uint8), RAS3),
                "five-d.nii.gz": nib.Nifti1Image(data.astype(np.uint8)[..., None, None], RAS3)}
    for name, img in variants.items():
        np.testing.assert_array_equal(positions(mask, save(img, tmp_path / name), tmp_path), expected, err_msg=name)


def test_an_analyze_lesion_is_refused_with_the_conversion(tmp_path, mask, sphere):
    path = tmp_path / "lesion.img"
    nib.save(nib.AnalyzeImage(np.asarray(sphere.dataobj).astype(np.uint8), RAS3), str(path))
    with pytest.raises(InputError, match=r"lesion 'l' '.*lesion.img' is a \w*AnalyzeImage, not NIfTI; convert it to "
                                         r"\.nii\.gz"):
        positions(mask, path, tmp_path)


def test_a_run_stored_as_scaled_integers_is_prepared_like_its_float_copy(tmp_path, mask):
    (run,) = make_subject_runs(np.random.default_rng(1), make_mask(), [12])
    values = np.asarray(run.dataobj, dtype=np.float64)
    stored = np.round(values * 20).astype(np.int16)
    scaled = nib.Nifti1Image(stored, MASK_AFFINE)
    scaled.header.set_slope_inter(0.05, 0.0)
    # the header keeps the slope as float32, so the float copy uses that slope
    as_float = nib.Nifti1Image(stored * np.float64(np.float32(0.05)), MASK_AFFINE)
    prepared = []
    for name, img in (("int16", scaled), ("float", as_float)):
        path = save(img, tmp_path / f"{name}.nii.gz")
        paths = shard_paths(tmp_path / f"shard-{name}")
        prepare_shard_files(mask, [("s1", [path]), ("s2", [path])], paths["data"], paths["norms"], paths["info"])
        with ShardReader(paths) as reader:
            frames, norm, _ = reader.read(0)
            prepared.append((frames.copy(), norm.copy()))
    np.testing.assert_array_equal(prepared[0][0], prepared[1][0])
    np.testing.assert_allclose(prepared[0][1], prepared[1][1], rtol=1e-12)
    assert MASK_SHAPE == run.shape[:3]


def test_a_sheet_in_another_encoding_names_utf8(tmp_path, mask):
    sheet = tmp_path / "lesions.tsv"
    sheet.write_bytes(f"lesion_id\tpath\nl\u00e9sion\t{mask}\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"lesions.tsv' cannot be read .*it must be a UTF-8 tab-separated text file"):
        read_lesions(sheet)


def test_a_column_named_twice_is_refused(tmp_path, mask):
    sheet = write_sheet(tmp_path / "lesions.tsv", ["lesion_id", "path", "path"], [("a", mask, "other.nii.gz")])
    with pytest.raises(InputError, match=r"line 1: column\(s\) \['path'\] appear more than once in the header"):
        read_lesions(sheet)


def test_a_path_starting_with_a_tilde_is_in_the_home_folder(tmp_path, mask, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    sheet = write_sheet(tmp_path / "lesions.tsv", ["lesion_id", "path"], [("a", "~/mask.nii.gz")])
    assert read_lesions(sheet)[0].path == str(tmp_path / "mask.nii.gz")


def test_a_lesion_below_the_threshold_everywhere_names_its_largest_value(tmp_path, mask, sphere):
    soft = nib.Nifti1Image(np.asarray(sphere.dataobj).astype(np.float32) * 0.3, RAS3)
    path = save(soft, tmp_path / "soft.nii.gz")
    with pytest.raises(InputError, match=r"has no voxel >= lnm.lesion_threshold \(0.5\); its largest value is "
                                         r"0.3. Lower lnm.lesion_threshold"):
        positions(mask, path, tmp_path, {"lesion_values": "threshold"})
    positions(mask, path, tmp_path, {"lesion_values": "threshold", "lesion_threshold": 0.25})
    (row,) = read_qc_table(tmp_path / "b.tsv")
    assert row["lesion_values"] == "threshold>=0.25" and row["value_max"] == "0.3"
