"""Lesion masks: taken onto the brain-mask grid by world coordinates, with QC.

A lesion is matched to the mask grid through the two affines, never by voxel index:
each mask voxel centre is mapped into the lesion's voxel space and takes the value of
the nearest lesion voxel. A radiologically stored lesion and a RAS copy of it therefore
select the same mask voxels.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

import numpy as np

from ..atomic import atomic_open
from ..errors import InputError
from .nifti import load_image, read_data, squeeze_to_3d

QC_COLUMNS = ["lesion_id", "group", "path", "n_voxels_input", "volume_input_mm3",
              "n_voxels_in_mask", "fraction_outside_mask", "centroid_x_mm", "centroid_y_mm",
              "centroid_z_mm"]


# Where a point lies exactly halfway between two voxel centres, the nearest voxel is
# decided in world space (the one towards +x, +y, +z), not in the grid's index space:
# otherwise a radiological and a RAS copy of the same lesion would round differently.
TIE_BREAK_MM = 1e-4


def _nearest_voxel(points_world, affine, shape):
    """Nearest voxel indices of world points in a grid, and whether each lies inside it."""
    inverse = np.linalg.inv(affine)
    ijk = (points_world + TIE_BREAK_MM) @ inverse[:3, :3].T + inverse[:3, 3]
    ijk = np.floor(ijk + 0.5).astype(np.int64)
    inside = np.all((ijk >= 0) & (ijk < np.asarray(shape)), axis=1)
    return ijk, inside


def _world(ijk, affine):
    return ijk @ affine[:3, :3].T + affine[:3, 3]


@dataclass
class LesionOnMask:
    """A lesion as mask-ordered voxel indices, with its QC row."""

    lesion_id: str
    mask_positions: np.ndarray  # int64 positions into the mask order
    qc: dict


def lesion_on_mask(lesion, mask, mask_volume=None):
    """Take one lesion (sheets.Lesion) onto ``mask`` (nifti.BrainMask).

    Returns a LesionOnMask; raises InputError if the file is unusable or no lesion
    voxel lands inside the mask. A lesion partly outside the mask is fine: the QC row
    reports the fraction of its (input) voxels whose centres fall outside.
    """
    what = f"lesion '{lesion.lesion_id}'"
    img = load_image(lesion.path, what)
    data = squeeze_to_3d(read_data(img, lesion.path, what), lesion.path, what)
    lesioned = np.asarray(data > 0)
    n_input = int(lesioned.sum())
    if n_input == 0:
        raise InputError(f"{what} ('{lesion.path}') has no voxel > 0; it is empty. "
                         "Check the file or remove the lesion from the sheet.")
    if mask_volume is None:
        mask_volume = np.zeros(int(np.prod(mask.shape)), dtype=bool)
        mask_volume[mask.flat_index] = True
        mask_volume = mask_volume.reshape(mask.shape)

    # Pull: every mask voxel takes the value of the nearest lesion voxel.
    ijk, inside = _nearest_voxel(_world(mask.ijk, mask.affine), img.affine, lesioned.shape)
    hit = np.zeros(mask.n_voxels, dtype=bool)
    hit[inside] = lesioned[ijk[inside, 0], ijk[inside, 1], ijk[inside, 2]]
    positions = np.flatnonzero(hit)

    # QC on the lesion's own grid: where do its voxel centres fall on the mask grid?
    lesion_ijk = np.argwhere(lesioned)
    lesion_world = _world(lesion_ijk, img.affine)
    mijk, minside = _nearest_voxel(lesion_world, mask.affine, mask.shape)
    in_mask = np.zeros(n_input, dtype=bool)
    in_mask[minside] = mask_volume[mijk[minside, 0], mijk[minside, 1], mijk[minside, 2]]
    centroid = lesion_world.mean(axis=0)
    voxel_volume = abs(float(np.linalg.det(img.affine[:3, :3])))
    qc = {
        "lesion_id": lesion.lesion_id,
        "group": lesion.group if lesion.group is not None else "",
        "path": lesion.path,
        "n_voxels_input": n_input,
        "volume_input_mm3": round(n_input * voxel_volume, 3),
        "n_voxels_in_mask": int(positions.size),
        "fraction_outside_mask": round(float(1.0 - in_mask.mean()), 6),
        "centroid_x_mm": round(float(centroid[0]), 2),
        "centroid_y_mm": round(float(centroid[1]), 2),
        "centroid_z_mm": round(float(centroid[2]), 2),
    }
    if positions.size == 0:
        raise InputError(
            f"{what} ('{lesion.path}') has no voxel inside the brain mask '{mask.path}' after "
            f"taking it onto the mask grid by world coordinates ({n_input} input voxels, centroid "
            f"at {tuple(qc[k] for k in ('centroid_x_mm', 'centroid_y_mm', 'centroid_z_mm'))} mm). "
            "Check that the lesion is in the mask's space (e.g. MNI152) or remove it from the sheet."
        )
    return LesionOnMask(lesion.lesion_id, positions, qc)


@dataclass
class LesionBatch:
    """The lesions of one batch as concatenated mask positions with offsets."""

    lesion_ids: list
    offsets: np.ndarray  # (L + 1,) int64
    positions: np.ndarray  # int64 positions into mask order
    mask_fingerprint: str

    def __len__(self):
        return len(self.lesion_ids)

    def positions_of(self, index):
        return self.positions[self.offsets[index]:self.offsets[index + 1]]

    def save(self, path):
        with atomic_open(path) as handle:
            np.savez(handle, lesion_ids=np.asarray(self.lesion_ids, dtype=str), offsets=self.offsets,
                     positions=self.positions, mask_fingerprint=np.asarray(self.mask_fingerprint))

    @classmethod
    def load(cls, path):
        with np.load(path, allow_pickle=False) as data:
            return cls([str(x) for x in data["lesion_ids"]], data["offsets"], data["positions"],
                       str(data["mask_fingerprint"]))


def prepare_lesion_batch(lesions, mask, batch_path, qc_path):
    """Take a batch of lesions onto the mask grid; write the batch file and its QC table."""
    mask_volume = np.zeros(int(np.prod(mask.shape)), dtype=bool)
    mask_volume[mask.flat_index] = True
    mask_volume = mask_volume.reshape(mask.shape)
    resampled = [lesion_on_mask(lesion, mask, mask_volume) for lesion in lesions]
    sizes = [item.mask_positions.size for item in resampled]
    batch = LesionBatch([item.lesion_id for item in resampled],
                        np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                        np.concatenate([item.mask_positions for item in resampled]).astype(np.int64),
                        mask.fingerprint())
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


def prepare_lesion_batch_files(mask_path, lesions, batch_path, qc_path):
    """Load the mask and prepare one lesion batch; ``lesions`` are sheets.Lesion or
    (lesion_id, path, group) triples."""
    from .nifti import load_mask
    from .sheets import Lesion

    lesions = [x if isinstance(x, Lesion) else Lesion(*x) for x in lesions]
    return prepare_lesion_batch(lesions, load_mask(mask_path), batch_path, qc_path)


def concat_qc_tables(paths, out_path):
    """Concatenate per-batch QC tables into the one lesion QC table."""
    rows = [row for path in paths for row in read_qc_table(path)]
    write_qc_table(out_path, rows)
