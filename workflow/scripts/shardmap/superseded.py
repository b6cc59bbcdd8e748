"""Outputs of an earlier run that the config no longer asks for, moved aside.

Each complete run writes ``{outdir}/outputs.txt``, every file its config asks for. When a
later config asks for fewer (an option turned off, such as lnm.specificity.tfce or
lnm.degree_regression; a lesion, group or counterfactual removed; the report's figures
off), the files of the earlier list that the new one lacks would stay under their final
names, looking like results of this config. The run that changes the list moves them to
``{outdir}/superseded/<date-time>/`` at its end, under their paths below outdir, with a
note saying why, instead of deleting them. Only files of the earlier list move: nothing
else in outdir is touched.

Standard library only.
"""

from __future__ import annotations

import os
import time

from .atomic import atomic_open

NOTE = """These files were outputs of an earlier run of this outdir that the config no longer
asks for (an option turned off; a lesion, group or counterfactual removed; the report's
figures switched off). The run of {when} moved them here, under their paths below the
outdir, instead of deleting them or leaving them beside the current results. Delete this
folder when you no longer need them.
"""


def read_outputs(path):
    """The files of an outputs list (one path per line); none when the list does not exist."""
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [line.rstrip("\n") for line in handle if line.strip()]


def superseded(previous_list, current):
    """The files of ``previous_list`` (an outputs.txt) that ``current`` lacks and that exist."""
    wanted = {os.path.normpath(path) for path in current}
    return sorted(path for path in read_outputs(previous_list)
                  if os.path.normpath(path) not in wanted and os.path.isfile(path))


def move_aside(files, outdir, now=None):
    """Move ``files`` (each inside ``outdir``) to outdir/superseded/<date-time>/ under their
    paths below outdir, with NOTE.txt; returns the folder, or None when there is nothing to
    move. A file outside outdir is never touched (ValueError)."""
    files = [path for path in files if os.path.isfile(path)]
    if not files:
        return None
    outdir = os.path.abspath(outdir)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    folder = os.path.join(outdir, "superseded", stamp)
    for path in files:
        relative = os.path.relpath(os.path.abspath(path), outdir)
        if relative.startswith(os.pardir):
            raise ValueError(f"'{path}' is not inside outdir '{outdir}'")
        target = os.path.join(folder, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(path, target)
    with atomic_open(os.path.join(folder, "NOTE.txt"), "w") as handle:
        handle.write(NOTE.format(when=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))))
    return folder


def write_outputs(path, current):
    """The outputs list of this run: one path per line, sorted."""
    with atomic_open(path, "w") as handle:
        handle.write("".join(f"{file}\n" for file in sorted(set(current))))
