"""Every bad input stops with an error naming the file (and id) and saying how to fix it,
and leaves no output under its final name."""

import gzip
import os

import nibabel as nib
import numpy as np
import pytest

from shardmap.lnm.connectome.shards import prepare_shard_files, shard_paths
from shardmap.errors import InputError
from shardmap.lnm.lesions import prepare_lesion_batch_files, read_qc_table
from shardmap.lnm.nifti import load_mask
from shardmap.lnm.sheets import read_lesions, read_subjects
from synthetic import MASK_AFFINE, MASK_SHAPE, make_mask, save, write_sheet


def no_outputs(folder):
    return [p for p in os.listdir(folder) if not p.startswith("input")]


def prepare_shard_expect(tmp_path, mask, subjects, *fragments):
    out = tmp_path / "out"
    out.mkdir()
    paths = shard_paths(out / "shard-0")
    with pytest.raises(InputError) as info:
        prepare_shard_files(mask, subjects, paths["data"], paths["norms"], paths["info"])
    for fragment in fragments:
        assert fragment in str(info.value)
    assert os.listdir(out) == [], "a failed task left files behind"
    return str(info.value)


def prepare_lesions_expect(tmp_path, mask, lesions, *fragments):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InputError) as info:
        prepare_lesion_batch_files(mask, lesions, out / "batch.npz", out / "batch.qc.tsv")
    for fragment in fragments:
        assert fragment in str(info.value)
    assert os.listdir(out) == [], "a failed task left files behind"
    return str(info.value)


def run_img(n_frames, rng, affine=MASK_AFFINE, shape=MASK_SHAPE):
    return nib.Nifti1Image(rng.standard_normal(shape + (n_frames,)).astype(np.float32), affine)


@pytest.fixture
def mask(tmp_path):
    return save(make_mask(), tmp_path / "input-mask.nii.gz")


@pytest.fixture
def good_run(tmp_path):
    return save(run_img(10, np.random.default_rng(0)), tmp_path / "input-good.nii.gz")


# ---- connectome runs -------------------------------------------------------------------

def test_missing_run(tmp_path, mask, good_run):
    prepare_shard_expect(tmp_path, mask, [("s1", [good_run]), ("s2", [str(tmp_path / "nope.nii.gz")])],
                         "nope.nii.gz", "s2", "does not exist")


def test_unreadable_run(tmp_path, mask, good_run):
    junk = tmp_path / "input-junk.nii.gz"
    junk.write_bytes(b"this is not a nifti file")
    prepare_shard_expect(tmp_path, mask, [("s1", [good_run]), ("s2", [str(junk)])],
                         "input-junk.nii.gz", "s2", "not a readable NIfTI")


def test_truncated_run(tmp_path, mask, good_run):
    whole = gzip.decompress(open(good_run, "rb").read())
    cut = tmp_path / "input-cut.nii.gz"
    cut.write_bytes(gzip.compress(whole[: len(whole) // 2]))
    prepare_shard_expect(tmp_path, mask, [("s1", [good_run]), ("s2", [str(cut)])],
                         "input-cut.nii.gz", "s2", "truncated")


def test_run_on_another_grid_shape(tmp_path, mask, good_run):
    other = save(run_img(10, np.random.default_rng(1), shape=(14, 13, 11)), tmp_path / "input-shape.nii.gz")
    prepare_shard_expect(tmp_path, mask, [("s1", [good_run]), ("s2", [other])],
                         "input-shape.nii.gz", "s2", "not on the brain mask's grid", "Resample")


def test_run_on_another_grid_affine(tmp_path, mask, good_run):
    ras = MASK_AFFINE.copy()
    ras[0, 0] = 4.0  # same shape, but RAS instead of radiological: would mirror the brain
    other = save(run_img(10, np.random.default_rng(1), affine=ras), tmp_path / "input-ras.nii.gz")
    prepare_shard_expect(tmp_path, mask, [("s1", [good_run]), ("s2", [other])],
                         "input-ras.nii.gz", "not on the brain mask's grid")


def test_run_that_is_3d(tmp_path, mask, good_run):
    flat = save(nib.Nifti1Image(np.ones(MASK_SHAPE, np.float32), MASK_AFFINE), tmp_path / "input-3d.nii.gz")
    prepare_shard_expect(tmp_path, mask, [("s1", [good_run]), ("s2", [flat])], "input-3d.nii.gz", "4D")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_run_with_nan_or_inf(tmp_path, mask, good_run, bad):
    data = np.random.default_rng(2).standard_normal(MASK_SHAPE + (10,)).astype(np.float32)
    inside = np.argwhere(np.asarray(make_mask().dataobj) > 0)[3]
    data[tuple(inside)][4] = bad
    path = save(nib.Nifti1Image(data, MASK_AFFINE), tmp_path / "input-nan.nii.gz")
    prepare_shard_expect(tmp_path, mask, [("s1", [good_run]), ("s2", [path])],
                         "input-nan.nii.gz", "s2", "NaN or Inf")


def test_subject_with_fewer_than_three_time_points(tmp_path, mask, good_run):
    short = save(run_img(2, np.random.default_rng(3)), tmp_path / "input-short.nii.gz")
    prepare_shard_expect(tmp_path, mask, [("s1", [good_run]), ("s2", [short])],
                         "s2", "2 time point", "at least 3")


def test_run_with_a_single_frame(tmp_path, mask, good_run):
    one = save(run_img(1, np.random.default_rng(3)), tmp_path / "input-one.nii.gz")
    prepare_shard_expect(tmp_path, mask, [("s1", [good_run]), ("s2", [one])], "input-one.nii.gz", "at least 2")


def test_two_short_runs_make_a_valid_subject(tmp_path, mask, good_run):
    a = save(run_img(2, np.random.default_rng(4)), tmp_path / "input-a.nii.gz")
    b = save(run_img(2, np.random.default_rng(5)), tmp_path / "input-b.nii.gz")
    paths = shard_paths(tmp_path / "shard")
    info = prepare_shard_files(mask, [("s1", [good_run]), ("s2", [a, b])], paths["data"], paths["norms"],
                               paths["info"])
    assert info.frame_offsets == [0, 10, 14]


def test_empty_mask(tmp_path, good_run):
    empty = save(nib.Nifti1Image(np.zeros(MASK_SHAPE, np.uint8), MASK_AFFINE), tmp_path / "input-empty.nii.gz")
    prepare_shard_expect(tmp_path, empty, [("s1", [good_run])], "input-empty.nii.gz", "no voxel > 0")


# ---- lesions ---------------------------------------------------------------------------

def sphere_lesion(tmp_path, name, centre_ijk, radius=1.5, shape=MASK_SHAPE):
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    data = (((ijk - np.asarray(centre_ijk)) ** 2).sum(axis=-1) <= radius ** 2).astype(np.uint8)
    return save(nib.Nifti1Image(data, MASK_AFFINE), tmp_path / name)


def test_lesion_outside_the_mask(tmp_path, mask):
    inside = sphere_lesion(tmp_path, "input-in.nii.gz", (7, 6, 5))
    outside = sphere_lesion(tmp_path, "input-out.nii.gz", (0, 0, 0), radius=1.0)
    message = prepare_lesions_expect(tmp_path, mask, [("ok", inside, None), ("far", outside, None)],
                                     "'far'", "input-out.nii.gz", "no voxel inside the brain mask")
    assert "same space" in message or "remove it" in message


def test_empty_lesion(tmp_path, mask):
    empty = save(nib.Nifti1Image(np.zeros(MASK_SHAPE, np.uint8), MASK_AFFINE), tmp_path / "input-0.nii.gz")
    prepare_lesions_expect(tmp_path, mask, [("nothing", empty, None)], "'nothing'", "input-0.nii.gz", "empty")


def test_lesion_that_is_not_3d(tmp_path, mask):
    data = np.zeros(MASK_SHAPE + (2,), np.uint8)
    data[7, 6, 5] = 1
    four_d = save(nib.Nifti1Image(data, MASK_AFFINE), tmp_path / "input-4d.nii.gz")
    prepare_lesions_expect(tmp_path, mask, [("l4d", four_d, None)], "'l4d'", "input-4d.nii.gz", "3D")


def test_lesion_with_trailing_singleton_axis_is_accepted(tmp_path, mask):
    data = np.zeros(MASK_SHAPE + (1,), np.uint8)
    data[7, 6, 5] = 1
    path = save(nib.Nifti1Image(data, MASK_AFFINE), tmp_path / "input-3d1.nii.gz")
    batch = prepare_lesion_batch_files(mask, [("l", path, None)], tmp_path / "b.npz", tmp_path / "b.tsv")
    assert batch.positions.size == 1


def test_unreadable_lesion(tmp_path, mask):
    junk = tmp_path / "input-junk.nii"
    junk.write_bytes(b"\x00" * 10)
    prepare_lesions_expect(tmp_path, mask, [("bad", str(junk), None)], "'bad'", "input-junk.nii",
                           "not a readable NIfTI")


def test_partly_outside_lesion_is_reported_not_refused(tmp_path, mask):
    edge = sphere_lesion(tmp_path, "input-edge.nii.gz", (0, 6, 5), radius=2.5)
    prepare_lesion_batch_files(mask, [("edge", edge, None)], tmp_path / "b.npz", tmp_path / "b.tsv")
    (row,) = read_qc_table(tmp_path / "b.tsv")
    assert 0.0 < float(row["fraction_outside_mask"]) < 1.0


# ---- sample sheets ---------------------------------------------------------------------

def test_empty_sheet(tmp_path):
    sheet = tmp_path / "lesions.tsv"
    sheet.write_text("")
    with pytest.raises(InputError, match="lesions.tsv' is empty"):
        read_lesions(sheet)


def test_sheet_with_header_only(tmp_path):
    sheet = write_sheet(tmp_path / "subjects.tsv", ["subject_id", "path"], [])
    with pytest.raises(InputError, match="subjects.tsv' has a header but no rows"):
        read_subjects(sheet)


def test_duplicate_lesion_ids(tmp_path, mask):
    sheet = write_sheet(tmp_path / "lesions.tsv", ["lesion_id", "path"], [("a", mask), ("b", mask), ("a", mask)])
    with pytest.raises(InputError, match=r"lesion_id 'a' appears on lines 2 and 4; lesion ids must be unique"):
        read_lesions(sheet)


def test_duplicate_run(tmp_path, good_run):
    sheet = write_sheet(tmp_path / "subjects.tsv", ["subject_id", "path"], [("s1", good_run), ("s2", good_run)])
    with pytest.raises(InputError, match="is listed on lines 2 and 3"):
        read_subjects(sheet)


@pytest.mark.parametrize("bad_id", ["a/b", "../x", "with space", "-lead", "é", "a" * 200])
def test_lesion_ids_with_path_or_odd_characters(tmp_path, mask, bad_id):
    sheet = write_sheet(tmp_path / "lesions.tsv", ["lesion_id", "path"], [(bad_id, mask)])
    with pytest.raises(InputError, match="lesion_id .* is not valid; lesion_id: unique id"):
        read_lesions(sheet)


def test_missing_file_in_sheet(tmp_path):
    sheet = write_sheet(tmp_path / "lesions.tsv", ["lesion_id", "path"], [("a", "missing/a.nii.gz")])
    with pytest.raises(InputError, match=r"lesion 'a'.*file 'missing/a.nii.gz' does not exist"):
        read_lesions(sheet)


def test_missing_sheet(tmp_path):
    with pytest.raises(InputError, match="sheet .*nothing.tsv' does not exist"):
        read_lesions(tmp_path / "nothing.tsv")


def test_sheet_with_wrong_columns(tmp_path, mask):
    sheet = write_sheet(tmp_path / "lesions.tsv", ["id", "path"], [("a", mask)])
    with pytest.raises(InputError, match=r"lacks the required column\(s\) \['lesion_id'\].*names \['id', 'path'\]"):
        read_lesions(sheet)
    sheet = write_sheet(tmp_path / "subjects.tsv", ["subject_id", "path", "site"], [("a", mask, "x")])
    with pytest.raises(InputError, match=r"unknown column\(s\) \['site'\]"):
        read_subjects(sheet)
    sheet = write_sheet(tmp_path / "lesions2.tsv", ["lesion_id"], [("a",)])
    with pytest.raises(InputError, match=r"lacks the required column\(s\) \['path'\]"):
        read_lesions(sheet)


def test_comma_separated_sheet(tmp_path, mask):
    sheet = tmp_path / "lesions.tsv"
    sheet.write_text(f"lesion_id,path\na,{mask}\n")
    with pytest.raises(InputError, match="separated by tabs"):
        read_lesions(sheet)


def test_group_column_must_be_complete(tmp_path, mask):
    sheet = write_sheet(tmp_path / "lesions.tsv", ["lesion_id", "path", "group"], [("a", mask, "x"), ("b", mask, "")])
    with pytest.raises(InputError, match="no group for"):
        read_lesions(sheet)


def test_single_subject_is_refused(tmp_path, good_run):
    sheet = write_sheet(tmp_path / "subjects.tsv", ["subject_id", "path"], [("s1", good_run)])
    with pytest.raises(InputError, match="at least 2 connectome subjects"):
        read_subjects(sheet)


def test_runs_of_a_subject_are_grouped(tmp_path, good_run, mask):
    sheet = write_sheet(tmp_path / "subjects.tsv", ["subject_id", "path"],
                        [("s1", good_run), ("s2", mask), ("s1", str(tmp_path / "input-mask.nii.gz"))])
    with pytest.raises(InputError, match="listed on lines"):
        read_subjects(sheet)
    other = save(nib.Nifti1Image(np.zeros((2, 2, 2, 3), np.float32), np.eye(4)), tmp_path / "input-r2.nii.gz")
    sheet = write_sheet(tmp_path / "subjects2.tsv", ["subject_id", "path"],
                        [("s1", good_run), ("s2", mask), ("s1", other)])
    subjects = read_subjects(sheet)
    assert [s.subject_id for s in subjects] == ["s1", "s2"]
    assert subjects[0].runs == (good_run, other)


def test_sheet_saved_with_a_byte_order_mark(tmp_path, mask):
    sheet = tmp_path / "lesions.tsv"
    sheet.write_bytes("\ufefflesion_id\tpath\na\t".encode() + mask.encode() + b"\n")
    assert [les.lesion_id for les in read_lesions(sheet)] == ["a"]


def test_sheets_exported_by_a_spreadsheet_program_are_read(tmp_path, mask):
    """Windows line ends, a byte order mark, quoted fields and empty columns at the end of
    every line (a trailing tab in the header too) are what spreadsheet programs export."""
    sheet = tmp_path / "lesions.tsv"
    sheet.write_bytes(("\ufefflesion_id\tpath\tgroup\t\t\r\n"
                       f'a\t"{mask}"\tg1\t\t\r\n'
                       f"b\t{mask}\tg2\t\r\n\t\t\t\t\r\n").encode())
    lesions = read_lesions(sheet)
    assert [(les.lesion_id, les.path, les.group) for les in lesions] == [("a", mask, "g1"), ("b", mask, "g2")]


def test_an_unnamed_column_is_named_by_its_place(tmp_path, mask):
    sheet = tmp_path / "lesions.tsv"
    sheet.write_text(f"lesion_id\t\tpath\na\tx\t{mask}\n")
    with pytest.raises(InputError, match=r"lesions.tsv', line 1: column 2 has no name \(two tabs in a row\?\)"):
        read_lesions(sheet)
    sheet.write_text(f"lesion_id\tpath\t\na\t{mask}\tstroke\n")
    with pytest.raises(InputError, match=r"line 2: value 'stroke' in column 3, but line 1 \(the header\) names "
                                         r"only 2 column\(s\)"):
        read_lesions(sheet)


def test_a_directory_where_a_file_belongs_is_called_a_directory(tmp_path, mask):
    folder = tmp_path / "lesions"
    folder.mkdir()
    sheet = write_sheet(tmp_path / "lesions.tsv", ["lesion_id", "path"], [("a", str(folder))])
    with pytest.raises(InputError, match=r"line 2: lesion 'a' file '.*lesions' is a directory, not a file"):
        read_lesions(sheet)
    prepare_lesions_expect(tmp_path, mask, [("a", str(folder), None)], "is a directory, not a file")
    with pytest.raises(InputError, match=r"brain mask '.*lesions' is a directory, not a file"):
        load_mask(folder)


def test_a_nifti_named_against_its_compression_is_told_to_rename(tmp_path, mask):
    plain = nib.Nifti1Image(np.ones((3, 3, 3), np.uint8), MASK_AFFINE)
    nib.save(plain, str(tmp_path / "input-plain.nii"))
    gzipped = tmp_path / "input-gzipped.nii"
    gzipped.write_bytes(gzip.compress((tmp_path / "input-plain.nii").read_bytes()))
    prepare_lesions_expect(tmp_path, mask, [("g", str(gzipped), None)],
                           "is gzip-compressed but named 'input-gzipped.nii'; rename it to 'input-gzipped.nii.gz'")
    named_gz = tmp_path / "input-plain-named.nii.gz"
    named_gz.write_bytes((tmp_path / "input-plain.nii").read_bytes())
    with pytest.raises(InputError, match=r"is named 'input-plain-named.nii.gz' but is not gzip-compressed; "
                                         r"rename it to 'input-plain-named.nii'"):
        load_mask(named_gz)


def test_stale_temporary_of_a_killed_task_is_removed(tmp_path):
    from shardmap.atomic import atomic_open

    target = tmp_path / "shard-0000.npy"
    stale = tmp_path / ".shard-0000.npy.tmp-abc123.npy"
    stale.write_bytes(b"half a file")
    neighbour = tmp_path / ".shard-0000.norms.npy.tmp-xyz.npy"
    neighbour.write_bytes(b"another task's file")
    with atomic_open(target) as handle:
        handle.write(b"complete")
    assert target.read_bytes() == b"complete"
    assert not stale.exists()
    assert neighbour.exists()


def test_cuda_device_without_a_gpu_is_named_with_the_fix(monkeypatch):
    from shardmap import devices
    from shardmap.lnm import mapping

    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    with pytest.raises(InputError, match="lnm.device is 'cuda'.*set lnm.device to 'auto' or 'cpu'"):
        mapping.resolve_device("cuda")
    assert mapping.resolve_device("auto") == "cpu"
    with pytest.raises(InputError, match="lnm.device is 'gpu'; use one of auto, cpu, cuda"):
        mapping.resolve_device("gpu")
