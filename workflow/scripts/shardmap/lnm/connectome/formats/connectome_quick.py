"""The Fox lab's ``connectome_quick`` files (nimlab; also pfc-toolkit's input).

One ``<subject>.npy`` per subject: (frames, V) float16, the subject's runs concatenated
in time (uncentred), the voxels in C order over the brain mask they were masked with,
and ``<subject>_norms.npy`` beside it (per-voxel norms of the uncentred data, not used
here). The files store neither the mask nor its affine, so lnm.connectome.mask is
required and must have V voxels; nor the run boundaries, so each file is cut into runs
of lnm.connectome.run_frames frames, each centred on its own.

pfc-toolkit's precomputed chunk folders are not per-subject data and are refused.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ....errors import InputError
from ...sheets import Subject
from ..voxels import ConnectomeVoxels
from .base import PreparedConnectome

NORMS_SUFFIX = "_norms"
PFC_CHUNK_FILE = re.compile(r"^\d+_(AvgR|AvgR_Fz|T|Combo)\.npy$")
PFC_FOLDERS = ("AvgR", "AvgR_Fz", "T", "Combo")


def refuse_pfc_folder(path):
    """Stop on a pfc-toolkit precomputed folder: its chunks hold group statistics of voxel
    pairs (an approximation of the seed map), not subjects' time series."""
    folder = Path(path)
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    chunk_files = [n for n in names if PFC_CHUNK_FILE.match(n)]
    if chunk_files or sum(name in names for name in PFC_FOLDERS) >= 2:
        raise InputError(
            f"lnm.connectome.path '{path}' is a pfc-toolkit precomputed connectome (chunk files of group "
            "AvgR / AvgR_Fz / T / Combo statistics). It holds no per-subject time series, so the exact seed map "
            "and its T map across subjects cannot be computed from it. Point lnm.connectome.path at the "
            "connectome_quick .npy files it was built from (format connectome_quick), or at the NIfTI runs."
        )


class ConnectomeQuick(PreparedConnectome):
    format = "connectome_quick"

    def __init__(self, path, run_frames=None):
        super().__init__(path, run_frames)
        if os.path.isdir(self.path):
            refuse_pfc_folder(self.path)
            self.files = sorted(str(p) for p in Path(self.path).iterdir()
                                if p.suffix == ".npy" and p.is_file() and not p.stem.endswith(NORMS_SUFFIX))
            if not self.files:
                raise InputError(f"lnm.connectome.path '{self.path}' holds no <subject>.npy file; a "
                                 "connectome_quick connectome is a folder of per-subject .npy files.")
        else:
            self.files = [self.path]
        self.note = (f"runs cut every {run_frames} frames (lnm.connectome.run_frames): connectome_quick "
                     "stores the runs concatenated, without their boundaries")

    def subjects(self):
        return [Subject(Path(path).stem, (path,)) for path in self.files]

    def _array(self, path):
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise InputError(f"connectome_quick file '{path}' cannot be read as a .npy array ({err}); it is "
                             "truncated or damaged: copy it again.") from None
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
            raise InputError(f"connectome_quick file '{path}' holds a {array.dtype} array of shape "
                             f"{array.shape}; connectome_quick stores (time points, voxels) per subject.")
        return array

    def voxels_of(self, subject, mask):
        path = subject.runs[0]
        n_voxels = self._array(path).shape[1]
        if n_voxels != mask.n_voxels:
            raise InputError(
                f"connectome_quick file '{path}' has {n_voxels} voxels but the brain mask '{mask.path}' has "
                f"{mask.n_voxels}. These files store no mask: set lnm.connectome.mask to the mask they were made "
                "with (the Fox lab's GSP1000 files: FSL's MNI152_T1_2mm_brain_mask_dil, 292,019 voxels)."
            )
        # The voxels are the mask's own, in its C order (nilearn's NiftiMasker order): one
        # object for every file, so that they are matched to the mask once.
        if getattr(self, "_voxels", None) is None or self._voxels[0] is not mask:
            self._voxels = (mask, ConnectomeVoxels(mask.ijk, mask.affine, mask.shape, self.path))
        return self._voxels[1]

    def run_shapes(self, subject):
        path = subject.runs[0]
        frames, voxels = self._array(path).shape
        if frames % self.run_frames:
            raise InputError(
                f"connectome_quick file '{path}' has {frames} time points, which lnm.connectome.run_frames "
                f"({self.run_frames}) does not divide. Set run_frames to the length of one run of this "
                f"connectome (all runs must have it), or to {frames} to centre the file as a single run."
            )
        return [(self.run_frames, voxels)] * (frames // self.run_frames)

    def read_runs(self, subject):
        path = subject.runs[0]
        array = self._array(path)
        for start in range(0, array.shape[0], self.run_frames):
            try:
                yield path, np.array(array[start:start + self.run_frames])
            except (OSError, ValueError) as err:
                raise InputError(f"connectome_quick file '{path}' cannot be read ({err}); copy it again.") from None
