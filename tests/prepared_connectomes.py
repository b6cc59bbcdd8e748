"""Tiny connectomes in the layouts other tools write, made from the synthetic NIfTI runs,
each by that format's own conventions (../shared/notes/connectome-formats.md): lacuna's
HDF5, the Fox lab's connectome_quick .npy files and Lead-DBS's .mat time courses.

The writers follow the tools' writers, not shardmap's readers: voxel order from
``np.where`` (lacuna, C order), nilearn's masker (connectome_quick, C order) or MATLAB's
``find`` (Lead-DBS, column-major, 1-based, with SPM's 1-based affine); version 7.3 MATLAB
files come from hdf5storage, which writes what MATLAB writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np


def mask_grid(mask_path):
    img = nib.load(str(mask_path))
    return np.asarray(img.dataobj) > 0, img.affine.copy()


def run_volumes(subjects):
    """{subject: [4D float32 run arrays]} of a dataset's (subject, [run paths]) pairs."""
    return {s: [np.asarray(nib.load(str(r)).dataobj, dtype=np.float32) for r in runs] for s, runs in subjects}


def flipped_x(inside, affine, volumes):
    """The same voxels stored left/right reversed, with the affine that keeps each voxel's
    world position (as TemplateFlow's MNI152NLin6Asym against FSL's)."""
    nx = inside.shape[0]
    flip = np.array([[-1.0, 0, 0, nx - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    return inside[::-1], affine @ flip, {s: [v[::-1] for v in runs] for s, runs in volumes.items()}


def write_lacuna(folder, mask_path, subjects, per_file=2, indices="V3", flip=False, mask_inside=None):
    """lacuna's gsp1000_to_hdf5 layout: run 1 of each subject, raw float32, gzip-1, one
    chunk per subject; ``indices`` "V3" as gsp1000_to_hdf5 writes mask_indices, "3V" as the
    older create_connectome_batches. ``mask_inside`` replaces the stored mask (a bigger one)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    inside, affine = mask_grid(mask_path)
    if mask_inside is not None:
        inside = mask_inside
    volumes = {s: runs[:1] for s, runs in run_volumes(subjects).items()}
    if flip:
        inside, affine, volumes = flipped_x(inside, affine, volumes)
    where = np.where(inside)
    names = list(volumes)
    files = []
    for start in range(0, len(names), per_file):
        chunk = names[start:start + per_file]
        series = np.stack([volumes[s][0][where].T for s in chunk]).astype(np.float32)
        path = folder / f"gsp1000_chunk_{start // per_file:03d}.h5"
        with h5py.File(path, "w") as handle:
            handle.create_dataset("timeseries", data=series, chunks=(1,) + series.shape[1:], compression="gzip",
                                  compression_opts=1)
            stacked = np.vstack(where)
            handle.create_dataset("mask_indices", data=stacked.T if indices == "V3" else stacked)
            handle.create_dataset("mask_affine", data=affine)
            handle.attrs["mask_shape"] = inside.shape
            handle.attrs["n_subjects"] = len(chunk)
            handle.attrs["n_timepoints"] = series.shape[1]
            handle.attrs["n_voxels"] = series.shape[2]
            handle.attrs["space"] = "MNI152_2mm"
        files.append(path)
    return files


def write_connectome_quick(folder, mask_path, subjects):
    """connectome_quick's layout: <subject>.npy (frames, V) float16 of the concatenated,
    uncentred runs in the masker's C order, and <subject>_norms.npy."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    inside, _ = mask_grid(mask_path)
    for subject, runs in run_volumes(subjects).items():
        series = np.concatenate([run[inside].T for run in runs]).astype(np.float16)
        np.save(folder / f"{subject}.npy", series)
        np.save(folder / f"{subject}_norms.npy", np.linalg.norm(series.astype(np.float32), axis=0).astype(np.float16))
    return folder


def spm_mat(affine):
    """SPM's voxel-to-world matrix of 1-based voxels."""
    mat = affine.copy()
    mat[:3, 3] = affine[:3, 3] - affine[:3, :3].sum(axis=1)
    return mat


def cell(items):
    array = np.empty(len(items), dtype=object)
    for index, item in enumerate(items):
        array[index] = item
    return array


def save_mat(path, variables, version):
    if version == "7.3":
        import hdf5storage

        hdf5storage.savemat(str(path), variables, format="7.3", matlab_compatible=True)
    else:
        import scipy.io

        scipy.io.savemat(str(path), variables)


def write_leaddbs(folder, mask_path, subjects, formatversion=1, version="5", matrix=False, legacy=False):
    """A Lead-DBS fMRI_timecourses connectome: dataset_info.json, dataset_volsurf.mat (vol:
    outidx 1-based column-major, space.dim/mat, subIDs) and vol/<subject>_run-<k>.mat with
    gmtc V x T (formatversion 1) or T x V (2). ``legacy``: dataset_info.mat (struct dataset)
    instead of the JSON + volsurf pair. ``matrix``: an fMRI_matrix connectome (AllX.mat)."""
    folder = Path(folder)
    (folder / "vol").mkdir(parents=True, exist_ok=True)
    inside, affine = mask_grid(mask_path)
    outidx = np.flatnonzero(inside.ravel(order="F")) + 1
    ijk = np.unravel_index(outidx - 1, inside.shape, order="F")
    if matrix:
        (folder / "dataset_info.json").write_text(json.dumps({"type": "fMRI_matrix"}))
        save_mat(folder / "AllX.mat", {"X": np.zeros((4, 4), dtype=np.int16)}, "7.3")
        return folder
    sub_ids = []
    for subject, runs in run_volumes(subjects).items():
        names = []
        for number, run in enumerate(runs, start=1):
            gmtc = run[ijk]  # V x T
            name = f"{subject}_run-{number}.mat"
            save_mat(folder / "vol" / name, {"gmtc": gmtc if formatversion == 1 else np.ascontiguousarray(gmtc.T)},
                     version)
            names.append(name)
        sub_ids.append(cell([subject] + names))
    vol = {"outidx": outidx.astype(np.float64), "space": {"dim": np.asarray(inside.shape, dtype=np.float64),
                                                          "mat": spm_mat(affine)},
           "subIDs": cell(sub_ids)}
    if legacy:
        save_mat(folder / "dataset_info.mat", {"dataset": {"type": "fMRI_timecourses", "vol": vol,
                                                           "formatversion": float(formatversion)}}, version)
    else:
        (folder / "dataset_info.json").write_text(json.dumps({"type": "fMRI_timecourses",
                                                              "formatversion": formatversion,
                                                              "subsets": [{"name": "Full Set", "subs": [1, 2]}]}))
        save_mat(folder / "dataset_volsurf.mat", {"vol": vol}, version)
    return folder
