"""Lead-DBS / Lead Connectome Mapper functional connectomes of type ``fMRI_timecourses``.

The connectome's folder holds:

- ``dataset_info.json``: ``type`` (``fMRI_timecourses``; ``fMRI_matrix`` is refused) and
  an optional ``formatversion`` (default 1);
- ``dataset_volsurf.mat``: the struct ``vol`` (the older ``dataset_info.mat`` holds it
  as ``dataset.vol``): ``outidx``, the voxels as 1-based column-major (MATLAB) indices
  into the grid ``space.dim``; ``space.mat``, SPM's voxel-to-world matrix of 1-based
  voxels; ``subIDs``, one cell per subject, ``{id, run file, run file, ...}``;
- ``vol/<run file>``: one MATLAB file per subject and run with ``gmtc``, V x T when
  ``formatversion`` is 1 and T x V above, of any numeric class.

MATLAB files of version 5 to 7 are read with scipy, version 7.3 (HDF5) with h5py
(which sees MATLAB's column-major arrays transposed). Each run is centred on its own
and a subject's runs are concatenated; Lead-DBS instead correlates each run and
averages r across runs (README, "Bring your connectome").
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ....errors import InputError
from ...sheets import Subject
from ..voxels import ConnectomeVoxels, checked_indices
from .base import PreparedConnectome

TIMECOURSES = "fMRI_timecourses"
MATRIX = "fMRI_matrix"
MATRIX_REFUSAL = (
    "is a Lead-DBS connectome of type fMRI_matrix: it stores a group-average voxel x voxel "
    "correlation matrix (AllX.mat), no per-subject time series, so neither the per-subject maps nor "
    "the T map across subjects can be computed from it. Use the fMRI_timecourses version of the "
    "connectome (e.g. 'GSP 1000 (Yeo 2011)' rather than 'GSP 1000 Groupmatrix (Yeo 2011)'), or its NIfTI runs."
)


def read_mat(path, what):
    """The variables of a MATLAB file (any version) as Python objects (pymatreader)."""
    from pymatreader import read_mat as _read_mat

    try:
        return _read_mat(str(path))
    except Exception as err:  # scipy and h5py raise many types for broken files
        raise InputError(f"Lead-DBS {what} '{path}' cannot be read as a MATLAB file ({err}); it is "
                         "truncated or damaged: copy it again.") from None


def is_hdf5(path):
    """Whether a MATLAB file is version 7.3 (HDF5, after MATLAB's 512-byte user block)."""
    import h5py

    return h5py.is_hdf5(str(path))


def spm_affine(mat):
    """nibabel's (0-based) affine of SPM's 1-based voxel-to-world matrix."""
    mat = np.asarray(mat, dtype=np.float64).reshape(4, 4)
    affine = mat.copy()
    affine[:3, 3] = mat[:3, 3] + mat[:3, :3].sum(axis=1)
    return affine


def _as_list(cell):
    if isinstance(cell, np.ndarray):
        return [str(x) if not isinstance(x, (list, np.ndarray)) else x for x in cell.tolist()]
    return list(cell) if isinstance(cell, (list, tuple)) else [cell]


class LeadDbsConnectome(PreparedConnectome):
    format = "leaddbs"
    note = "one file per run; Lead-DBS averages r across runs, shardmap concatenates the centred runs"

    def __init__(self, path, run_frames=None):
        super().__init__(path, run_frames)
        folder = Path(self.path)
        if folder.is_file():  # dataset_info.json or dataset_volsurf.mat named directly
            folder = folder.parent
        self.folder = folder
        info = self._dataset_info()
        if info.get("type") == MATRIX or (folder / "AllX.mat").exists() and info.get("type") != TIMECOURSES:
            raise InputError(f"lnm.connectome.path '{self.path}' {MATRIX_REFUSAL}")
        self.formatversion = float(info.get("formatversion", 1.0))
        self.vol = self._vol()
        self._voxels = None

    @staticmethod
    def index_files(path):
        """The dataset files that describe the connectome at ``path`` (its voxels,
        subjects, layout)."""
        folder = Path(path).parent if Path(path).is_file() else Path(path)
        names = ("dataset_info.json", "dataset_volsurf.mat", "dataset_info.mat")
        return [folder / name for name in names if (folder / name).exists()]

    def _dataset_info(self):
        path = self.folder / "dataset_info.json"
        if not path.exists():
            return {}
        try:
            with open(path) as handle:
                info = json.load(handle)
        except (OSError, ValueError) as err:
            raise InputError(f"Lead-DBS dataset_info.json '{path}' is not readable JSON ({err}).") from None
        if info.get("type") not in (None, TIMECOURSES, MATRIX):
            raise InputError(f"Lead-DBS dataset_info.json '{path}' has type {info.get('type')!r}; shardmap reads "
                             f"type {TIMECOURSES}.")
        return info

    def _vol(self):
        volsurf, legacy = self.folder / "dataset_volsurf.mat", self.folder / "dataset_info.mat"
        if volsurf.exists():
            variables = read_mat(volsurf, "dataset_volsurf.mat")
            if "vol" not in variables:
                raise InputError(f"Lead-DBS file '{volsurf}' holds no struct 'vol' (it holds "
                                 f"{sorted(variables)}); is this a Lead-DBS connectome?")
            return variables["vol"]
        if legacy.exists():
            dataset = read_mat(legacy, "dataset_info.mat").get("dataset", {})
            if dataset.get("type") == MATRIX:
                raise InputError(f"lnm.connectome.path '{self.path}' {MATRIX_REFUSAL}")
            if "formatversion" in dataset:
                self.formatversion = float(dataset["formatversion"])
            if "vol" not in dataset:
                raise InputError(f"Lead-DBS file '{legacy}' holds no struct dataset.vol; is this a Lead-DBS "
                                 "connectome?")
            return dataset["vol"]
        raise InputError(f"lnm.connectome.path '{self.path}' holds neither dataset_volsurf.mat nor "
                         "dataset_info.mat; a Lead-DBS connectome folder has one of them beside its vol/ folder "
                         "(the oldest layout, outidx.mat + subIDs.mat, is not read: export the runs as NIfTI).")

    def subjects(self):
        cells = self.vol.get("subIDs")
        if cells is None:
            raise InputError(f"Lead-DBS connectome '{self.path}': vol.subIDs is missing; the file is damaged.")
        cells = _as_list(cells)
        if cells and not isinstance(cells[0], (list, np.ndarray)):
            cells = [cells]  # a single subject: MATLAB squeezes the outer cell away
        subjects, seen = [], set()
        for number, cell in enumerate(cells, start=1):
            cell = [str(x) for x in _as_list(cell)]
            if len(cell) < 2:
                raise InputError(f"Lead-DBS connectome '{self.path}': vol.subIDs{{{number}}} is {cell}; each "
                                 "subject needs an id and at least one run file.")
            if cell[0] in seen:
                raise InputError(f"Lead-DBS connectome '{self.path}': subject id '{cell[0]}' appears twice in "
                                 "vol.subIDs.")
            seen.add(cell[0])
            subjects.append(Subject(cell[0], tuple(self._run_path(name) for name in cell[1:])))
        return subjects

    def _run_path(self, name):
        # MATLAB's load() adds .mat to a name without an extension.
        path = self.folder / "vol" / name
        if not path.exists() and path.suffix != ".mat":
            path = path.with_name(path.name + ".mat")
        return str(path)

    def own_voxels(self):
        if self._voxels is None:
            space = self.vol.get("space", {})
            if "dim" not in space or "mat" not in space or "outidx" not in self.vol:
                raise InputError(f"Lead-DBS connectome '{self.path}': vol lacks outidx, space.dim or space.mat; "
                                 "the file is damaged.")
            shape = tuple(int(n) for n in np.ravel(space["dim"])[:3])
            outidx = np.ravel(np.asarray(self.vol["outidx"], dtype=np.float64))
            if outidx.size and (outidx.min() < 1 or outidx.max() > np.prod(shape)):
                raise InputError(f"Lead-DBS connectome '{self.path}': vol.outidx holds indices outside the grid "
                                 f"{shape} (they are 1-based); the file is damaged.")
            ijk = np.column_stack(np.unravel_index(outidx.astype(np.int64) - 1, shape, order="F"))
            self._voxels = ConnectomeVoxels(checked_indices(ijk, shape, self.path, "vol.outidx"),
                                            spm_affine(space["mat"]), shape, str(self.folder / "dataset_volsurf.mat"))
        return self._voxels

    def voxels_of(self, subject, mask=None):
        return self.own_voxels()

    def _gmtc_shape(self, path):
        """gmtc's shape as MATLAB sees it, from the file's header."""
        if not os.path.exists(path):
            raise InputError(f"Lead-DBS run file '{path}' does not exist; vol.subIDs names it. Copy the "
                             "connectome's vol/ folder whole.")
        try:
            if is_hdf5(path):
                import h5py

                with h5py.File(path, "r") as handle:
                    return tuple(reversed(handle["gmtc"].shape))
            import scipy.io

            shapes = {name: shape for name, shape, _ in scipy.io.whosmat(path)}
            return tuple(shapes["gmtc"])
        except KeyError:
            raise InputError(f"Lead-DBS run file '{path}' holds no variable gmtc; is it a run of this "
                             "connectome?") from None
        except (OSError, ValueError) as err:
            raise InputError(f"Lead-DBS run file '{path}' cannot be read ({err}); it is truncated or "
                             "damaged: copy it again.") from None

    def _oriented(self, shape, path):
        """(frames, voxels) of a gmtc of MATLAB ``shape``, as formatversion says it lies."""
        n_voxels = self.own_voxels().n_voxels
        if len(shape) != 2:
            raise InputError(f"Lead-DBS run file '{path}': gmtc has shape {shape}; expected a 2D array.")
        voxels, frames = shape if self.formatversion <= 1 else shape[::-1]
        if voxels != n_voxels:
            layout = "V x T" if self.formatversion <= 1 else "T x V"
            raise InputError(
                f"Lead-DBS run file '{path}': gmtc is {shape[0]} x {shape[1]}, but formatversion "
                f"{self.formatversion:g} means {layout} with V = {n_voxels} (vol.outidx). Check formatversion in "
                "dataset_info.json (1: V x T; 2: T x V) and that the file belongs to this connectome."
            )
        return frames, voxels

    def run_shapes(self, subject):
        return [self._oriented(self._gmtc_shape(path), path) for path in subject.runs]

    def read_runs(self, subject):
        for path in subject.runs:
            self._oriented(self._gmtc_shape(path), path)
            try:
                if is_hdf5(path):
                    import h5py

                    with h5py.File(path, "r") as handle:
                        stored = handle["gmtc"][()]  # MATLAB's transpose
                    gmtc = stored.T
                else:
                    import scipy.io

                    gmtc = scipy.io.loadmat(path, variable_names=["gmtc"])["gmtc"]
            except (OSError, ValueError) as err:
                raise InputError(f"Lead-DBS run file '{path}' cannot be read ({err}); it is truncated or "
                                 "damaged: copy it again.") from None
            if not np.issubdtype(gmtc.dtype, np.number):
                raise InputError(f"Lead-DBS run file '{path}': gmtc is of type {gmtc.dtype}; expected numbers.")
            yield path, (gmtc.T if self.formatversion <= 1 else gmtc)
