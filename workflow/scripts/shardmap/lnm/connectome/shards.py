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
    subject ids, runs, frame offsets, dtype, voxel count, mask fingerprint and a CRC-32
    of each subject's stored values (the content fingerprint of the run's provenance,
    ``provenance``: it costs about 1 % of the preparation).

The subjects come from NIfTI runs (``runs``) or from a connectome prepared by another
tool (``formats``); either way they are stored the same way, so the mapping tasks read
one format.

The writer hands each subject's float64 time courses to an optional ``on_subject``
callback before letting them go, so that a caller can derive more from the exact data in
the same pass: the preparation task adds the hub controls' degree sums that way
(``shardmap.lnm.hubs.degree``, written beside the shard as ``shard-K.degree.npy``).

Gzip decompression happens here, once; mapping tasks map one subject's rows of the plain
array at a time (and let them go after), so their memory does not grow with the shard.
"""

from __future__ import annotations

import functools
import json
import logging
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from ...atomic import atomic_open
from ...errors import InputError
from ..nifti import load_mask
from ..sheets import as_subjects
from .buffers import Buffers
from .runs import check_run_headers, fetch_subject, subject_series

log = logging.getLogger(__name__)

STORAGE_DTYPES = {"float32": np.float32, "float16": np.float16}
# A centred time course whose norm is below this fraction of its uncentred norm is
# constant up to rounding: it has zero variance and gets r = 0.
ZERO_VARIANCE_RTOL = 1e-9


def unit_time_courses(series, raw_energy):
    """Divide each centred time course (a column of the (T, V) ``series``) by its norm, in
    place; zero-variance voxels become 0.

    Returns (unit, norm): unit is ``series`` itself, now of unit columns, norm is (V,) float64.
    """
    norm = np.sqrt(np.einsum("tv,tv->v", series, series))
    constant = norm <= ZERO_VARIANCE_RTOL * np.sqrt(raw_energy)
    norm[constant] = 0.0
    series *= np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)
    return series, norm


@dataclass
class ShardInfo:
    subject_ids: list
    runs: list
    frame_offsets: list  # len S + 1
    dtype: str
    n_voxels: int
    mask_fingerprint: str
    checksums: list = None  # CRC-32 of each subject's stored bytes, as 8 hex digits

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


def prepare_shard(subjects, mask, data_path, norms_path, info_path, dtype="float32", on_subject=None,
                  connectome=None):
    """Read, check, centre, scale and store ``subjects`` as one shard. Every run's header
    is checked first (one message lists every bad run of the shard), so a bad run stops
    the task before any data is read.

    ``connectome`` is None for NIfTI runs (``subjects``' runs are the files), or a
    prepared connectome (``formats.open_connectome``) that holds ``subjects``.
    """
    buffers = Buffers()
    if connectome is None:
        check_run_headers(mask, subjects)
        fetch = functools.partial(fetch_subject, mask=mask, buffers=buffers)
        process = functools.partial(subject_series, mask=mask, buffers=buffers)
        runs_of = lambda subject: list(subject.runs)  # noqa: E731
    else:
        from .formats.base import SubjectReader, check_subjects

        check_subjects(connectome, subjects, mask)
        reader = SubjectReader(connectome, mask)
        fetch = lambda subject, slot: reader.fetch_subject(subject)  # noqa: E731
        process = functools.partial(reader.subject_series, buffers=buffers)
        runs_of = connectome.run_names

    def loaded():
        for subject, box in fetched_ahead(subjects, fetch):
            series, raw_energy, run_frames = process(subject, box.pop())
            log.info("subject %s: %d runs, %s frames", subject.subject_id, len(run_frames), run_frames)
            yield subject.subject_id, runs_of(subject), series, raw_energy

    # The task's two threads are one decoding and one computing: a multi-threaded BLAS in
    # the second (the degree's product) would take the first one's core (15-20 % slower).
    with threadpool_limits(limits=1, user_api="blas"):
        return write_shard(loaded(), len(subjects), mask.n_voxels, mask.fingerprint(), data_path,
                           norms_path, info_path, dtype, on_subject, buffers)


def fetched_ahead(subjects, fetch):
    """Yield (subject, box) for each subject, ``box`` a one-item list holding
    fetch(subject, slot=0 or 1, alternately), while the next subject is fetched in a
    background thread.

    Fetching is the I/O and decoding (gunzip of NIfTI runs, an HDF5 chunk, a MATLAB file),
    which release the GIL; the caller centres, scales and writes. So the task uses two
    cores, and holds at most two subjects' fetched data: the caller empties the box as
    soon as it has used them, so they do not outlive its work on them.
    """
    if not subjects:
        return
    with ThreadPoolExecutor(1, "lnm-fetch") as pool:
        pending = pool.submit(fetch, subjects[0], slot=0)
        for index, subject in enumerate(subjects):
            box = [pending.result()]
            if index + 1 < len(subjects):
                # The next subject goes to the other slot of the fetch's reused buffers.
                pending = pool.submit(fetch, subjects[index + 1], slot=(index + 1) % 2)
            yield subject, box


def write_shard(subject_series, n_subjects, n_voxels, mask_fingerprint, data_path, norms_path,
                info_path, dtype="float32", on_subject=None, buffers=None):
    """Store centred subject time courses as a shard.

    ``subject_series`` yields (subject_id, runs, series, raw_energy) with series the
    (T, V) float64 centred, concatenated time courses in mask order (a frame per row) and
    raw_energy the per-voxel sum of squares before centring. Subjects are appended to the
    data file one at a time, so memory holds one subject; each series is scaled to unit
    columns in place (``unit_time_courses``). ``on_subject``, if given, is
    called with each subject's (T, V) float64 unit time courses and their (V,) norms (0 for
    zero-variance voxels) before the subject is let go.
    """
    if dtype not in STORAGE_DTYPES:
        raise InputError(f"lnm.connectome.dtype is '{dtype}'; use one of {sorted(STORAGE_DTYPES)}.")
    store = STORAGE_DTYPES[dtype]
    buffers = buffers or Buffers()
    offsets = [0]
    subject_ids, runs, checksums = [], [], []
    norms = np.zeros((n_subjects, 2, n_voxels))
    with atomic_open(data_path) as data_file:
        header_at = data_file.tell()
        _write_npy_header(data_file, store, (0, n_voxels))  # rewritten once the size is known
        for s, (subject_id, subject_runs, series, raw_energy) in enumerate(subject_series):
            unit, norm = unit_time_courses(series, raw_energy)
            if not norm.any():
                raise InputError(f"subject '{subject_id}' ({', '.join(map(str, subject_runs))}) is constant in "
                                 "time at every brain voxel: an empty or placeholder file. Replace it, or leave "
                                 "the subject out of the connectome's sheet.")
            stored = buffers.get("stored", unit.shape, store)  # (T, V): a subject is a block of rows
            np.copyto(stored, unit, casting="same_kind")
            stored_norm = np.sqrt(np.einsum("tv,tv->v", stored, stored, dtype=np.float64))
            norms[s, 0] = norm
            if on_subject is not None:
                on_subject(unit, norm)
            norms[s, 1] = np.divide(1.0, stored_norm, out=np.zeros(n_voxels), where=norm > 0)
            data_file.write(memoryview(stored).cast("B"))
            checksums.append(f"{zlib.crc32(stored):08x}")
            offsets.append(offsets[-1] + stored.shape[0])
            subject_ids.append(subject_id)
            runs.append(list(subject_runs))
            log.info("stored subject %s (%d/%d): %d frames, %d zero-variance voxels", subject_id, s + 1,
                     n_subjects, stored.shape[0], int((norm == 0).sum()))
        data_file.seek(header_at)
        _write_npy_header(data_file, store, (offsets[-1], n_voxels))
    with atomic_open(norms_path) as handle:
        np.save(handle, norms)
    info = ShardInfo(subject_ids, runs, offsets, dtype, n_voxels, mask_fingerprint, checksums)
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


def prepare_shard_files(mask_path, subjects, data_path, norms_path, info_path, dtype="float32",
                        on_subject=None, format="nifti", path=None, run_frames=None):
    """Load the mask and prepare one shard; ``subjects`` are sheets.Subject or the lists
    of Subject.as_params. With a ``format`` other than nifti, the subjects are read from
    the prepared connectome at ``path``."""
    subjects = as_subjects(subjects)
    connectome = None
    if format != "nifti":
        from .formats import open_connectome

        connectome = open_connectome(format, path, run_frames)
    return prepare_shard(subjects, load_mask(mask_path), data_path, norms_path, info_path, dtype, on_subject,
                         connectome)
