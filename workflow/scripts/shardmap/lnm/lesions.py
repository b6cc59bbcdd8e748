"""Lesion masks: taken onto the brain-mask grid by world coordinates, with QC.

A lesion is matched to the mask grid through the two affines, never by voxel index, so a
radiologically stored lesion and a RAS copy of it select the same mask voxels. Two rules
(``LesionRules``, from the config) say how a lesion image becomes seed voxels:

* its values (``lnm.lesion_values``): ``binary`` (values must be 0 or 1), ``threshold``
  (voxels >= ``lnm.lesion_threshold`` are lesioned, each with weight 1) or ``weighted``
  (every voxel > 0 is lesioned with its value as weight: the seed is the weighted mean
  time course, as the Fox lab's connectome_quick computes it for ROIs and atrophy maps).
  NaN, Inf and negative values are refused whatever the rule.
* its resampling (``lnm.lesion_resampling``): ``nearest`` (each mask voxel centre takes
  the value of the nearest lesion voxel) or ``coverage`` (each mask voxel is sampled at
  k x k x k points spread evenly through its volume, k = SUPERSAMPLING; it is lesioned
  when at least ``lnm.lesion_coverage`` of its points fall in lesioned voxels; with
  ``weighted`` its weight is the mean lesion value over all its points). Coverage keeps
  lesions thinner than the mask's voxels, which nearest-neighbour sampling can lose.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

import numpy as np

from ..atomic import atomic_open
from ..errors import InputError, problems_error
from .nifti import load_image, read_data, squeeze_to_3d

QC_COLUMNS = ["lesion_id", "group", "path", "lesion_values", "resampling", "value_min", "value_max",
              "n_voxels_input", "volume_input_mm3", "n_voxels_in_mask", "fraction_outside_mask",
              "centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]
LESION_VALUE_RULES = ("binary", "threshold", "weighted")
RESAMPLING_RULES = ("nearest", "coverage")
# Points per axis at which a mask voxel is sampled for the coverage rule: 4 x 4 x 4 = 64
# points, so coverage is resolved in steps of 1/64 and a 1 mm lesion on a 2 mm grid is
# sampled at 0.5 mm.
SUPERSAMPLING = 4
COVERAGE_CHUNK = 8192  # mask voxels sampled at a time: 8192 x 64 points, 12 MiB of coordinates


# Where a point lies exactly halfway between two voxel centres, the nearest voxel is
# decided in world space (the one towards +x, +y, +z), not in the grid's index space:
# otherwise a radiological and a RAS copy of the same lesion would round differently.
TIE_BREAK_MM = 1e-4


@dataclass(frozen=True)
class LesionRules:
    """How a lesion image becomes weighted seed voxels (see the module's docstring)."""

    values: str = "binary"
    threshold: float = 0.5
    resampling: str = "nearest"
    coverage: float = 0.25

    def __post_init__(self):
        if self.values not in LESION_VALUE_RULES:
            raise InputError(f"lnm.lesion_values is '{self.values}'; use one of {', '.join(LESION_VALUE_RULES)}.")
        if self.resampling not in RESAMPLING_RULES:
            raise InputError(f"lnm.lesion_resampling is '{self.resampling}'; use one of "
                             f"{', '.join(RESAMPLING_RULES)}.")

    @classmethod
    def from_config(cls, lnm):
        """The rules of the ``lnm`` config section (schema defaults filled in)."""
        return cls(lnm.get("lesion_values", "binary"), float(lnm.get("lesion_threshold", 0.5)),
                   lnm.get("lesion_resampling", "nearest"), float(lnm.get("lesion_coverage", 0.25)))

    def values_label(self):
        return f"threshold>={self.threshold:g}" if self.values == "threshold" else self.values

    def resampling_label(self):
        return f"coverage>={self.coverage:g}" if self.resampling == "coverage" else self.resampling


def _nearest_voxel(points_world, affine, shape):
    """Nearest voxel indices of world points in a grid, and whether each lies inside it."""
    inverse = np.linalg.inv(affine)
    ijk = (points_world + TIE_BREAK_MM) @ inverse[:3, :3].T + inverse[:3, 3]
    ijk = np.floor(ijk + 0.5).astype(np.int64)
    inside = np.all((ijk >= 0) & (ijk < np.asarray(shape)), axis=1)
    return ijk, inside


def _world(ijk, affine):
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _sample(values, points_world, affine):
    """The lesion value (0 outside its grid) of the nearest lesion voxel of each point."""
    ijk, inside = _nearest_voxel(points_world, affine, values.shape)
    sampled = np.zeros(len(points_world))
    sampled[inside] = values[ijk[inside, 0], ijk[inside, 1], ijk[inside, 2]]
    return sampled


@dataclass
class LesionOnMask:
    """A lesion as mask-ordered voxel indices and their seed weights, with its QC row."""

    lesion_id: str
    mask_positions: np.ndarray  # int64 positions into the mask order
    weights: np.ndarray  # float64 weight of each position in the seed (1 unless weighted)
    qc: dict


def lesion_values(data, rules, what, path):
    """The lesion's value on its own grid under ``rules`` (float64, 0 where not lesioned),
    or InputError naming the lesion, the file, the count of offending voxels and the fix."""
    data = np.asarray(data, dtype=np.float64)
    bad = ~np.isfinite(data)
    if bad.any():
        raise InputError(f"{what} ('{path}') has {int(bad.sum())} voxel(s) that are NaN or Inf; a lesion "
                         "holds finite values >= 0. Set them to 0 outside the lesion (e.g. fslmaths "
                         "<in> -nan <out>) and export it again.")
    negative = data < 0
    if negative.any():
        raise InputError(f"{what} ('{path}') has {int(negative.sum())} voxel(s) below 0 (down to "
                         f"{data.min():g}); a lesion holds values >= 0 (a mask, a probability or a "
                         "weight). Set them to 0 or export the lesion again.")
    if rules.values == "binary":
        other = (data != 0) & (data != 1)
        if other.any():
            raise InputError(
                f"{what} ('{path}') has {int(other.sum())} voxel(s) with values other than 0 and 1 "
                f"(from {data[other].min():g} to {data[other].max():g}), but lnm.lesion_values is "
                "'binary'. Choose how to read them: lnm.lesion_values: threshold (voxels >= "
                "lnm.lesion_threshold, default 0.5, are lesioned) or weighted (the seed is the "
                "value-weighted mean time course), or binarise the lesion yourself.")
        return data
    if rules.values == "threshold":
        return (data >= rules.threshold).astype(np.float64)
    return data


def lesion_on_mask(lesion, mask, mask_volume=None, rules=LesionRules()):
    """Take one lesion (sheets.Lesion) onto ``mask`` (nifti.BrainMask) under ``rules``.

    Returns a LesionOnMask; raises InputError if the file is unusable or no lesion voxel
    lands inside the mask, saying why. A lesion partly outside the mask is fine: the QC row
    reports the fraction of its (input) voxels whose centres fall outside.
    """
    what = f"lesion '{lesion.lesion_id}'"
    img = load_image(lesion.path, what)
    raw = np.asarray(squeeze_to_3d(read_data(img, lesion.path, what), lesion.path, what))
    values = lesion_values(raw, rules, what, lesion.path)
    lesioned = values > 0
    n_input = int(lesioned.sum())
    nonzero = raw[raw > 0]
    if nonzero.size == 0:
        raise InputError(f"{what} ('{lesion.path}') has no voxel > 0; it is empty. "
                         "Check the file or remove the lesion from the sheet.")
    if n_input == 0:
        raise InputError(f"{what} ('{lesion.path}') has no voxel >= lnm.lesion_threshold "
                         f"({rules.threshold:g}); its largest value is {nonzero.max():g}. Lower "
                         "lnm.lesion_threshold or check the file.")
    if mask_volume is None:
        mask_volume = mask.to_volume(True, fill=False, dtype=bool)

    lesion_world = _world(np.argwhere(lesioned), img.affine)
    if rules.resampling == "nearest":
        # Pull: every mask voxel takes the value of the nearest lesion voxel.
        sampled = _sample(values, _world(mask.ijk, mask.affine), img.affine)
        positions = np.flatnonzero(sampled > 0)
        weights = sampled[positions]
        best_coverage = None
    else:
        positions, weights, best_coverage = _covered_mask_voxels(values, img.affine, lesion_world, mask, rules)
    if rules.values != "weighted":
        weights = np.ones(positions.size)

    # QC on the lesion's own grid: where do its voxel centres fall on the mask grid?
    mijk, minside = _nearest_voxel(lesion_world, mask.affine, mask.shape)
    in_mask = np.zeros(n_input, dtype=bool)
    in_mask[minside] = mask_volume[mijk[minside, 0], mijk[minside, 1], mijk[minside, 2]]
    centroid = lesion_world.mean(axis=0)
    voxel_volume = abs(float(np.linalg.det(img.affine[:3, :3])))
    qc = {
        "lesion_id": lesion.lesion_id,
        "group": lesion.group if lesion.group is not None else "",
        "path": lesion.path,
        "lesion_values": rules.values_label(),
        "resampling": rules.resampling_label(),
        "value_min": f"{nonzero.min():g}",
        "value_max": f"{nonzero.max():g}",
        "n_voxels_input": n_input,
        "volume_input_mm3": round(n_input * voxel_volume, 3),
        "n_voxels_in_mask": int(positions.size),
        "fraction_outside_mask": round(float(1.0 - in_mask.mean()), 6),
        "centroid_x_mm": round(float(centroid[0]), 2),
        "centroid_y_mm": round(float(centroid[1]), 2),
        "centroid_z_mm": round(float(centroid[2]), 2),
    }
    if positions.size == 0:
        where = (f"({n_input} lesion voxels, centroid at "
                 f"{tuple(qc[k] for k in ('centroid_x_mm', 'centroid_y_mm', 'centroid_z_mm'))} mm)")
        if not in_mask.any():
            raise InputError(
                f"{what} ('{lesion.path}') has no voxel inside the brain mask '{mask.path}' after "
                f"taking it onto the mask grid by world coordinates {where}. Check that the lesion "
                "is in the mask's space (e.g. MNI152) or remove it from the sheet.")
        if rules.resampling == "nearest":
            raise InputError(
                f"{what} ('{lesion.path}'): {int(in_mask.sum())} of its {n_input} voxels lie inside the "
                f"brain mask '{mask.path}', but none is the nearest lesion voxel of a mask voxel centre: "
                "the lesion is thinner than the mask's voxels, so nearest-neighbour resampling loses "
                "it. Set lnm.lesion_resampling: coverage (a mask voxel then counts when at least "
                "lnm.lesion_coverage of its volume is lesioned).")
        raise InputError(
            f"{what} ('{lesion.path}'): no mask voxel is lesioned over at least lnm.lesion_coverage = "
            f"{rules.coverage:g} of its volume (the most is {best_coverage:.3g}) {where}. Lower "
            "lnm.lesion_coverage.")
    return LesionOnMask(lesion.lesion_id, positions, weights, qc)


def _covered_mask_voxels(values, affine, lesion_world, mask, rules):
    """(positions, weights, largest coverage) of the coverage rule: every mask voxel near
    the lesion (whose voxel centres are ``lesion_world``) is sampled at SUPERSAMPLING^3
    points through its volume."""
    corners = _world(np.array([[i, j, k] for i in (-0.5, 0.5) for j in (-0.5, 0.5) for k in (-0.5, 0.5)]),
                     affine) - affine[:3, 3]
    low = lesion_world.min(axis=0) + corners.min(axis=0)
    high = lesion_world.max(axis=0) + corners.max(axis=0)
    # Only mask voxels whose volume can meet the lesion's bounding box are sampled.
    reach = np.abs(mask.affine[:3, :3]).sum(axis=1) / 2
    centres = _world(mask.ijk, mask.affine)
    near = np.flatnonzero(np.all((centres >= low - reach) & (centres <= high + reach), axis=1))
    steps = (np.arange(SUPERSAMPLING) + 0.5) / SUPERSAMPLING - 0.5
    offsets = np.array([[i, j, k] for i in steps for j in steps for k in steps]) @ mask.affine[:3, :3].T
    sampled = np.empty((near.size, len(offsets)))
    for start in range(0, near.size, COVERAGE_CHUNK):  # bounds the points held at once
        chunk = near[start:start + COVERAGE_CHUNK]
        points = (centres[chunk][:, None, :] + offsets[None, :, :]).reshape(-1, 3)
        sampled[start:start + chunk.size] = _sample(values, points, affine).reshape(chunk.size, len(offsets))
    covered = (sampled > 0).mean(axis=1)
    kept = covered >= rules.coverage
    best = float(covered.max()) if covered.size else 0.0
    return near[kept].astype(np.int64), sampled[kept].mean(axis=1), best


@dataclass
class LesionBatch:
    """The lesions of one batch as concatenated mask positions with offsets, and the
    weight of each position in its lesion's seed (all 1 unless lesion values are weights)."""

    lesion_ids: list
    offsets: np.ndarray  # (L + 1,) int64
    positions: np.ndarray  # int64 positions into mask order
    mask_fingerprint: str
    weights: np.ndarray | None = None  # float64, like positions; None means all 1

    def __post_init__(self):
        if self.weights is None:
            self.weights = np.ones(len(self.positions))

    def __len__(self):
        return len(self.lesion_ids)

    def positions_of(self, index):
        return self.positions[self.offsets[index]:self.offsets[index + 1]]

    def weights_of(self, index):
        return self.weights[self.offsets[index]:self.offsets[index + 1]]

    def save(self, path):
        with atomic_open(path) as handle:
            np.savez(handle, lesion_ids=np.asarray(self.lesion_ids, dtype=str), offsets=self.offsets,
                     positions=self.positions, weights=self.weights,
                     mask_fingerprint=np.asarray(self.mask_fingerprint))

    @classmethod
    def load(cls, path):
        with np.load(path, allow_pickle=False) as data:
            weights = data["weights"] if "weights" in data.files else None
            return cls([str(x) for x in data["lesion_ids"]], data["offsets"], data["positions"],
                       str(data["mask_fingerprint"]), weights)


def prepare_lesion_batch(lesions, mask, batch_path, qc_path, rules=LesionRules(), check=None):
    """Take a batch of lesions onto the mask grid; write the batch file and its QC table.

    Every lesion is checked; one error names every bad lesion of the batch (up to
    MAX_PROBLEMS_SHOWN), and then nothing is written. ``check``, if given, is called with
    the prepared LesionBatch and the mask before anything is written (a later step's own
    demand on the lesions, such as room outside them to fit the degree map).
    """
    mask_volume = mask.to_volume(True, fill=False, dtype=bool)
    resampled, problems = [], []
    for lesion in lesions:
        try:
            resampled.append(lesion_on_mask(lesion, mask, mask_volume, rules))
        except InputError as err:
            problems.append(str(err))
    if len(problems) == 1:
        raise InputError(problems[0])
    if problems:
        raise problems_error(f"{len(problems)} of the {len(lesions)} lesions of this batch are unusable; "
                             "nothing was mapped", problems)
    sizes = [item.mask_positions.size for item in resampled]
    batch = LesionBatch([item.lesion_id for item in resampled],
                        np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                        np.concatenate([item.mask_positions for item in resampled]).astype(np.int64),
                        mask.fingerprint(),
                        np.concatenate([item.weights for item in resampled]).astype(np.float64))
    if check is not None:
        check(batch, mask)
    write_qc_table(qc_path, [item.qc for item in resampled])
    batch.save(batch_path)
    return batch


def write_qc_table(path, rows):
    """Write QC rows (dicts with QC_COLUMNS) as a tab-separated table, atomically."""
    with atomic_open(path, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=QC_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def read_qc_table(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def prepare_lesion_batch_files(mask_path, lesions, batch_path, qc_path, rules=None, check=None):
    """Load the mask and prepare one lesion batch; ``lesions`` are sheets.Lesion or
    (lesion_id, path, group) triples, ``rules`` a LesionRules or the ``lnm`` config
    section (None: binary values, nearest-neighbour resampling); ``check`` as in
    prepare_lesion_batch."""
    from .nifti import load_mask
    from .sheets import Lesion

    lesions = [x if isinstance(x, Lesion) else Lesion(*x) for x in lesions]
    if not isinstance(rules, LesionRules):
        rules = LesionRules.from_config(rules or {})
    return prepare_lesion_batch(lesions, load_mask(mask_path), batch_path, qc_path, rules, check)


def concat_qc_tables(paths, out_path):
    """Concatenate per-batch QC tables into the one lesion QC table."""
    rows = [row for path in paths for row in read_qc_table(path)]
    write_qc_table(out_path, rows)
