"""The connectome's runs as users bring them: 4D NIfTI files, one or more per subject.

Their headers are checked all at once by rule lnm_check_inputs (every bad run listed in
one message, and the run inventory), and again by each shard's preparation for its own
runs before it reads them; their data are read, checked for NaN/Inf, centred per voxel
and concatenated in time by the shard preparation (``shards``).
"""

from __future__ import annotations

import logging

import numpy as np

from ...atomic import atomic_open
from ...errors import MAX_PROBLEMS_SHOWN, InputError, problems_error
from ..nifti import decoded_bytes, decoded_size, load_image, load_mask, mask_frames
from ..sheets import as_subjects
from .buffers import no_buffers

log = logging.getLogger(__name__)

MIN_FRAMES = 3


def check_run_header(img, path, subject_id, mask):
    """Check what a run's header tells (4D, the mask's grid, at least 2 frames); return its
    frame count. Reading the header is cheap, so every run is checked before its data are
    read (rule lnm_check_inputs, and each shard's preparation)."""
    what = f"run of subject '{subject_id}'"
    if len(img.shape) != 4:
        raise InputError(f"{what} '{path}' has shape {img.shape}; a run must be a 4D NIfTI "
                         "(x, y, z, time).")
    if not mask.same_grid(img):
        raise InputError(
            f"{what} '{path}' is not on the brain mask's grid: shape {img.shape[:3]} vs "
            f"{mask.shape}, affine\n{np.round(img.affine, 4)}\nvs mask '{mask.path}'\n"
            f"{np.round(mask.affine, 4)}.\nResample the connectome or choose the mask it was "
            "made on (lnm.connectome.mask)."
        )
    n_frames = img.shape[3]
    if n_frames < 2:
        raise InputError(f"{what} '{path}' has {n_frames} frame; a run needs at least 2 time points "
                         "(a single frame is all zeros once centred). Drop it from the sheet.")
    return n_frames


# NIfTI time units -> seconds. A header that leaves the unit unknown is read as seconds,
# the unit almost every tool writes.
SECONDS_PER_TIME_UNIT = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6, "unknown": 1.0}
# Two repetition times closer than this (relative) are the same TR.
TR_RTOL = 1e-3


def repetition_time(img):
    """The run's repetition time in seconds (pixdim[4] in its time unit), or None when the
    header does not record one (0) or records it in a unit that is not a time."""
    _, unit = img.header.get_xyzt_units()
    zooms = img.header.get_zooms()
    if len(zooms) < 4 or not zooms[3] > 0 or unit not in SECONDS_PER_TIME_UNIT:
        return None
    return round(float(zooms[3]) * SECONDS_PER_TIME_UNIT[unit], 6)


def same_tr(first, second):
    return abs(first - second) <= TR_RTOL * max(first, second)


def check_subject_trs(subject, run_trs):
    """Runs of one subject are concatenated in time, so they must share a TR."""
    known = [(path, tr) for path, tr in zip(subject.runs, run_trs) if tr is not None]
    if any(not same_tr(tr, known[0][1]) for _, tr in known):
        listed = ", ".join(f"'{path}' {tr:g} s" for path, tr in known)
        raise InputError(f"subject '{subject.subject_id}' has runs with different repetition times (TR): "
                         f"{listed}. Its runs are concatenated in time, so they must share a TR: drop or "
                         "resample the odd run(s).")


def majority_tr(rows):
    """The TR most subjects have (their first run's), or None if no header records one."""
    by_subject = {}
    for row in rows:
        if row["tr_s"] is not None:
            by_subject.setdefault(row["subject_id"], row["tr_s"])
    values = sorted(by_subject.values())
    if not values:
        return None
    return max(values, key=lambda tr: sum(same_tr(tr, other) for other in values))


def check_subject_frames(subject, run_frames, where=None):
    """A subject needs MIN_FRAMES time points over its runs; ``where`` says where its data
    lie in the message (default: its run files)."""
    total = sum(run_frames)
    if total < MIN_FRAMES:
        raise InputError(f"subject '{subject.subject_id}' has {total} time point(s) in "
                         f"{where or list(subject.runs)}; at least {MIN_FRAMES} are needed for a correlation.")


def fetch_run(path, subject_id, mask, out=None):
    """The I/O half of reading a run, which the shard preparation does for the next
    subject in a background thread: the header checked and, for a gzipped file, the file
    decoded into memory (into ``out`` if given, a reused buffer: ``nifti.decoded_bytes``;
    python-isal's igzip where installed, 1.5-2 x zlib's speed here; both release the GIL).
    Returns (img, decoded bytes or None)."""
    what = f"run of subject '{subject_id}'"
    img = load_image(path, what)
    check_run_header(img, path, subject_id, mask)
    if out is not None:
        out = out(decoded_size(img))
    return img, decoded_bytes(path, what, img, out)


def run_series(img, raw, path, subject_id, mask, out=None, scratch=None):
    """The computing half: the run's mask voxels as a (T, V) float64 array (``out`` if
    given), centred per voxel (``centre_run``)."""
    what = f"run of subject '{subject_id}'"
    return centre_run(mask_frames(img, raw, path, what, mask, out, scratch), what, path)


def centre_run(series, what, path):
    """Check a run's (T, V) float64 mask voxels (C order: a frame is a row) for NaN and Inf
    and centre each voxel's time course in place; return (series, raw_energy), raw_energy
    being the per-voxel sum of squares before centring. Shared by the NIfTI runs and the
    prepared formats (``formats``), so that the same values give the same bits."""
    bad = ~np.isfinite(series)
    if bad.any():
        n_bad = int(bad.any(axis=0).sum())
        raise InputError(f"{what} '{path}' holds NaN or Inf in {n_bad} brain voxel(s) "
                         f"(e.g. frame {int(np.argwhere(bad)[0][0])}); fix the preprocessing or "
                         "replace the non-finite values before mapping.")
    raw_energy = np.einsum("tv,tv->v", series, series)
    series -= series.mean(axis=0)
    return series, raw_energy


def fetch_subject(subject, mask, buffers=None, slot=0):
    """fetch_run for every run of ``subject`` (the part a background thread does), into
    the decoding buffers of ``slot`` of ``buffers`` if given (the preparation alternates
    two slots: one subject decoded while the other is used)."""
    def out_for(run):
        if buffers is None:
            return None
        return lambda size: buffers.get(f"decoded, slot {slot}, run {run}", (size,), np.uint8)

    return [fetch_run(path, subject.subject_id, mask, out_for(run)) for run, path in enumerate(subject.runs)]


def subject_series(subject, fetched, mask, buffers=None):
    """All runs of a subject, each centred per voxel, concatenated in time, from its
    fetched runs (``fetch_subject``), in arrays of ``buffers`` (``connectome.buffers``;
    None: new arrays).

    Returns (series, raw_energy, run_frames): series is (T, V) float64; raw_energy is the
    per-voxel sum of squares of the uncentred data (to tell constant voxels from
    rounding); run_frames lists the frames of each run.
    """
    buffers = buffers or no_buffers()
    frames = [img.shape[3] for img, _ in fetched]
    check_subject_frames(subject, frames)
    series = buffers.get("subject", (sum(frames), mask.n_voxels), np.float64)
    energy, start = 0.0, 0
    for path, (img, raw), n_frames in zip(subject.runs, fetched, frames):
        # Each run is centred in its own rows of the subject's array: no concatenation.
        scratch = buffers.get("run as stored", (n_frames, mask.n_voxels), img.get_data_dtype().newbyteorder("="))
        _, run_energy = run_series(img, raw, path, subject.subject_id, mask, series[start:start + n_frames],
                                   scratch)
        energy = energy + run_energy
        start += n_frames
    fetched.clear()
    return series, energy, frames


def load_subject(subject, mask):
    """subject_series of ``subject``, read now."""
    return subject_series(subject, fetch_subject(subject, mask), mask)


def check_run_headers(mask, subjects):
    """Check the header of every run of ``subjects``; return one row per run.

    Every bad run is collected, so one error lists them all (up to MAX_PROBLEMS_SHOWN).
    What needs the voxel data (a truncated file, NaN or Inf) is found when the run's
    shard is prepared.
    """
    rows, problems = [], []
    for subject in subjects:
        frames, trs = [], []
        for path in subject.runs:
            try:
                img = load_image(path, f"run of subject '{subject.subject_id}'")
                frames.append(check_run_header(img, path, subject.subject_id, mask))
                trs.append(repetition_time(img))
                rows.append({"subject_id": subject.subject_id, "path": str(path),
                             "shape": "x".join(str(n) for n in img.shape), "frames": frames[-1],
                             "tr_s": trs[-1]})
            except InputError as err:
                problems.append(str(err))
        if len(frames) == len(subject.runs):
            for check, values in ((check_subject_frames, frames), (check_subject_trs, trs)):
                try:
                    check(subject, values)
                except InputError as err:
                    problems.append(str(err))
    if problems:
        raise problems_error(f"{len(problems)} problem(s) in the connectome's runs; nothing was mapped", problems)
    return rows


def check_run_headers_files(mask_path, subjects, out_path):
    """check_run_headers for ``subjects`` (sheets.Subject or (id, runs) pairs); write the
    rows as a TSV (the run inventory) once every run passed."""
    subjects = as_subjects(subjects)
    rows = check_run_headers(load_mask(mask_path), subjects)
    for row, note in zip(rows, tr_notes(rows)):
        row["tr_note"] = note
    write_run_inventory(rows, out_path)
    log.info("%d runs of %d subjects checked", len(rows), len(subjects))
    return rows


INVENTORY_COLUMNS = ("subject_id", "path", "shape", "frames", "tr_s", "tr_note", "note")


def write_run_inventory(rows, out_path):
    """The run inventory (lnm/checked/runs.tsv): one row per run, with what its header says
    and what the report should say about it (``note``: how a prepared format's runs were
    taken)."""
    with atomic_open(out_path, "w") as handle:
        handle.write("\t".join(INVENTORY_COLUMNS) + "\n")
        for row in rows:
            values = dict(row, tr_s="" if row["tr_s"] is None else f"{row['tr_s']:g}")
            handle.write("\t".join(str(values.get(column, "")) for column in INVENTORY_COLUMNS) + "\n")


def tr_notes(rows):
    """Per run: '' where its TR is the majority's, else what differs. Subjects whose TR
    differs from the majority are allowed (connectomes are pooled knowingly), but each is
    named in a warning in the log and in the run inventory the report shows."""
    majority = majority_tr(rows)
    notes, odd = [], {}
    for row in rows:
        if row["tr_s"] is None:
            notes.append("TR not recorded in the header")
        elif majority is not None and not same_tr(row["tr_s"], majority):
            notes.append(f"TR differs from the majority's {majority:g} s")
            odd[row["subject_id"]] = row["tr_s"]
        else:
            notes.append("")
    if odd:
        shown = ", ".join(f"{subject} ({tr:g} s)" for subject, tr in list(odd.items())[:MAX_PROBLEMS_SHOWN])
        log.warning("%d subject(s) have another repetition time (TR) than the majority's %g s: %s%s. They "
                    "are pooled with the others; check that this is intended (lnm/checked/runs.tsv lists "
                    "every run's TR).", len(odd), majority, shown, " ..." if len(odd) > MAX_PROBLEMS_SHOWN else "")
    return notes
