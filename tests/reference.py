"""An independent float64 reference of the fLNM statistic, written from the definition.

It shares no code with shardmap: nilearn resamples the lesion (nearest neighbour, by
world coordinates), every subject's full z map is kept in memory, and mean, sd and T
come from NumPy's own reductions over the stacked maps.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
from nilearn.image import resample_to_img

CLIP = 1.0 - 1e-7


def lesion_weights(lesion_path, mask_img, lesion_values="binary", threshold=0.5):
    """Mask-shaped seed weights of a lesion after nearest-neighbour resampling of its values
    onto the mask grid: 1 on lesioned voxels (value > 0, or >= ``threshold`` with
    ``lesion_values`` 'threshold'), or the value itself ('weighted'); 0 elsewhere."""
    resampled = resample_to_img(nib.load(lesion_path), mask_img, interpolation="nearest",
                                force_resample=True, copy_header=True)
    values = np.asarray(resampled.dataobj, dtype=np.float64) * (np.asarray(mask_img.dataobj) > 0)
    if lesion_values == "weighted":
        return values
    return (values >= threshold if lesion_values == "threshold" else values > 0).astype(np.float64)


def subject_series(run_paths, inside):
    """(V, T) float64: each run centred per voxel, runs concatenated in time."""
    runs = []
    for path in run_paths:
        data = nib.load(path).get_fdata(dtype=np.float64)[inside]
        runs.append(data - data.mean(axis=1, keepdims=True))
    return np.concatenate(runs, axis=1)


def pearson_with_seed(series, seed):
    """r of every row of ``series`` with ``seed``; 0 where either has zero variance."""
    xs = series - series.mean(axis=1, keepdims=True)
    s = seed - seed.mean()
    denom = np.sqrt((xs ** 2).sum(axis=1) * (s ** 2).sum())
    r = np.zeros(series.shape[0])
    ok = denom > 0
    r[ok] = (xs[ok] @ s) / denom[ok]
    return r


def reference_maps(mask_path, subjects, lesion_paths, lesion_values="binary", threshold=0.5):
    """{lesion path: {"AvgR_Fz", "AvgR", "T"} as full 3D float64 volumes}. The seed is the
    mean time course of the lesion's voxels, weighted by their values with
    ``lesion_values`` 'weighted' (sum of w x over sum of w)."""
    mask_img = nib.load(mask_path)
    inside = np.asarray(mask_img.dataobj) > 0
    series = [subject_series(runs, inside) for _, runs in subjects]
    out = {}
    for path in lesion_paths:
        w = lesion_weights(path, mask_img, lesion_values, threshold)[inside]
        z = np.stack([np.arctanh(np.clip(pearson_with_seed(x, (w @ x) / w.sum()), -CLIP, CLIP))
                      for x in series])
        mean = z.mean(axis=0)
        sd = z.std(axis=0, ddof=1)
        t = np.where(sd > 0, mean / np.where(sd > 0, sd, 1.0) * np.sqrt(len(series)), 0.0)
        maps = {"AvgR_Fz": mean, "AvgR": np.tanh(mean), "T": t}
        out[path] = {}
        for name, values in maps.items():
            volume = np.zeros(inside.shape)
            volume[inside] = values
            out[path][name] = volume
    return out


def degree_map(mask_path, subjects):
    """(subjects, V): per subject, each mask voxel's mean r with every other mask voxel, from
    the subject's full correlation matrix (r = 0 with a zero-variance voxel)."""
    inside = np.asarray(nib.load(mask_path).dataobj) > 0
    degrees = []
    for _, runs in subjects:
        series = subject_series(runs, inside)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.nan_to_num(np.corrcoef(series), nan=0.0)
        np.fill_diagonal(r, 0.0)
        degrees.append(r.sum(axis=1) / (len(series) - 1))
    return np.array(degrees)
