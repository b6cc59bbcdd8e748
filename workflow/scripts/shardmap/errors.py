"""The exception types users see: bad input, and outputs that cannot be written."""

from __future__ import annotations

import errno
import os
import tempfile

# errno values that mean "this file system will not take the output", not a bug
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


class InputError(ValueError):
    """Bad user input: the message names the file, id or key and says how to fix it."""


MAX_PROBLEMS_SHOWN = 20


def problems_error(headline, problems):
    """One InputError for several bad inputs found in one pass: ``headline``, then the first
    MAX_PROBLEMS_SHOWN of ``problems`` as a list, and how many more there are."""
    shown = "\n".join(f"  - {p}" for p in problems[:MAX_PROBLEMS_SHOWN])
    more = f"\n  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more" if len(problems) > MAX_PROBLEMS_SHOWN else ""
    return InputError(f"{headline}:\n{shown}{more}")


class OutputError(OSError):
    """An output could not be written (disk full, quota, read-only or unwritable folder)."""


def write_error_kind(err):
    """'no space', 'not writable' or None for an exception raised while writing."""
    code = getattr(err, "errno", None)
    text = str(err)
    if code in NO_SPACE or "No space left on device" in text or "Disk quota exceeded" in text:
        return "no space"
    if code in NOT_WRITABLE or "Read-only file system" in text or "Permission denied" in text:
        return "not writable"
    return None


def describe_write_error(err):
    """The message a user sees when an output cannot be written, or None if ``err`` is
    not such an error."""
    kind = write_error_kind(err)
    if kind is None:
        return None
    where = getattr(err, "filename", None) or "an output file"
    if kind == "no space":
        return (f"no space left on the file system holding '{where}' ({err}). Free space there, or "
                "set outdir to a file system with room, then rerun the same command: outputs "
                "finished before are complete and kept, and this task left no partial file.")
    return (f"cannot write '{where}' ({err}). Make the folder writable, or set outdir to a "
            "writable folder, then rerun the same command.")


def check_writable_folder(folder, key="outdir"):
    """Raise InputError unless files can be created in ``folder`` (or, if it does not exist
    yet, in its nearest existing parent). Leaves nothing behind: the probe is an anonymous
    temporary file."""
    probe = os.path.abspath(folder)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise InputError(f"{key} '{folder}' cannot be created: '{probe}' is a file, not a folder. "
                         f"Choose another {key}.")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise InputError(f"{key} '{folder}' is not writable: creating a file in '{probe}' failed ({err}). "
                         f"Fix its permissions or choose another {key}; nothing was run.") from None
