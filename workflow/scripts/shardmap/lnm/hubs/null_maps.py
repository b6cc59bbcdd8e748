"""The random-lesion null at the group level: the null lesions' sensitivity maps, where the
real sensitivity map lies among null groups, and how alike the real and null maps are.

A null group of a real group of m lesions takes, for each real lesion, one of the null
lesions made from it, drawn at random: it has the real group's size and its lesions'
sizes (and, with ``shift``, shapes). ``n_resamples`` null groups are drawn once (from
the seed and the group's name) and used at every voxel, so the null sensitivity maps
are whole maps. At each voxel the percentile of the real sensitivity among the null
groups' is 100 x (number below + half the number equal) / n_resamples: 50 where the real
group is as sensitive as random lesions of its sizes, near 100 where it is more.

The maps are computed voxel block by voxel block from the merged sums of the real and
null batches (read through memory maps), so memory is a few blocks of (lesions x
block width), whatever the voxel count.
"""

from __future__ import annotations

import zlib

import numpy as np

from ...errors import InputError
from ..map_names import NULL_GROUP_MAP_NAMES, VERSUS_NULL_MAP_NAMES
from ..stats import SufficientStats, maps_from_sums
from .hub_bias import spatial_correlation
from .null_plan import check_nulls_per_lesion
from .tables import write_table

NULL_SUMMARY_COLUMNS = ["group", "n_lesions", "n_null_lesions", "n_resamples", "r_mean_AvgR_Fz_real_null",
                        "r_sensitivity_pos_real_null", "r_sensitivity_neg_real_null",
                        "r_real_mean_AvgR_Fz_degree", "r_null_mean_AvgR_Fz_degree",
                        "fraction_voxels_vs_null_ge_95"]
BLOCK_BYTES = 1 << 24  # float64 maps of all lesions per voxel block


def data_offset(path):
    """Where the array of a .npy file starts."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        header(handle)
        return handle.tell()


class StatsRows:
    """The lesions of several merged statistics files, addressed by lesion id, read one
    voxel block at a time. Blocks are read with pread rather than through a memory map, so
    the task's resident memory is its blocks, not the files it has read."""

    def __init__(self, stats_files, lesion_ids):
        stats_files = list(stats_files)
        self.stats = [SufficientStats.load(npy, info, mmap=True) for npy, info in stats_files]
        self.offsets = [data_offset(npy) for npy, _ in stats_files]
        self.paths = [npy for npy, _ in stats_files]
        where = {lesion_id: (f, i) for f, stats in enumerate(self.stats) for i, lesion_id in
                 enumerate(stats.lesion_ids)}
        missing = [lesion_id for lesion_id in lesion_ids if lesion_id not in where]
        if missing:
            raise InputError(f"lesions {missing[:5]} are not in the statistics {[s for s, _ in stats_files][:3]}; "
                             "delete lnm/stats and lnm/null under outdir and rerun.")
        self.where = [where[lesion_id] for lesion_id in lesion_ids]
        self.n_voxels = self.stats[0].n_voxels if self.stats else 0
        # Per file: the rows (positions in lesion_ids) it holds and their index in the file.
        self.rows_of_file = [([row for row, (file, _) in enumerate(self.where) if file == f],
                              [index for file, index in self.where if file == f]) for f in range(len(self.stats))]

    def __len__(self):
        return len(self.where)

    def maps(self, start, stop):
        """(AvgR_Fz, T) of every lesion at voxels [start, stop): two (L, width) arrays."""
        fz = np.empty((len(self.where), stop - start))
        t = np.empty_like(fz)
        for f, (stats, (rows, index)) in enumerate(zip(self.stats, self.rows_of_file)):
            if not rows:
                continue
            sums = self._read(f, index, start, stop)
            mean, _, tvalue = maps_from_sums(stats.n[index][:, None], sums[:, 0], sums[:, 1])
            fz[rows], t[rows] = mean, tvalue
        return fz, t

    def _read(self, f, index, start, stop):
        """sums[index, :, start:stop] of file ``f`` (float64, C order (L, 2, V))."""
        n_voxels, width = self.stats[f].n_voxels, stop - start
        out = np.empty((len(index), 2, width))
        with open(self.paths[f], "rb", buffering=0) as handle:
            for row, lesion in enumerate(index):
                for k in (0, 1):
                    handle.seek(self.offsets[f] + ((lesion * 2 + k) * n_voxels + start) * 8)
                    if handle.readinto(memoryview(out[row, k]).cast("B")) != width * 8:
                        raise InputError(f"statistics file '{self.paths[f]}' is truncated; delete it and rerun.")
        return out


def null_groups(real_ids, nulls_of, n_resamples, seed, label):
    """(n_resamples, number of null lesions) float32 matrix: row b counts the null lesions of
    null group b (one null lesion of each real lesion, drawn at random)."""
    n_null = sum(len(v) for v in nulls_of.values())
    selection = np.zeros((n_resamples, n_null), dtype=np.float32)
    rng = np.random.default_rng([int(seed), zlib.crc32(str(label).encode())])
    rows = np.arange(n_resamples)
    for lesion_id in real_ids:
        choices = np.asarray(nulls_of[lesion_id])
        np.add.at(selection, (rows, choices[rng.integers(len(choices), size=n_resamples)]), 1.0)
    return selection


def percentile_among(real_count, null_counts):
    """100 x (null counts below the real one + half those equal) / number of nulls, per voxel."""
    below = (null_counts < real_count).sum(axis=0)
    equal = (null_counts == real_count).sum(axis=0)
    return 100.0 * (below + 0.5 * equal) / null_counts.shape[0]


def null_group_maps(real_files, null_files, groups, null_sources, threshold, n_resamples, seed,
                    degree=None):
    """The null lesions' group maps, the real sensitivity's percentile among null groups and
    the summary rows.

    Parameters
    ----------
    real_files, null_files : (npy, json) pairs of the merged sums of the real and the null batches
    groups : dict real lesion id -> group label (or None)
    null_sources : dict null lesion id -> real lesion id it was made from
    threshold : |T| threshold of the sensitivity maps
    degree : the mask-ordered degree map, for the summary (optional)

    Returns
    -------
    (maps, rows): maps[(group label or None, name)] -> mask-ordered values for the names of
    NULL_GROUP_MAP_NAMES (prefixed "null_") and VERSUS_NULL_MAP_NAMES; rows for NULL_SUMMARY_COLUMNS.
    """
    real_ids, null_ids = list(groups), list(null_sources)
    real, null = StatsRows(real_files, real_ids), StatsRows(null_files, null_ids)
    if real.n_voxels != null.n_voxels:
        raise InputError("the real and null statistics are on different voxel counts; delete lnm/null and rerun.")
    null_index = {null_id: i for i, null_id in enumerate(null_ids)}
    nulls_of = {lesion_id: [] for lesion_id in real_ids}
    for null_id, source in null_sources.items():
        nulls_of[source].append(null_index[null_id])
    check_nulls_per_lesion(min(len(nulls) for nulls in nulls_of.values()), len(nulls_of))

    labels = [None] + sorted({g for g in groups.values() if g is not None})
    members = {label: [i for i, lesion_id in enumerate(real_ids) if label is None or groups[lesion_id] == label]
               for label in labels}
    plans = {}
    for label in labels:
        ids = [real_ids[i] for i in members[label]]
        null_members = np.array(sorted(i for lesion_id in ids for i in nulls_of[lesion_id]))
        plans[label] = (null_members, null_groups(ids, nulls_of, n_resamples, seed, label or "all")[:, null_members])

    n_voxels = real.n_voxels
    maps = {(label, name): np.zeros(n_voxels) for label in labels
            for name in [f"null_{n}" for n in NULL_GROUP_MAP_NAMES] + list(VERSUS_NULL_MAP_NAMES)}
    real_maps = {(label, name): np.zeros(n_voxels) for label in labels for name in NULL_GROUP_MAP_NAMES}
    width = max(256, BLOCK_BYTES // (8 * max(len(null_ids), 1)))
    for start in range(0, n_voxels, width):
        stop = min(start + width, n_voxels)
        real_fz, real_t = real.maps(start, stop)
        null_fz, null_t = null.maps(start, stop)
        for label in labels:
            rows = members[label]
            null_members, selection = plans[label]
            m = len(rows)
            for sign, name, versus in ((1, "sensitivity_pos", "sensitivity_vs_null"),
                                       (-1, "sensitivity_neg", "sensitivity_neg_vs_null")):
                real_hits = (sign * real_t[rows] > threshold).sum(axis=0)
                null_hits = (sign * null_t[null_members] > threshold).astype(np.float32)
                counts = selection @ null_hits  # exact: small whole numbers in float32
                maps[(label, versus)][start:stop] = percentile_among(real_hits, counts)
                maps[(label, f"null_{name}")][start:stop] = null_hits.mean(axis=0)
                real_maps[(label, name)][start:stop] = real_hits / m
            maps[(label, "null_mean_AvgR_Fz")][start:stop] = null_fz[null_members].mean(axis=0)
            real_maps[(label, "mean_AvgR_Fz")][start:stop] = real_fz[rows].mean(axis=0)

    rows = []
    for label in labels:
        def r(name):
            return spatial_correlation(real_maps[(label, name)], maps[(label, f"null_{name}")])

        rows.append({
            "group": label or "all", "n_lesions": len(members[label]), "n_null_lesions": len(plans[label][0]),
            "n_resamples": n_resamples, "r_mean_AvgR_Fz_real_null": r("mean_AvgR_Fz"),
            "r_sensitivity_pos_real_null": r("sensitivity_pos"), "r_sensitivity_neg_real_null": r("sensitivity_neg"),
            "r_real_mean_AvgR_Fz_degree": (spatial_correlation(real_maps[(label, "mean_AvgR_Fz")], degree)
                                           if degree is not None else float("nan")),
            "r_null_mean_AvgR_Fz_degree": (spatial_correlation(maps[(label, "null_mean_AvgR_Fz")], degree)
                                           if degree is not None else float("nan")),
            "fraction_voxels_vs_null_ge_95": float(np.mean(maps[(label, "sensitivity_vs_null")] >= 95.0)),
        })
    return maps, rows


def write_null_group_map_files(real_files, null_files, groups, null_sources, threshold, n_resamples, seed,
                               mask_path, paths, summary_path, degree_path=None):
    """Compute the null group maps and write them; ``paths`` maps (group label or None, name) -> file
    with names "null_sensitivity_pos", ..., "sensitivity_vs_null", "sensitivity_neg_vs_null"."""
    from ..nifti import load_mask, values_on_mask, write_map

    mask = load_mask(mask_path)
    degree = values_on_mask(degree_path, mask, "degree map") if degree_path else None
    maps, rows = null_group_maps(real_files, null_files, groups, null_sources, threshold, n_resamples, seed,
                                 degree)
    for key, path in paths.items():
        write_map(path, maps[key], mask, description=f"shardmap {key[1]}")
    write_table(summary_path, rows, NULL_SUMMARY_COLUMNS)
    return maps, rows
