"""Write files so that a reader sees either nothing or the complete file.

Every output of a task is written under a temporary name in the same folder, flushed
to disk and renamed into place; a task killed half-way leaves no file under the final
name, so Snakemake (and a user) never mistakes a fragment for a result.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    The temporary name keeps the final suffixes (``.nii.gz``, ``.npy``) so that
    libraries choosing a format by extension behave as for the final name. On an
    exception the temporary file is removed and the final path is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    # A task killed by the scheduler (SIGKILL) cannot clean up; its successor does.
    prefix = f".{path.name}.tmp-"
    for stale in path.parent.glob(glob.escape(prefix) + "*" + suffix):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.filename is None:
            err.filename = str(path)  # a failed write() names no file; name the output
        raise


@contextlib.contextmanager
def atomic_open(path, mode="wb"):
    """Open a temporary file next to ``path`` for writing; rename it into place on success."""
    with atomic_path(path) as tmp:
        with open(tmp, mode) as handle:
            yield handle
            handle.flush()
