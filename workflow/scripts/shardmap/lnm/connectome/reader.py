"""Streaming a prepared shard: one subject's rows (or a small group of subjects) at a
time, the next one read ahead.

A mapping task holds at most two groups of the shard in memory (the one it computes and
the one being read), so its memory does not grow with the shard.
"""

from __future__ import annotations

import json
import mmap
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ...errors import InputError
from .shards import ShardInfo, shard_paths

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
    """Reads one subject, or a group of subjects, at a time from a prepared shard.

    float32 data are used in place through a memory map: no copy, and only the subjects
    in use are resident. float16 data are converted into reused float32 buffers (or,
    with ``widen=False``, used in place too). With ``prefetch``, :meth:`subjects` and
    :meth:`subject_groups` map (and convert) the next subject or group in a background
    thread while the caller works on the current one: on a cluster file system the read
    then hides behind the computation.
    """

    def __init__(self, prefix_or_paths, prefetch=False, widen=True):
        """``widen=False``: float16 data too are used in place, as stored (for a kernel
        that widens them itself, block by block)."""
        paths = prefix_or_paths if isinstance(prefix_or_paths, dict) else shard_paths(prefix_or_paths)
        self.paths = paths
        with open(paths["info"]) as handle:
            self.info = ShardInfo(**json.load(handle))
        n_voxels = self.info.n_voxels
        self._data = NpyRowReader(paths["data"], (self.info.frame_offsets[-1], n_voxels))
        self._norms = NpyRowReader(paths["norms"], (self.info.n_subjects, 2, n_voxels))
        self._in_place = self._data.dtype == np.float32 or not widen
        self._prefetch = prefetch
        self._slots = []
        self._ensure_slots(2 if prefetch else 1)

    def _ensure_slots(self, count):
        """Buffers for ``count`` subjects read at once: float32 frames (float16 storage
        only) and norms."""
        shape = (self.info.max_frames, self.info.n_voxels)
        while len(self._slots) < count:
            self._slots.append((None if self._in_place else np.empty(shape, dtype=np.float32),
                                np.empty((1, 2, self.info.n_voxels))))

    def __len__(self):
        return self.info.n_subjects

    def _rows(self, index):
        return self.info.frame_offsets[index], self.info.frame_offsets[index + 1]

    def read(self, index, slot=0):
        """Return (stored time courses as (T, V) float32 (as stored if not widened), norm
        (V,), inverse stored norm (V,)).

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
        for group in self.subject_groups(1):
            yield group[0]

    def subject_groups(self, size):
        """Yield the subjects in order, ``size`` at a time: lists of (index, frames, norm,
        inverse stored norm). With prefetch, the next group is read meanwhile.

        A yielded group's arrays stay valid until the generator is advanced, so a task
        holds at most two groups (one with prefetch off).
        """
        starts = range(0, len(self), size)
        self._ensure_slots(2 * size if self._prefetch else size)

        def read_group(number):
            # With prefetch, groups alternate between two sets of buffers.
            first = starts[number]
            base = (number % 2) * size if self._prefetch else 0
            return [(index, *self.read(index, base + index - first))
                    for index in range(first, min(first + size, len(self)))]

        if not self._prefetch:
            for number in range(len(starts)):
                group = read_group(number)
                yield group
                for index, *_ in group:
                    self.release(index)
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-prefetch") as pool:
            pending = pool.submit(read_group, 0) if starts else None
            for number in range(len(starts)):
                current = pending.result()
                if number + 1 < len(starts):
                    pending = pool.submit(read_group, number + 1)
                yield current
                for index, *_ in current:
                    self.release(index)

    def close(self):
        self._data.close()
        self._norms.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
