"""The connectome's degree (strength) map, computed while a shard is prepared.

A voxel's degree in one subject is its mean correlation with every other mask voxel,
d(v) = sum over u != v of r(u, v) / (V - 1). With x_u each voxel's centred time course
scaled to unit norm, r(u, v) = x_u . x_v, so the sum over all u is x_v . g with
g = sum_u x_u: two matrix-vector products per subject instead of a V x V matrix. Shard
preparation holds every subject's float64 unit time courses anyway, so the degree is
exact in float64 and costs the mapping tasks nothing: the preparation task passes
``DegreeSums.add_subject`` to the shard writer (``connectome.shards.write_shard``, its
``on_subject``), which hands it every subject before letting it go. Zero-variance voxels
have r = 0 with everything (as in the lesion maps): their degree is 0 and they add
nothing to anyone's.

Per shard the sums over its subjects are stored beside the shard as
``shard-K.degree.npy`` (``degree_sums_path``), (3, V) float64: sum d, sum z(d) and sum
z(d)^2 with z = arctanh. They add across shards like the lesions' sums. The maps
(``write_degree_maps``) are the mean degree over subjects (``degree.nii.gz``: the mean r
of each voxel with all others) and the mean of its Fisher z over subjects
(``degree_Fz.nii.gz``).

A shard prepared by a shardmap without the degree map gets its sums from its stored
time courses instead (``python -m shardmap.lnm.hubs.degree PREFIX ...``, see the
README), so that an existing outdir need not be prepared and mapped again.
"""

from __future__ import annotations

import json

import numpy as np

from ...atomic import atomic_open
from ...errors import InputError

R_CLIP = 1.0 - 1e-7


def degree_sums_path(shard_prefix):
    """The degree sums file of the shard at ``shard_prefix``: ``shard-K.degree.npy``."""
    return str(shard_prefix) + ".degree.npy"


class DegreeSums:
    """The degree sums of a shard's subjects, added one subject at a time while the shard
    is written: pass ``add_subject`` as write_shard's ``on_subject``, then ``save``."""

    def __init__(self):
        self.total = None  # (3, V), allocated with the first subject

    def add_subject(self, unit, norm):
        """Add the subject whose (T, V) float64 unit time courses and norms are given."""
        if self.total is None:
            self.total = np.zeros((3, unit.shape[1]))
        self.total += degree_sums(subject_degree(unit, norm))

    def save(self, path):
        if self.total is None:
            raise ValueError("no subject was added to the degree sums")
        save_degree_sums(path, self.total)


def subject_degree(unit, norm):
    """Mean r of every voxel with all the others, (V,) float64.

    ``unit``: (T, V) float64 centred time courses of unit norm (0 for zero-variance
    voxels, whose ``norm`` is 0), as the shard preparation holds a subject.
    """
    n_voxels = unit.shape[1]
    total = unit.sum(axis=1)
    with_all = total @ unit
    with_all -= norm > 0  # r of a voxel with itself
    return with_all / max(n_voxels - 1, 1)


STORED_BLOCK = 8192  # voxels of stored float32 time courses widened to float64 at a time


def stored_subject_degree(frames, inv_stored_norm):
    """subject_degree of one subject of a prepared shard, from its stored (T, V) float32
    time courses scaled by their inverse stored norms (0 for zero-variance voxels), in
    float64, a block of voxels at a time."""
    n_frames, n_voxels = frames.shape
    total = np.zeros(n_frames)
    blocks = [slice(start, min(start + STORED_BLOCK, n_voxels)) for start in range(0, n_voxels, STORED_BLOCK)]
    for block in blocks:
        total += frames[:, block].astype(np.float64) @ inv_stored_norm[block]
    with_all = np.empty(n_voxels)
    for block in blocks:
        with_all[block] = (total @ frames[:, block].astype(np.float64)) * inv_stored_norm[block]
    with_all -= inv_stored_norm > 0
    return with_all / max(n_voxels - 1, 1)


def add_degree_to_stored_shard(prefix):
    """Write ``prefix.degree.npy`` from the stored time courses of the prepared shard at
    ``prefix`` (a shard prepared before the degree map existed); returns its path. Within
    float32 rounding of what the preparation computes (float16 storage: about 1e-5)."""
    from ..connectome.reader import ShardReader

    with ShardReader(prefix, prefetch=True) as reader:
        total = np.zeros((3, reader.info.n_voxels))
        for _, frames, _, inv_stored_norm in reader.subjects():
            total += degree_sums(stored_subject_degree(frames, inv_stored_norm))
    path = degree_sums_path(prefix)
    save_degree_sums(path, total)
    return path


def degree_sums(degrees):
    """(3, V) float64 sums [d, z(d), z(d)^2] over the rows of ``degrees`` (subjects)."""
    degrees = np.atleast_2d(degrees)
    z = np.arctanh(np.clip(degrees, -R_CLIP, R_CLIP))
    return np.stack([degrees.sum(axis=0), z.sum(axis=0), (z * z).sum(axis=0)])


def save_degree_sums(path, sums):
    with atomic_open(path) as handle:
        np.save(handle, np.asarray(sums, dtype=np.float64))


def merge_degree_files(shard_files, n_voxels):
    """Add the degree sums of every shard.

    ``shard_files``: (degree npy, shard info json) pairs. Returns (sums (3, V), subject
    ids). A subject in two shards, or a shard on another voxel count, is an InputError
    naming the file.
    """
    total = np.zeros((3, n_voxels))
    subjects = []
    for degree_path, info_path in shard_files:
        with open(info_path) as handle:
            info = json.load(handle)
        sums = np.load(degree_path)
        if sums.shape != (3, n_voxels) or info["n_voxels"] != n_voxels:
            raise InputError(f"degree sums '{degree_path}' have shape {sums.shape}, expected (3, {n_voxels}) "
                             "for this brain mask; delete the prepared connectome (lnm/connectome under "
                             "outdir) and rerun.")
        repeated = set(subjects) & set(info["subject_ids"])
        if repeated:
            raise InputError(f"subjects {sorted(repeated)[:5]} of '{info_path}' are in another shard too; "
                             "each subject must belong to exactly one shard.")
        subjects += list(info["subject_ids"])
        total += sums
    return total, subjects


def degree_maps(sums, n_subjects):
    """{'degree': mean d, 'degree_Fz': mean z(d)} over ``n_subjects``."""
    if n_subjects < 1:
        raise InputError("the degree map needs at least one connectome subject.")
    return {"degree": sums[0] / n_subjects, "degree_Fz": sums[1] / n_subjects}


def write_degree_maps(shard_files, mask_path, paths):
    """Merge the shards' degree sums and write the maps; ``paths``: name -> NIfTI file."""
    from ..nifti import load_mask, write_map

    mask = load_mask(mask_path)
    sums, subjects = merge_degree_files(shard_files, mask.n_voxels)
    for name, values in degree_maps(sums, len(subjects)).items():
        write_map(paths[name], values, mask, description=f"shardmap {name} n={len(subjects)}")
    return sums, subjects


if __name__ == "__main__":
    import sys

    # python -m shardmap.lnm.hubs.degree results/lnm/connectome/shard-????.npy: the data
    # file (or prefix) of each shard; the shard's other .npy files are passed over.
    for path in sys.argv[1:]:
        if not path.endswith((".norms.npy", ".degree.npy")):
            print(add_degree_to_stored_shard(path.removesuffix(".npy")))
