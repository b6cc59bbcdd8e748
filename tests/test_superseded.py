"""Outputs of an earlier run that the config no longer asks for are moved aside, under their
paths below outdir, with a note; nothing else is touched."""

import os

import pytest

from shardmap.superseded import move_aside, read_outputs, superseded, write_outputs


def touch(path, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_the_files_an_earlier_list_has_and_this_one_lacks_are_moved_aside(tmp_path):
    out = tmp_path / "out"
    kept = touch(out / "lnm" / "specificity" / "tstat.nii.gz")
    tfce = touch(out / "lnm" / "specificity" / "tfce.nii.gz", "tfce")
    gone = str(out / "lnm" / "maps" / "deleted_T.nii.gz")  # listed before, deleted by hand since
    mine = touch(out / "lnm" / "specificity" / "my_notes.txt")  # never listed: not ours
    write_outputs(out / "outputs.txt", [kept, tfce, gone])
    assert read_outputs(out / "outputs.txt") == sorted([kept, tfce, gone])
    dropped = superseded(out / "outputs.txt", [kept])
    assert dropped == [tfce]
    folder = move_aside(dropped, out, now=0)
    assert not os.path.exists(tfce) and os.path.exists(kept) and os.path.exists(mine)
    moved = os.path.join(folder, "lnm", "specificity", "tfce.nii.gz")
    assert open(moved).read() == "tfce"
    assert "no longer" in open(os.path.join(folder, "NOTE.txt")).read()
    assert os.path.dirname(folder) == str(out / "superseded")


def test_nothing_to_move_makes_no_folder(tmp_path):
    assert move_aside([], tmp_path) is None
    assert superseded(tmp_path / "outputs.txt", []) == []
    assert not (tmp_path / "superseded").exists()


def test_a_file_outside_outdir_is_never_moved(tmp_path):
    elsewhere = touch(tmp_path / "elsewhere.txt")
    with pytest.raises(ValueError, match="is not inside outdir"):
        move_aside([elsewhere], tmp_path / "out")
    assert os.path.exists(elsewhere)
