"""Mergeable sufficient statistics of Fisher-z maps and the maps computed from them.

For each lesion l and voxel v a task keeps n (subjects seen), sum z and sum z^2 in
float64. Sums from disjoint sets of subjects add up exactly (to float rounding), so
shards can be computed anywhere, in any order, and merged afterwards.

On disk a statistics object is two files:

``X.npy``  (L, 2, V) float64 with [sum_z, sum_z2] per lesion; a lesion's row is
           contiguous, so one lesion can be read alone through a memory map.
``X.json`` lesion ids, n per lesion, the subject ids that contributed, voxel count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ..atomic import atomic_open
from ..errors import InputError

# Where the across-subject variance is below this fraction of the mean square, z is the
# same in every subject up to float rounding (e.g. voxels of a one-voxel lesion, where
# r is clipped in every subject): sd counts as 0 there and T is set to 0.
ZERO_SD_RTOL_SQ = 1e-12


@dataclass
class SufficientStats:
    lesion_ids: list
    n: np.ndarray  # (L,) int64
    sums: np.ndarray  # (L, 2, V) float64: sum_z, sum_z2
    subject_ids: list

    @classmethod
    def zeros(cls, lesion_ids, n_voxels):
        return cls(list(lesion_ids), np.zeros(len(lesion_ids), dtype=np.int64),
                   np.zeros((len(lesion_ids), 2, n_voxels)), [])

    @property
    def sum_z(self):
        return self.sums[:, 0, :]

    @property
    def sum_z2(self):
        return self.sums[:, 1, :]

    @property
    def n_voxels(self):
        return self.sums.shape[2]

    def add(self, other):
        """Add the statistics of a disjoint set of subjects (in place); returns self."""
        if list(other.lesion_ids) != list(self.lesion_ids):
            raise InputError("cannot merge statistics of different lesion batches: "
                             f"{other.lesion_ids[:3]}... vs {self.lesion_ids[:3]}...; "
                             "delete the partial sums and rerun.")
        if other.n_voxels != self.n_voxels:
            raise InputError(f"cannot merge statistics on {other.n_voxels} and {self.n_voxels} voxels; "
                             "the mask changed between runs: delete the partial sums and rerun.")
        overlap = set(self.subject_ids) & set(other.subject_ids)
        if overlap:
            raise InputError(f"subjects {sorted(overlap)[:5]} would be counted twice in a merge; "
                             "each subject must belong to exactly one shard.")
        self.n += other.n
        self.sums += other.sums
        self.subject_ids = list(self.subject_ids) + list(other.subject_ids)
        return self

    def save(self, data_path, info_path):
        with atomic_open(data_path) as handle:
            np.save(handle, self.sums)
        info = {"lesion_ids": list(self.lesion_ids), "n": [int(x) for x in self.n],
                "subject_ids": list(self.subject_ids), "n_voxels": int(self.n_voxels)}
        with atomic_open(info_path, "w") as handle:
            json.dump(info, handle, indent=1)

    @classmethod
    def load(cls, data_path, info_path, mmap=False):
        with open(info_path) as handle:
            info = json.load(handle)
        sums = np.load(data_path, mmap_mode="r" if mmap else None)
        if sums.shape != (len(info["lesion_ids"]), 2, info["n_voxels"]):
            raise InputError(f"statistics file '{data_path}' does not match '{info_path}'; "
                             "delete both and rerun.")
        return cls(info["lesion_ids"], np.asarray(info["n"], dtype=np.int64), sums, info["subject_ids"])


def merge(parts):
    """Sum several SufficientStats of the same lesions over disjoint subjects."""
    parts = list(parts)
    if not parts:
        raise ValueError("nothing to merge")
    total = SufficientStats(list(parts[0].lesion_ids), np.zeros_like(parts[0].n),
                            np.zeros(parts[0].sums.shape), [])
    for part in parts:
        total.add(part)
    return total


def merge_files(pairs, data_path, info_path):
    """Merge statistics files given as (npy, json) pairs, reading one part at a time."""
    total = None
    for npy, info in pairs:
        part = SufficientStats.load(npy, info, mmap=True)
        if total is None:
            total = SufficientStats(list(part.lesion_ids), np.zeros_like(part.n),
                                    np.zeros(part.sums.shape), [])
        try:
            total.add(part)
        except InputError as err:
            raise InputError(f"merging '{info}' into '{info_path}': {err}") from err
    total.save(data_path, info_path)
    return total


def maps_from_sums(n, sum_z, sum_z2):
    """AvgR_Fz, AvgR and T from n, sum z and sum z^2 (arrays broadcast over voxels).

    AvgR_Fz = mean z; AvgR = tanh(AvgR_Fz); T = mean z / (sd(z, ddof=1) / sqrt(n)),
    with T = 0 where sd is 0 (to rounding, see ZERO_SD_RTOL_SQ). All outputs are finite.
    """
    n = np.asarray(n, dtype=np.float64)
    if np.any(n < 2):
        raise InputError(f"T needs at least 2 subjects per lesion, got n = {int(n.min())}; the "
                         "connectome sheet (lnm.connectome.subjects) must list at least 2 subjects.")
    mean = sum_z / n
    var = (sum_z2 - sum_z * mean) / (n - 1)
    var[var <= ZERO_SD_RTOL_SQ * (sum_z2 / n)] = 0.0
    sd = np.sqrt(var)
    t = np.divide(mean * np.sqrt(n), sd, out=np.zeros_like(mean), where=sd > 0)
    return mean, np.tanh(mean), t


def lesion_maps(stats, index):
    """The three maps of lesion ``index`` of a SufficientStats (works on memory maps)."""
    row = np.asarray(stats.sums[index])
    fz, r, t = maps_from_sums(stats.n[index], row[0], row[1])
    return {"AvgR_Fz": fz, "AvgR": r, "T": t}
