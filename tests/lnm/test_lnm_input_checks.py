"""The lesion arm's up-front checks (rule lnm_check_inputs, and each shard's preparation):
every bad run of the connectome is reported before any mapping, naming the file and
subject, and a damaged prepared shard is named with the fix."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from projects import snakemake, write_project
from shardmap.errors import InputError
from shardmap.lnm.connectome.reader import ShardReader
from shardmap.lnm.connectome.runs import check_run_headers_files
from shardmap.lnm.connectome.shards import prepare_shard_files, shard_paths
from synthetic import MASK_AFFINE, MASK_SHAPE, make_dataset, make_mask, save


def run_img(n_frames, rng, affine=MASK_AFFINE, shape=MASK_SHAPE):
    return nib.Nifti1Image(rng.standard_normal(shape + (n_frames,)).astype(np.float32), affine)


@pytest.fixture
def mask(tmp_path):
    return save(make_mask(), tmp_path / "mask.nii.gz")


def test_run_headers_are_listed_when_all_are_good(tmp_path, mask):
    good = save(run_img(10, np.random.default_rng(0)), tmp_path / "good.nii.gz")
    other = save(run_img(4, np.random.default_rng(1)), tmp_path / "other.nii.gz")
    check_run_headers_files(mask, [("s1", [good]), ("s2", [good, other])], tmp_path / "runs.tsv")
    rows = (tmp_path / "runs.tsv").read_text().splitlines()
    assert rows[0] == "subject_id\tpath\tshape\tframes\ttr_s\ttr_note\tnote"
    assert rows[3].split("\t")[0] == "s2" and rows[3].split("\t")[3] == "4"


def timed_run(path, tr, unit="sec", n_frames=8, seed=0):
    img = run_img(n_frames, np.random.default_rng(seed))
    img.header.set_zooms((4.0, 4.0, 4.0, tr))
    img.header.set_xyzt_units("mm", unit)
    return save(img, path)


def test_repetition_times_are_read_in_seconds_and_recorded(tmp_path, mask):
    runs = [timed_run(tmp_path / "a.nii.gz", 3.0), timed_run(tmp_path / "b.nii.gz", 3000.0, "msec"),
            timed_run(tmp_path / "c.nii.gz", 3.0, "unknown"), timed_run(tmp_path / "d.nii.gz", 0.0)]
    check_run_headers_files(mask, [("s1", runs[:2]), ("s2", runs[2:])], tmp_path / "runs.tsv")
    rows = [line.split("\t") for line in (tmp_path / "runs.tsv").read_text().splitlines()[1:]]
    assert [row[4] for row in rows] == ["3", "3", "3", ""]
    assert rows[3][5] == "TR not recorded in the header" and not any(row[5] for row in rows[:3])


def test_runs_of_one_subject_with_different_repetition_times_stop_the_check(tmp_path, mask):
    fast, slow = timed_run(tmp_path / "fast.nii.gz", 0.72), timed_run(tmp_path / "slow.nii.gz", 3.0)
    good = timed_run(tmp_path / "good.nii.gz", 3.0)
    with pytest.raises(InputError) as info:
        check_run_headers_files(mask, [("s1", [good]), ("s2", [slow, fast])], tmp_path / "runs.tsv")
    text = str(info.value)
    assert "subject 's2' has runs with different repetition times (TR)" in text
    assert f"'{slow}' 3 s, '{fast}' 0.72 s" in text and "subject 's1'" not in text
    assert not (tmp_path / "runs.tsv").exists()


def test_a_subject_with_another_tr_than_the_majority_is_named_not_refused(tmp_path, mask, caplog):
    subjects = [(f"s{k}", [timed_run(tmp_path / f"r{k}.nii.gz", 3.0, seed=k)]) for k in range(4)]
    subjects.append(("odd", [timed_run(tmp_path / "odd.nii.gz", 2.0)]))
    with caplog.at_level("WARNING"):
        check_run_headers_files(mask, subjects, tmp_path / "runs.tsv")
    assert "1 subject(s) have another repetition time (TR) than the majority's 3 s: odd (2 s)" in caplog.text
    rows = [line.split("\t") for line in (tmp_path / "runs.tsv").read_text().splitlines()[1:]]
    assert [row[5] for row in rows] == [""] * 4 + ["TR differs from the majority's 3 s"]


def test_every_bad_run_is_reported_at_once(tmp_path, mask):
    rng = np.random.default_rng(2)
    good = save(run_img(10, rng), tmp_path / "good.nii.gz")
    ras = MASK_AFFINE.copy()
    ras[0, 0] = 4.0
    mirrored = save(run_img(10, rng, affine=ras), tmp_path / "mirrored.nii.gz")
    flat = save(nib.Nifti1Image(np.ones(MASK_SHAPE, np.float32), MASK_AFFINE), tmp_path / "flat.nii.gz")
    one_frame = save(run_img(1, rng), tmp_path / "one-frame.nii.gz")
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not an image")
    short = save(run_img(2, rng), tmp_path / "short.nii.gz")
    subjects = [("s1", [good]), ("s2", [mirrored]), ("s3", [flat]), ("s4", [one_frame]),
                ("s5", [str(junk)]), ("s6", [str(tmp_path / "missing.nii.gz")]), ("s7", [short])]
    with pytest.raises(InputError) as info:
        check_run_headers_files(mask, subjects, tmp_path / "runs.tsv")
    text = str(info.value)
    assert text.startswith("6 problem(s) in the connectome's runs; nothing was mapped")
    for fragment in ("subject 's2' '" + str(mirrored) + "' is not on the brain mask's grid",
                     "subject 's3' '" + str(flat) + "' has shape " + str(MASK_SHAPE) + "; a run must be a 4D NIfTI",
                     "subject 's4' '" + str(one_frame) + "' has 1 frame",
                     "junk.nii.gz' is not a readable NIfTI image",
                     "missing.nii.gz' does not exist",
                     "subject 's7' has 2 time point(s)"):
        assert fragment in text, fragment
    assert not (tmp_path / "runs.tsv").exists()


# --- through the workflow: nothing heavy starts ----------------------------------------

def test_a_bad_run_stops_the_workflow_before_any_mapping(tmp_path):
    """The check names the bad run, and the preparation of its shard refuses it before
    reading any data; shards of good runs may be prepared meanwhile (they are needed
    anyway and kept), but nothing is mapped."""
    dataset = make_dataset(tmp_path / "data", np.random.default_rng(31))
    ras = MASK_AFFINE.copy()
    ras[0, 0] = 4.0
    bad = save(run_img(12, np.random.default_rng(3), affine=ras), tmp_path / "data" / "s6_run-1.nii.gz")
    dataset["subjects"].append(("s6", [bad]))
    write_project(tmp_path, dataset)  # shards of 2 subjects: s6 is alone in the last
    result = snakemake(tmp_path)
    assert result.returncode != 0
    assert "run of subject 's6'" in result.stderr and "s6_run-1.nii.gz' is not on the brain mask's grid" in (
        result.stderr)
    out = tmp_path / "out" / "lnm"
    last = f"{(len(dataset['subjects']) - 1) // 2:04d}"
    assert not list(out.glob(f"connectome/shard-{last}*")), "the bad run's shard was prepared"
    assert not (tmp_path / "out" / "logs" / "lnm" / "map").exists(), "a mapping task ran"
    assert not (out / "checked" / "runs.tsv").exists()


def test_a_shard_preparation_checks_its_runs_headers_first(tmp_path, mask):
    """Each shard's preparation lists every bad run of its subjects at once, before reading data."""
    rng = np.random.default_rng(6)
    good = save(run_img(10, rng), tmp_path / "good.nii.gz")
    one_frame = save(run_img(1, rng), tmp_path / "one-frame.nii.gz")
    fast, slow = timed_run(tmp_path / "fast.nii.gz", 0.72), timed_run(tmp_path / "slow.nii.gz", 3.0)
    paths = shard_paths(tmp_path / "shard-0000")
    with pytest.raises(InputError) as info:
        prepare_shard_files(mask, [("s1", [good]), ("s2", [one_frame]), ("s3", [slow, fast])], paths["data"],
                            paths["norms"], paths["info"])
    text = str(info.value)
    assert text.startswith("2 problem(s) in the connectome's runs") and "subject 's2'" in text
    assert "subject 's3' has runs with different repetition times (TR)" in text
    assert not any(Path(path).exists() for path in paths.values())


# --- a damaged prepared shard (truncated or emptied by hand) ---------------------------

def test_truncated_or_empty_prepared_shard(tmp_path, mask):
    run = save(run_img(10, np.random.default_rng(5)), tmp_path / "run.nii.gz")
    paths = shard_paths(tmp_path / "shard-0000")
    prepare_shard_files(mask, [("s1", [run]), ("s2", [run])], paths["data"], paths["norms"], paths["info"])
    data = Path(paths["data"]).read_bytes()
    Path(paths["data"]).write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="shard-0000.npy' is truncated; delete the prepared connectome"):
        ShardReader(paths)
    Path(paths["data"]).write_bytes(b"")
    with pytest.raises(InputError, match="shard-0000.npy' is empty or damaged"):
        ShardReader(paths)
