"""What every prepared connectome format offers, and the checks and reading they share.

A format (``lacuna``, ``connectome_quick``, ``leaddbs``) knows its files: which
subjects they hold, where each subject's runs lie, the world coordinates of its voxels,
and how to read one run as a (frames, voxels) array. Everything else is shared and done
here, the same way as for NIfTI runs (``..runs``): the voxels are matched to the brain
mask by world coordinates (``..voxels``), each run is checked for NaN and Inf and
centred on its own, and the runs of a subject are concatenated in time. The shard
preparation then stores the subject exactly as it stores NIfTI runs (``..shards``).
"""

from __future__ import annotations

import os

import numpy as np

from ....errors import InputError, problems_error
from ..buffers import no_buffers
from ..runs import centre_run, check_subject_frames
from ..voxels import mask_columns


class PreparedConnectome:
    """Base of the formats. Subclasses set ``format`` and ``note`` and implement
    ``subjects``, ``voxels_of``, ``run_shapes`` and ``read_runs``."""

    format = ""
    # What the run inventory (lnm/checked/runs.tsv) says about every subject of the format.
    note = ""

    def __init__(self, path, run_frames=None):
        self.path = str(path)
        if not os.path.exists(self.path):
            raise InputError(f"lnm.connectome.path '{self.path}' does not exist (relative paths are resolved "
                             f"against '{os.getcwd()}'); point it at the {self.format} connectome's folder or file.")
        self.run_frames = run_frames

    def subjects(self):
        """Every subject of the connectome (sheets.Subject), in the connectome's order.
        Cheap: run in the Snakemake process while the job graph is built."""
        raise NotImplementedError

    def voxels_of(self, subject, mask):
        """The ConnectomeVoxels of the file(s) holding ``subject``."""
        raise NotImplementedError

    def own_voxels(self):
        """The voxels the connectome stores, for its own mask; None if it stores none."""
        return None

    def run_shapes(self, subject):
        """(frames, voxels) of each run of ``subject``, from the files' headers."""
        raise NotImplementedError

    def read_runs(self, subject):
        """Yield (file, run) for each run of ``subject``: run is a (frames, voxels) numeric
        array in the connectome's voxel order, as stored (uncentred)."""
        raise NotImplementedError

    def describe(self, subject):
        """Where ``subject``'s data lie, for the run inventory and messages."""
        return ", ".join(subject.runs)

    def run_names(self, subject):
        """The runs of ``subject`` as the shard's JSON and the provenance record them."""
        return [self.describe(subject)] if subject.position is not None else list(subject.runs)


class SubjectReader:
    """Reads the subjects of a prepared connectome onto a brain mask, computing each
    file's voxel matching once."""

    def __init__(self, connectome, mask):
        self.connectome = connectome
        self.mask = mask
        self._columns = {}

    def columns(self, subject):
        # Formats return the same ConnectomeVoxels for files that share their voxels (every
        # connectome_quick file, a Lead-DBS connectome), so those are matched once.
        voxels = self.connectome.voxels_of(subject, self.mask)
        if id(voxels) not in self._columns:
            try:
                self._columns[id(voxels)] = (voxels, mask_columns(self.mask, voxels))
            except InputError as err:  # told once per file, not once per subject
                self._columns[id(voxels)] = (voxels, err)
        columns = self._columns[id(voxels)][1]
        if isinstance(columns, InputError):
            raise columns
        return columns

    def fetch_subject(self, subject):
        """The subject's runs as stored, read into memory (the part the shard preparation
        does in a background thread): a list of (file, run)."""
        return list(self.connectome.read_runs(subject))

    def subject_series(self, subject, fetched, buffers=None):
        """(series, raw_energy, run_frames) as ``runs.subject_series`` returns them: the
        subject's mask voxels, each run centred per voxel in its own rows of the subject's
        (T, V) float64 array (one of ``buffers``, or new)."""
        buffers = buffers or no_buffers()
        columns = self.columns(subject)
        frames = [run.shape[0] for _, run in fetched]
        check_subject_frames(subject, frames, self.connectome.describe(subject))
        series = buffers.get("subject", (sum(frames), len(columns)), np.float64)
        energy, start = 0.0, 0
        while fetched:
            path, run = fetched.pop(0)
            taken = buffers.get("run as stored", (run.shape[0], len(columns)), run.dtype)
            np.take(run, columns, axis=1, out=taken)
            del run
            rows = series[start:start + taken.shape[0]]
            # float64 in C order, a frame per row, as the NIfTI path holds a run, so that the
            # same stored values give the same bits.
            np.copyto(rows, taken, casting="unsafe")
            _, run_energy = centre_run(rows, f"run of subject '{subject.subject_id}'", path)
            energy = energy + run_energy
            start += taken.shape[0]
        return series, energy, frames

    def load_subject(self, subject):
        """subject_series of ``subject``, read now."""
        return self.subject_series(subject, self.fetch_subject(subject))


def check_subjects(connectome, subjects, mask):
    """Check what the headers of ``subjects``' files tell (voxel counts, frames, the
    voxels' match with the mask) without reading their data; return one row per run for
    the run inventory. Every problem is collected, so one error lists them all."""
    rows, problems = [], []
    reader = SubjectReader(connectome, mask)
    for subject in subjects:
        try:
            shapes = connectome.run_shapes(subject)
            reader.columns(subject)
            n_voxels = connectome.voxels_of(subject, mask).n_voxels
            for index, (frames, voxels) in enumerate(shapes):
                where = connectome.describe(subject)
                if voxels != n_voxels:
                    raise InputError(f"subject '{subject.subject_id}' ({where}): run {index + 1} has {voxels} "
                                     f"voxels but the connectome's voxel list has {n_voxels}; the file is damaged "
                                     "or not of this connectome.")
                if frames < 2:
                    raise InputError(f"subject '{subject.subject_id}' ({where}): run {index + 1} has {frames} "
                                     "frame; a run needs at least 2 time points. Leave the subject out with "
                                     "a subject subset sheet (lnm.connectome.subjects).")
            check_subject_frames(subject, [frames for frames, _ in shapes], connectome.describe(subject))
            for frames, voxels in shapes:
                rows.append({"subject_id": subject.subject_id, "path": connectome.describe(subject),
                             "shape": f"{frames}x{voxels}", "frames": frames, "tr_s": None,
                             "tr_note": f"TR not stored by {connectome.format}", "note": connectome.note})
        except InputError as err:
            if str(err) not in problems:
                problems.append(str(err))
    if problems:
        raise problems_error(f"{len(problems)} problem(s) in the {connectome.format} connectome "
                             f"'{connectome.path}'; nothing was mapped", problems)
    return rows


def select_subjects(subjects, wanted, sheet, connectome):
    """The subjects named by a subset sheet, in the sheet's order; an id the connectome
    does not have stops the run, naming it and how the connectome names its subjects."""
    by_id = {s.subject_id: s for s in subjects}
    unknown = [subject_id for subject_id in wanted if subject_id not in by_id]
    if unknown:
        first = ", ".join(s.subject_id for s in subjects[:3])
        raise InputError(f"subject subset sheet '{sheet}' names {len(unknown)} subject(s) that the "
                         f"{connectome.format} connectome '{connectome.path}' does not have: {unknown[:5]}. Its "
                         f"{len(subjects)} subjects are named {first}, ...; fix the ids.")
    selected = [by_id[subject_id] for subject_id in wanted]
    if len(selected) < 2:
        raise InputError(f"subject subset sheet '{sheet}' selects {len(selected)} subject; the T map needs at "
                         "least 2 connectome subjects.")
    return selected
