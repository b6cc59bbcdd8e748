"""lacuna's HDF5 connectome (m-petersen/lacuna, ``gsp1000_to_hdf5`` and the older
``create_connectome_batches``).

A folder of ``*.h5`` files (or one file), each with:

- ``timeseries``: (subjects in the file, T, V) float32, raw values (not centred), one
  gzip chunk per subject;
- ``mask_indices``: the voxels' (i, j, k) indices, (V, 3) from ``gsp1000_to_hdf5`` or
  (3, V) from the older writer (told apart as lacuna does: 3 rows means (3, V));
- ``mask_affine``: (4, 4), and the attribute ``mask_shape``.

lacuna stores no subject ids and only the first run of each subject. The subjects are
named by their position over the files in name order, ``pos0000``, ``pos0001``, ...
(lacuna's own sorted order of the subjects it converted).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ....errors import InputError
from ...sheets import Subject
from ..voxels import ConnectomeVoxels, checked_indices
from .base import PreparedConnectome

REQUIRED = ("timeseries", "mask_indices", "mask_affine")


def subject_id(position):
    return f"pos{position:04d}"


class LacunaConnectome(PreparedConnectome):
    format = "lacuna"
    note = "raw run-1 data: lacuna stores each subject's first run only; centred here"

    def __init__(self, path, run_frames=None):
        super().__init__(path, run_frames)
        if os.path.isdir(self.path):
            self.files = sorted(str(p) for p in Path(self.path).iterdir()
                                if p.suffix in (".h5", ".hdf5") and p.is_file())
            if not self.files:
                raise InputError(f"lnm.connectome.path '{self.path}' holds no .h5 file; a lacuna connectome is "
                                 "a folder of HDF5 files (gsp1000_chunk_000.h5, ...) or one such file.")
        else:
            self.files = [self.path]
        self._voxels = {}

    def _open(self, path):
        import h5py

        try:
            handle = h5py.File(path, "r")
        except OSError as err:
            raise InputError(f"lacuna connectome file '{path}' is not a readable HDF5 file ({err}); it is "
                             "truncated or not a lacuna connectome: copy it again.") from None
        missing = [name for name in REQUIRED if name not in handle] + (
            [] if "mask_shape" in handle.attrs else ["attribute mask_shape"])
        if missing:
            handle.close()
            raise InputError(f"lacuna connectome file '{path}' lacks {missing}; lacuna's converter writes "
                             f"datasets {list(REQUIRED)} and the attribute mask_shape. Is this a lacuna "
                             "connectome (lnm.connectome.format)?")
        if handle["timeseries"].ndim != 3:
            shape = handle["timeseries"].shape
            handle.close()
            raise InputError(f"lacuna connectome file '{path}': timeseries has shape {shape}; lacuna stores "
                             "(subjects, time points, voxels).")
        return handle

    def subjects(self):
        subjects = []
        for path in self.files:
            with self._open(path) as handle:
                count = handle["timeseries"].shape[0]
            subjects += [Subject(subject_id(len(subjects) + row), (path,), row) for row in range(count)]
        return subjects

    def voxels_of(self, subject, mask=None):
        path = subject.runs[0]
        if path not in self._voxels:
            self._voxels[path] = self.file_voxels(path)
        return self._voxels[path]

    def file_voxels(self, path):
        with self._open(path) as handle:
            indices = np.asarray(handle["mask_indices"][()])
            affine = np.asarray(handle["mask_affine"][()], dtype=np.float64)
            shape = tuple(int(n) for n in np.ravel(handle.attrs["mask_shape"]))
            n_voxels = handle["timeseries"].shape[2]
        if indices.ndim == 2 and indices.shape[0] == 3:  # the older writer's (3, V)
            indices = indices.T
        if affine.shape != (4, 4) or len(shape) != 3:
            raise InputError(f"lacuna connectome file '{path}': mask_affine has shape {affine.shape} and "
                             f"mask_shape {shape}; expected a 4 x 4 affine and a 3D shape.")
        ijk = checked_indices(indices, shape, path, "mask_indices")
        if len(ijk) != n_voxels:
            raise InputError(f"lacuna connectome file '{path}': mask_indices lists {len(ijk)} voxels but "
                             f"timeseries has {n_voxels}; the file is damaged.")
        return ConnectomeVoxels(ijk, affine, shape, path)

    def own_voxels(self):
        return self.file_voxels(self.files[0])

    def run_shapes(self, subject):
        with self._open(subject.runs[0]) as handle:
            _, frames, voxels = handle["timeseries"].shape
        return [(frames, voxels)]

    def read_runs(self, subject):
        path = subject.runs[0]
        with self._open(path) as handle:
            try:
                run = handle["timeseries"][subject.position]
            except (OSError, ValueError) as err:
                raise InputError(f"lacuna connectome file '{path}': subject {subject.subject_id} (row "
                                 f"{subject.position}) cannot be read ({err}); the file is truncated or "
                                 "damaged: copy it again.") from None
        yield path, run

    def describe(self, subject):
        return f"{subject.runs[0]}[{subject.position}]"
