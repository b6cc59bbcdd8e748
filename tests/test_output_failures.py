"""An outdir that cannot be written, or a disk that fills up, stops the run with a clear
message and leaves every earlier output whole and in place."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shardmap.atomic import atomic_open
from shardmap.errors import InputError, check_writable_folder
from shardmap.task import snakemake_task
from projects import REPO, SNAKEMAKE, TEMPORARY_MARK, assert_every_file_is_whole, write_project
from synthetic import make_dataset

COMMAND = SNAKEMAKE + ["-s", str(REPO / "Snakefile"), "--cores", "2", "--configfile", "my.yaml"]


def mount_tmpfs(folder, options):
    """Mount a tmpfs (root only); skip where this machine does not allow mounts."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the library-level tests cover it")


def unmount(folder):
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_outdir_below_a_file_is_refused_before_anything_runs(tmp_path):
    dataset = make_dataset(tmp_path / "data", np.random.default_rng(40))
    write_project(tmp_path, dataset)
    (tmp_path / "my.yaml").write_text((tmp_path / "my.yaml").read_text().replace("outdir: out", "outdir: results/out"))
    (tmp_path / "results").write_text("a file, not a folder")
    result = subprocess.run(COMMAND, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "outdir 'results/out' cannot be created:" in result.stderr
    assert "results' is a file, not a folder. Choose another outdir." in result.stderr
    assert (tmp_path / "results").read_text() == "a file, not a folder"


def test_read_only_outdir_stops_the_workflow_before_any_job(tmp_path):
    dataset = make_dataset(tmp_path / "data", np.random.default_rng(41))
    write_project(tmp_path, dataset)
    mount_tmpfs(tmp_path / "out", "ro,size=1m")
    try:
        result = subprocess.run(COMMAND, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    finally:
        unmount(tmp_path / "out")
    assert result.returncode != 0
    assert "outdir 'out' is not writable" in result.stderr and "Read-only file system" in result.stderr
    assert "nothing was run" in result.stderr
    assert "Finished jobid" not in result.stderr


def test_full_disk_fails_clearly_and_keeps_earlier_outputs(tmp_path):
    dataset = make_dataset(tmp_path / "data", np.random.default_rng(42))
    write_project(tmp_path, dataset)
    out = tmp_path / "out"
    # room for the small early outputs (mask info, lesion batches, the run check), not for
    # the first connectome shard (about 160 kB)
    mount_tmpfs(out, "size=128k")
    try:
        full = subprocess.run(COMMAND, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert full.returncode != 0
        assert "no space left on the file system holding" in full.stderr, full.stderr[-3000:]
        assert "this task left no partial file" in full.stderr
        assert not [p for p in out.rglob("*") if TEMPORARY_MARK in p.name]
        assert_every_file_is_whole(out)
        earlier = {p: p.stat().st_mtime_ns for p in out.rglob("*")
                   if p.is_file() and "logs" not in p.parts}
        assert any(p.name == "mask.json" for p in earlier) and any(p.suffix == ".npz" for p in earlier)
        # once there is room, the same command finishes and does not redo the earlier tasks
        subprocess.run(["mount", "-o", "remount,size=64m", str(out)], check=True)
        rerun = subprocess.run(COMMAND, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert {p: p.stat().st_mtime_ns for p in earlier} == earlier
        assert (out / "lnm" / "group" / "sensitivity_pos.nii.gz").exists()
    finally:
        unmount(out)


def test_a_failed_write_names_the_output_and_leaves_no_file(tmp_path, monkeypatch):
    """Without a small file system: the write fails as on a full disk."""
    target = tmp_path / "sums.npy"
    real_fsync = os.fsync

    def full_disk(fd):
        real_fsync(fd)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError) as info:
        with atomic_open(target) as handle:
            handle.write(b"x" * 1000)
    assert info.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []


class FakeSnakemake:
    threads = 1
    rule = "lnm_map"
    log = []

    class wildcards:
        @staticmethod
        def items():
            return []


def fake_task(log_path):
    """A stand-in for the snakemake object of a task that logs to ``log_path``."""
    return type("FakeTask", (FakeSnakemake,), {"log": [str(log_path)]})


@pytest.mark.parametrize("code, fragment", [(errno.ENOSPC, "no space left on the file system holding 'x.npy'"),
                                            (errno.EDQUOT, "no space left on the file system holding 'x.npy'"),
                                            (errno.EROFS, "cannot write 'x.npy'"),
                                            (errno.EACCES, "cannot write 'x.npy'")])
def test_task_reports_an_unwritable_output_in_plain_words(tmp_path, capsys, code, fragment):
    with pytest.raises(SystemExit) as info:
        with snakemake_task(fake_task(tmp_path / "task.log")):
            raise OSError(code, os.strerror(code), "x.npy")
    assert info.value.code == 1
    shown = capsys.readouterr().err
    assert fragment in shown and "rerun the same command" in shown
    assert "Traceback" not in shown and "Traceback" in (tmp_path / "task.log").read_text()


def test_bad_input_in_a_task_shows_the_message_alone_and_logs_the_traceback(tmp_path, capsys):
    """Snakemake shows a task's stderr: an InputError gives its message there, without a
    Python traceback (that goes to the task's log, for a bug report), and exit status 1."""
    with pytest.raises(SystemExit) as info:
        with snakemake_task(fake_task(tmp_path / "task.log")):
            raise InputError("lesion 'x' ('x.nii.gz') is empty; fix it.")
    assert info.value.code == 1
    shown = capsys.readouterr().err
    assert "lesion 'x' ('x.nii.gz') is empty; fix it." in shown and "Traceback" not in shown
    log = (tmp_path / "task.log").read_text()
    assert "is empty; fix it." in log and "Traceback" in log and "raise InputError" in log


def test_a_bug_keeps_its_traceback(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with snakemake_task(fake_task(tmp_path / "task.log")):
            1 / 0


def test_other_os_errors_pass_through_unchanged():
    with pytest.raises(FileNotFoundError):
        with snakemake_task(FakeSnakemake):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", "missing.nii.gz")


def test_existing_outdir_is_accepted(tmp_path):
    check_writable_folder(str(tmp_path))
    check_writable_folder(str(tmp_path / "not" / "yet"))
    assert not (tmp_path / "not").exists()
    assert list(Path(tmp_path).iterdir()) == []


SKIP_TEARDOWN_SCRIPT = """
import sys
from shardmap.task import snakemake_task

class Task:
    threads, rule, log = 1, "cpa_infer", [sys.argv[1]]
    class wildcards:
        @staticmethod
        def items():
            return []

with snakemake_task(Task, skip_teardown=True) as log:
    log.info("the work")
    print("printed by the task", end="")  # left in stdout's buffer: the exit must flush it
    if sys.argv[2] == "fail":
        raise ValueError("a bug")
print("after the with block")
"""


@pytest.mark.parametrize("outcome", ["succeed", "fail"])
def test_skip_teardown_ends_a_task_at_once_with_its_log_and_output_flushed(tmp_path, outcome):
    script = tmp_path / "task.py"
    script.write_text(SKIP_TEARDOWN_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "task.log"), outcome], capture_output=True,
                          text=True)
    log = (tmp_path / "task.log").read_text()
    assert "the work" in log
    if outcome == "succeed":
        assert done.returncode == 0
        assert done.stdout == "printed by the task"  # flushed, and nothing after the block ran
        assert log.rstrip().endswith("done")
    else:  # a failing task is not ended early: its traceback and exit status are Python's
        assert done.returncode == 1
        assert "ValueError: a bug" in done.stderr and "done" not in log
