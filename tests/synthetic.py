"""Small synthetic inputs for the tests: a radiological mask, runs on its grid, lesions."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np

# A radiological 4 mm grid (affine[0, 0] < 0), as GSP1000 is stored.
MASK_AFFINE = np.array([[-4.0, 0, 0, 30.0], [0, 4.0, 0, -26.0], [0, 0, 4.0, -14.0], [0, 0, 0, 1]])
MASK_SHAPE = (14, 13, 10)


def save(img, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return str(path)


def make_mask():
    """An ellipsoid brain inside the grid; returns a NIfTI image."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in MASK_SHAPE], indexing="ij"), axis=-1)
    centre = (np.asarray(MASK_SHAPE) - 1) / 2
    inside = (((ijk - centre) / (centre * 0.95 + 0.5)) ** 2).sum(axis=-1) <= 1.0
    return nib.Nifti1Image(inside.astype(np.uint8), MASK_AFFINE)


def make_subject_runs(rng, mask_img, n_frames_per_run, constant_voxels=()):
    """Runs with shared network signals; ``constant_voxels`` (flat mask positions) are
    constant in time in every run. Returns a list of 4D float32 images."""
    inside = np.asarray(mask_img.dataobj) > 0
    n_voxels = int(inside.sum())
    ijk = np.argwhere(inside)
    loadings = np.stack([np.exp(-((ijk - c) ** 2).sum(axis=1) / 8.0)
                         for c in rng.uniform(0, MASK_SHAPE, size=(3, 3))])
    images = []
    for n_frames in n_frames_per_run:
        courses = rng.standard_normal((3, n_frames))
        series = 100 + rng.uniform(-20, 20, n_voxels)[:, None] + 2.0 * loadings.T @ courses
        series += rng.standard_normal((n_voxels, n_frames))
        series[list(constant_voxels)] = 7.0
        volume = np.zeros(MASK_SHAPE + (n_frames,), dtype=np.float32)
        volume[inside] = series
        images.append(nib.Nifti1Image(volume, mask_img.affine))
    return images


def lesion_on_grid(world_centre, radius, affine, shape):
    """A spherical lesion on an arbitrary grid (voxels whose centre is within radius)."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    inside = ((world - np.asarray(world_centre)) ** 2).sum(axis=-1) <= radius ** 2
    return nib.Nifti1Image(inside.astype(np.uint8), affine)


def write_sheet(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def make_dataset(root, rng=None, subjects=(("s1", (20,)), ("s2", (15, 12)), ("s3", (18,)),
                                           ("s4", (10, 10)), ("s5", (25,)))):
    """A complete small LNM input set under ``root``.

    Returns a dict with mask path, subjects [(id, [runs])], lesions [(id, path, group)].
    Lesions: a sphere on a RAS 3 mm grid offset from the mask grid, a sphere partly
    outside the brain (RAS 2.5 mm grid), a one-voxel lesion on the mask grid, and a
    radiological sphere on the mask grid. One subject has constant voxels.
    """
    rng = rng or np.random.default_rng(0)
    mask_img = make_mask()
    mask_path = save(mask_img, root / "mask.nii.gz")
    subject_rows = []
    for index, (subject_id, frames) in enumerate(subjects):
        constant = (0, 5, 17) if index == 2 else ()
        paths = []
        for run, img in enumerate(make_subject_runs(rng, mask_img, frames, constant)):
            paths.append(save(img, root / f"{subject_id}_run-{run + 1}.nii.gz"))
        subject_rows.append((subject_id, paths))

    ras3 = np.diag([3.0, 3.0, 3.0, 1.0])
    ras3[:3, 3] = [-31.3, -29.6, -17.2]
    ras25 = np.diag([2.5, 2.5, 2.5, 1.0])
    ras25[:3, 3] = [-33.1, -30.7, -19.4]
    one_voxel = np.zeros(MASK_SHAPE, dtype=np.uint8)
    centre_ijk = tuple(np.asarray(MASK_SHAPE) // 2)
    one_voxel[centre_ijk] = 1
    centre_world = MASK_AFFINE[:3, :3] @ np.asarray(centre_ijk) + MASK_AFFINE[:3, 3]
    lesions = [
        ("sphere-ras3", save(lesion_on_grid((4.0, 2.0, 3.0), 6.5, ras3, (22, 20, 14)),
                             root / "sphere-ras3.nii.gz"), "g1"),
        ("edge-ras25", save(lesion_on_grid((-24.0, 0.0, 2.0), 9.0, ras25, (28, 24, 18)),
                            root / "edge-ras25.nii.gz"), "g2"),
        ("one-voxel", save(nib.Nifti1Image(one_voxel, MASK_AFFINE), root / "one-voxel.nii.gz"), "g1"),
        ("sphere-rad", save(lesion_on_grid(centre_world + [8.0, -6.0, 0.0], 5.0, MASK_AFFINE,
                                           MASK_SHAPE), root / "sphere-rad.nii.gz"), "g2"),
    ]
    return {"mask": mask_path, "subjects": subject_rows, "lesions": lesions, "root": root}
