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


def lesion_voxels(lesion_path, mask_img):
    """Boolean mask-shaped lesion after nearest-neighbour resampling onto the mask grid."""
    resampled = resample_to_img(nib.load(lesion_path), mask_img, interpolation="nearest",
                                force_resample=True, copy_header=True)
    return (np.asarray(resampled.dataobj) > 0) & (np.asarray(mask_img.dataobj) > 0)


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


def reference_maps(mask_path, subjects, lesion_paths):
    """{lesion path: {"AvgR_Fz", "AvgR", "T"} as full 3D float64 volumes}."""
    mask_img = nib.load(mask_path)
    inside = np.asarray(mask_img.dataobj) > 0
    series = [subject_series(runs, inside) for _, runs in subjects]
    out = {}
    for path in lesion_paths:
        lesion = lesion_voxels(path, mask_img)[inside]
        z = np.stack([np.arctanh(np.clip(pearson_with_seed(x, x[lesion].mean(axis=0)), -CLIP, CLIP))
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
