"""The prepared connectome: subject shards that a mapping task streams through.

A shard of S subjects is written once, by ``prepare_shard``, as three files:

``shard-K.npy``
    (total frames, V) array in the configured dtype. Rows are time points (the
    subjects' runs centred per voxel and concatenated, subject after subject), columns
    are the mask voxels in mask order. Each voxel's time course of a subject is divided
    by its norm, so every stored value lies in [-1, 1]: float16 storage then neither
    overflows nor underflows, whatever the units of the input.
``shard-K.norms.npy``
    (S, 2, V) float64: per subject, the norm of each centred time course (to rebuild
    the unscaled data for lesion seeds) and the inverse norm of the *stored* values
    (so correlations are exact for what is stored; 0 marks a zero-variance voxel).
``shard-K.json``
    subject ids, runs, frame offsets, dtype, voxel count and mask fingerprint.

Gzip decompression happens here, once; mapping tasks map one subject's rows of the plain
array at a time (and let them go after), so their memory does not grow with the shard.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_open
from .errors import InputError
from .nifti import load_image, read_data

log = logging.getLogger(__name__)

STORAGE_DTYPES = {"float32": np.float32, "float16": np.float16}
MIN_FRAMES = 3
# A centred time course whose norm is below this fraction of its uncentred norm is
# constant up to rounding: it has zero variance and gets r = 0.
ZERO_VARIANCE_RTOL = 1e-9


def check_run_header(img, path, subject_id, mask):
    """Check what a run's header tells (4D, the mask's grid, at least 2 frames); return its
    frame count. Reading the header is cheap, so every run is checked before any shard is
    prepared (rule lnm_check_inputs)."""
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


def check_subject_frames(subject, run_frames):
    total = sum(run_frames)
    if total < MIN_FRAMES:
        raise InputError(f"subject '{subject.subject_id}' has {total} time point(s) in "
                         f"{list(subject.runs)}; at least {MIN_FRAMES} are needed for a correlation.")


def load_run(path, subject_id, mask):
    """Read one 4D run and return its mask voxels as a (V, T) float64 array, centred per voxel."""
    what = f"run of subject '{subject_id}'"
    img = load_image(path, what)
    check_run_header(img, path, subject_id, mask)
    data = read_data(img, path, what)
    # Index by (i, j, k): reshaping nibabel's Fortran-ordered 4D array in C order would
    # copy the whole grid first.
    i, j, k = mask.ijk.T
    series = data[i, j, k].astype(np.float64)
    bad = ~np.isfinite(series)
    if bad.any():
        n_bad = int(bad.any(axis=1).sum())
        raise InputError(f"{what} '{path}' holds NaN or Inf in {n_bad} brain voxel(s) "
                         f"(e.g. frame {int(np.argwhere(bad)[0][1])}); fix the preprocessing or "
                         "replace the non-finite values before mapping.")
    raw_energy = np.einsum("vt,vt->v", series, series)
    series -= series.mean(axis=1, keepdims=True)
    return series, raw_energy


def load_subject(subject, mask):
    """All runs of a subject, each centred per voxel, concatenated in time.

    Returns (series, raw_energy, run_frames): series is (V, T) float64; raw_energy is the
    per-voxel sum of squares of the uncentred data (to tell constant voxels from
    rounding); run_frames lists the frames of each run.
    """
    loaded = [load_run(path, subject.subject_id, mask) for path in subject.runs]
    runs = [series for series, _ in loaded]
    check_subject_frames(subject, [run.shape[1] for run in runs])
    series = runs[0] if len(runs) == 1 else np.concatenate(runs, axis=1)
    return series, sum(energy for _, energy in loaded), [run.shape[1] for run in runs]


def unit_time_courses(series, raw_energy):
    """Divide each centred time course by its norm; zero-variance voxels become 0.

    Returns (unit, norm): unit is (V, T) float64, norm is (V,) float64.
    """
    norm = np.sqrt(np.einsum("vt,vt->v", series, series))
    constant = norm <= ZERO_VARIANCE_RTOL * np.sqrt(raw_energy)
    norm[constant] = 0.0
    scale = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)
    return series * scale[:, None], norm


@dataclass
class ShardInfo:
    subject_ids: list
    runs: list
    frame_offsets: list  # len S + 1
    dtype: str
    n_voxels: int
    mask_fingerprint: str

    @property
    def n_subjects(self):
        return len(self.subject_ids)

    @property
    def max_frames(self):
        return int(np.max(np.diff(self.frame_offsets)))

    def to_json(self):
        return json.dumps(self.__dict__, indent=1)


def shard_paths(prefix):
    prefix = str(prefix)
    return {"data": prefix + ".npy", "norms": prefix + ".norms.npy", "info": prefix + ".json"}


def prepare_shard(subjects, mask, data_path, norms_path, info_path, dtype="float32"):
    """Read, check, centre, scale and store the runs of ``subjects`` as one shard."""

    def loaded():
        for subject in subjects:
            series, raw_energy, run_frames = load_subject(subject, mask)
            log.info("subject %s: %d runs, %s frames", subject.subject_id, len(run_frames), run_frames)
            yield subject.subject_id, list(subject.runs), series, raw_energy

    return write_shard(loaded(), len(subjects), mask.n_voxels, mask.fingerprint(), data_path,
                       norms_path, info_path, dtype)


def write_shard(subject_series, n_subjects, n_voxels, mask_fingerprint, data_path, norms_path,
                info_path, dtype="float32"):
    """Store centred subject time courses as a shard.

    ``subject_series`` yields (subject_id, runs, series, raw_energy) with series the
    (V, T) float64 centred, concatenated time courses in mask order and raw_energy the
    per-voxel sum of squares before centring. Subjects are appended to the data file one
    at a time, so memory holds one subject.
    """
    if dtype not in STORAGE_DTYPES:
        raise InputError(f"lnm.connectome.dtype is '{dtype}'; use one of {sorted(STORAGE_DTYPES)}.")
    store = STORAGE_DTYPES[dtype]
    offsets = [0]
    subject_ids, runs = [], []
    norms = np.zeros((n_subjects, 2, n_voxels))
    with atomic_open(data_path) as data_file:
        header_at = data_file.tell()
        _write_npy_header(data_file, store, (0, n_voxels))  # rewritten once the size is known
        for s, (subject_id, subject_runs, series, raw_energy) in enumerate(subject_series):
            unit, norm = unit_time_courses(series, raw_energy)
            stored = np.ascontiguousarray(unit.T, dtype=store)  # (T, V): a subject is a block of rows
            stored_norm = np.sqrt(np.einsum("tv,tv->v", stored, stored, dtype=np.float64))
            norms[s, 0] = norm
            norms[s, 1] = np.divide(1.0, stored_norm, out=np.zeros(n_voxels), where=norm > 0)
            data_file.write(stored.tobytes())
            offsets.append(offsets[-1] + stored.shape[0])
            subject_ids.append(subject_id)
            runs.append(list(subject_runs))
            log.info("stored subject %s (%d/%d): %d frames, %d zero-variance voxels", subject_id, s + 1,
                     n_subjects, stored.shape[0], int((norm == 0).sum()))
        data_file.seek(header_at)
        _write_npy_header(data_file, store, (offsets[-1], n_voxels))
    with atomic_open(norms_path) as handle:
        np.save(handle, norms)
    info = ShardInfo(subject_ids, runs, offsets, dtype, n_voxels, mask_fingerprint)
    with atomic_open(info_path, "w") as handle:
        handle.write(info.to_json())
    return info


def _write_npy_header(handle, dtype, shape):
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": shape}
    # A fixed-size version-2 header so it can be rewritten in place with the final shape.
    text = repr(header).encode("latin1")
    total = 4096
    pad = total - 12 - len(text) - 1
    handle.write(b"\x93NUMPY\x02\x00" + struct.pack("<I", total - 12) + text + b" " * pad + b"\n")


# madvise(MADV_POPULATE_READ) (Linux 5.14) maps a whole range in one call; older kernels
# get MADV_WILLNEED, which starts the read-ahead only.
MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)


class NpyRowReader:
    """Rows of a C-order .npy file: copied into a buffer (``read_into``), or seen in
    place through a read-only memory map (``map_rows``), one block of rows at a time."""

    def __init__(self, path, expected_shape):
        self.path = str(path)
        self._file = open(path, "rb")
        try:
            version = np.lib.format.read_magic(self._file)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(self._file)
        except (ValueError, EOFError, SyntaxError) as err:
            self._file.close()
            raise InputError(f"prepared file '{path}' is empty or damaged ({err}); delete the prepared "
                             "connectome and rerun to prepare it again.") from None
        if fortran or tuple(shape) != tuple(expected_shape):
            self._file.close()
            raise InputError(f"prepared file '{path}' has shape {shape}, expected {tuple(expected_shape)}; "
                             "delete the prepared connectome and rerun to prepare it again.")
        self.dtype = np.dtype(dtype)
        self._offset = self._file.tell()
        self._row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._row_shape = tuple(shape[1:])
        if os.fstat(self._file.fileno()).st_size < self._offset + shape[0] * self._row_bytes:
            self._file.close()
            raise InputError(f"prepared file '{path}' is truncated; delete the prepared "
                             "connectome and rerun to prepare it again.")
        self._map = None

    def read_into(self, start, out):
        """Fill ``out`` (len(out) rows, this file's dtype) with rows start, start + 1, ..."""
        self._file.seek(self._offset + start * self._row_bytes)
        wanted = len(out) * self._row_bytes
        if self._file.readinto(memoryview(out).cast("B")) != wanted:
            raise InputError(f"prepared file '{self.path}' is truncated; delete the prepared "
                             "connectome and rerun to prepare it again.")
        return out

    def _span(self, start, stop):
        first = self._offset + start * self._row_bytes
        aligned = first - first % mmap.PAGESIZE
        return aligned, self._offset + stop * self._row_bytes - aligned

    def populate(self, start, stop):
        """Map rows [start, stop) into memory now (reading them from disk if needed), so
        that computing on them later neither waits for the disk nor takes page faults."""
        if self._map is None:
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self._map.madvise(MADV_POPULATE_READ, *self._span(start, stop))
        except OSError:
            self._map.madvise(mmap.MADV_WILLNEED, *self._span(start, stop))

    def map_rows(self, start, stop):
        """Rows [start, stop) as a read-only array over the page cache (no copy)."""
        if self._map is None:
            self.populate(start, stop)
        count = (stop - start) * self._row_bytes // self.dtype.itemsize
        view = np.frombuffer(self._map, self.dtype, count, self._offset + start * self._row_bytes)
        return view.reshape((stop - start, *self._row_shape))

    def release(self, start, stop):
        """Drop rows [start, stop) from this process's resident memory (they stay in the
        page cache), so a task's memory does not grow with the shard."""
        if self._map is not None:
            self._map.madvise(mmap.MADV_DONTNEED, *self._span(start, stop))

    def close(self):
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a caller still holds a view; the map goes with it
                pass
        self._file.close()


def widen_into(out, values):
    """out[...] = values, float16 -> float32. torch's conversion uses the CPU's F16C
    instructions and is about 3 x faster than NumPy's on one thread; NumPy is the fallback.

    One torch thread: the conversion runs beside the mapping workers, and torch's OpenMP
    threads would spin on the cores the workers need.
    """
    try:
        import torch
    except ImportError:
        np.copyto(out, values)
        return out
    with warnings.catch_warnings():
        # ``values`` is a read-only memory map; it is only read.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            torch.from_numpy(out).copy_(torch.from_numpy(values))
        finally:
            torch.set_num_threads(threads)
    return out


class ShardReader:
    """Reads one subject at a time from a prepared shard.

    float32 data are used in place through a memory map: no copy, and only the subjects
    in use are resident. float16 data are converted into reused float32 buffers. With
    ``prefetch``, :meth:`subjects` maps (and converts) the next subject in a background
    thread while the caller works on the current one: on a cluster file system the read
    then hides behind the computation.
    """

    def __init__(self, prefix_or_paths, prefetch=False):
        paths = prefix_or_paths if isinstance(prefix_or_paths, dict) else shard_paths(prefix_or_paths)
        self.paths = paths
        with open(paths["info"]) as handle:
            self.info = ShardInfo(**json.load(handle))
        n_voxels = self.info.n_voxels
        self._data = NpyRowReader(paths["data"], (self.info.frame_offsets[-1], n_voxels))
        self._norms = NpyRowReader(paths["norms"], (self.info.n_subjects, 2, n_voxels))
        self._in_place = self._data.dtype == np.float32
        shape = (self.info.max_frames, n_voxels)
        self._slots = [(None if self._in_place else np.empty(shape, dtype=np.float32),
                        np.empty((1, 2, n_voxels))) for _ in range(2 if prefetch else 1)]

    def __len__(self):
        return self.info.n_subjects

    def _rows(self, index):
        return self.info.frame_offsets[index], self.info.frame_offsets[index + 1]

    def read(self, index, slot=0):
        """Return (stored time courses as (T, V) float32, norm (V,), inverse stored norm (V,)).

        The arrays are valid until :meth:`release` of this subject, or the next read into
        ``slot``.
        """
        converted, norm_buffer = self._slots[slot]
        start, stop = self._rows(index)
        self._data.populate(start, stop)
        frames = self._data.map_rows(start, stop)
        if not self._in_place:
            widen_into(converted[:stop - start], frames)
            self._data.release(start, stop)
            frames = converted[:stop - start]
        norms = self._norms.read_into(index, norm_buffer)[0]
        return frames, norms[0], norms[1]

    def release(self, index):
        """Let subject ``index``'s pages go (the caller is done with it)."""
        self._data.release(*self._rows(index))

    def subjects(self):
        """Yield (index, frames, norm, inverse stored norm) for every subject in order.

        A yielded subject's arrays stay valid until the generator is advanced.
        """
        if len(self._slots) == 1:
            for index in range(len(self)):
                yield (index, *self.read(index))
                self.release(index)
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-prefetch") as pool:
            pending = pool.submit(self.read, 0, 0)
            for index in range(len(self)):
                current = pending.result()
                if index + 1 < len(self):
                    pending = pool.submit(self.read, index + 1, (index + 1) % 2)
                yield (index, *current)
                self.release(index)

    def close(self):
        self._data.close()
        self._norms.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def as_subjects(subjects):
    """sheets.Subject of each item, given as a Subject or as an (id, runs) pair (the form
    a Snakemake rule passes in ``params``)."""
    from .sheets import Subject

    return [s if isinstance(s, Subject) else Subject(s[0], tuple(s[1])) for s in subjects]


def prepare_shard_files(mask_path, subjects, data_path, norms_path, info_path, dtype="float32"):
    """Load the mask and prepare one shard; ``subjects`` are sheets.Subject or (id, runs) pairs."""
    from .nifti import load_mask

    subjects = as_subjects(subjects)
    return prepare_shard(subjects, load_mask(mask_path), data_path, norms_path, info_path, dtype)


MAX_PROBLEMS_SHOWN = 20


def check_run_headers(mask, subjects):
    """Check the header of every run of ``subjects``; return one row per run.

    Every bad run is collected, so one error lists them all (up to MAX_PROBLEMS_SHOWN).
    What needs the voxel data (a truncated file, NaN or Inf) is found when the run's
    shard is prepared.
    """
    rows, problems = [], []
    for subject in subjects:
        frames = []
        for path in subject.runs:
            try:
                img = load_image(path, f"run of subject '{subject.subject_id}'")
                frames.append(check_run_header(img, path, subject.subject_id, mask))
                rows.append({"subject_id": subject.subject_id, "path": str(path),
                             "shape": "x".join(str(n) for n in img.shape), "frames": frames[-1]})
            except InputError as err:
                problems.append(str(err))
        if len(frames) == len(subject.runs):
            try:
                check_subject_frames(subject, frames)
            except InputError as err:
                problems.append(str(err))
    if problems:
        shown = "\n".join(f"  - {p}" for p in problems[:MAX_PROBLEMS_SHOWN])
        more = f"\n  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more" if len(problems) > MAX_PROBLEMS_SHOWN else ""
        raise InputError(f"{len(problems)} problem(s) in the connectome's runs; nothing was mapped:\n"
                         f"{shown}{more}")
    return rows


def check_run_headers_files(mask_path, subjects, out_path):
    """check_run_headers for ``subjects`` (sheets.Subject or (id, runs) pairs); write the
    rows as a TSV (the run inventory) once every run passed."""
    from .nifti import load_mask

    subjects = as_subjects(subjects)
    rows = check_run_headers(load_mask(mask_path), subjects)
    with atomic_open(out_path, "w") as handle:
        handle.write("subject_id\tpath\tshape\tframes\n")
        for row in rows:
            handle.write(f"{row['subject_id']}\t{row['path']}\t{row['shape']}\t{row['frames']}\n")
    log.info("%d runs of %d subjects checked", len(rows), len(subjects))
