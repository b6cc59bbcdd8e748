"""The embedded demo: a small synthetic connectome and lesions, made deterministically.

* The brain mask is nilearn's MNI152 brain mask (shipped inside nilearn, no download),
  resampled to a coarse 6 mm grid and stored radiologically (affine[0, 0] < 0), like
  GSP1000.
* The connectome has network structure: a few network time courses per subject,
  loaded on spatially smooth bilateral maps, plus noise and a voxel-specific offset
  (so that centring matters). Each subject has one or two runs.
* Lesions are spheres written on a RAS 4 mm grid (another grid and orientation than
  the mask, so matching by world coordinates is exercised); one sits at the edge of
  the brain, partly outside it.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

from ..atomic import atomic_path

SEED = 20261122
MASK_VOXEL_MM = 6.0
LESION_VOXEL_MM = 4.0
FRAMES_PER_RUN = 48
# Centres (x, y, z in mm) of bilateral network nodes; x is mirrored for the other side.
NETWORK_NODES = [
    [(40, -60, 40), (5, -55, 30)],      # parietal / precuneus
    [(45, 20, 30), (30, 50, 10)],       # lateral frontal
    [(50, -25, 50), (5, -20, 60)],      # sensorimotor
    [(25, -90, 0), (10, -80, 10)],      # visual
    [(40, 10, -30), (20, -10, -15)],    # temporal / limbic
]
# Lesions: (centre mm, radius mm). The fourth reaches outside the brain.
LESION_SPECS = [
    ((-40, -60, 40), 10), ((42, -58, 38), 8), ((5, -55, 30), 12),
    ((-68, -20, 20), 14), ((45, 20, 30), 9), ((-30, 50, 10), 7),
    ((50, -25, 50), 8), ((-25, -90, 0), 10), ((20, -10, -15), 6),
    ((-40, 10, -30), 9), ((0, -20, 60), 11), ((30, 0, 10), 16),
]


def demo_mask():
    """nilearn's MNI152 brain mask on a radiological 6 mm grid (nearest neighbour)."""
    from nilearn import datasets, image

    template = datasets.load_mni152_brain_mask(resolution=2)
    affine = np.array([[-MASK_VOXEL_MM, 0, 0, 96.0],
                       [0, MASK_VOXEL_MM, 0, -132.0],
                       [0, 0, MASK_VOXEL_MM, -78.0],
                       [0, 0, 0, 1]])
    resampled = image.resample_img(template, target_affine=affine, target_shape=(33, 37, 31),
                                   interpolation="nearest", force_resample=True, copy_header=True)
    data = (np.asarray(resampled.dataobj) > 0).astype(np.uint8)
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=4)
    img.set_sform(affine, code=4)
    return img


def _world_of_mask_voxels(mask_img):
    data = np.asarray(mask_img.dataobj) > 0
    ijk = np.argwhere(data)
    return data, ijk @ mask_img.affine[:3, :3].T + mask_img.affine[:3, 3], ijk


def network_maps(world):
    """(K, V) smooth bilateral spatial maps of the demo networks."""
    maps = np.zeros((len(NETWORK_NODES), world.shape[0]))
    for k, nodes in enumerate(NETWORK_NODES):
        for (x, y, z) in nodes:
            for sx in (x, -x):
                d2 = ((world - np.array([sx, y, z])) ** 2).sum(axis=1)
                maps[k] += np.exp(-d2 / (2 * 14.0 ** 2))
    return maps


def _smooth_noise(rng, shape, rho=0.6):
    out = rng.standard_normal(shape)
    for t in range(1, shape[-1]):
        out[..., t] = rho * out[..., t - 1] + np.sqrt(1 - rho ** 2) * out[..., t]
    return out


def subject_runs(subject_index, n_runs, mask_img):
    """The runs of one demo subject as 4D float32 images on the mask grid."""
    rng = np.random.default_rng([SEED, subject_index])
    data, world, ijk = _world_of_mask_voxels(mask_img)
    maps = network_maps(world)
    offset = 500.0 + 100.0 * rng.random(world.shape[0])
    images = []
    for run in range(n_runs):
        courses = _smooth_noise(rng, (maps.shape[0], FRAMES_PER_RUN))
        signal = maps.T @ courses  # (V, T)
        noise = _smooth_noise(rng, (world.shape[0], FRAMES_PER_RUN), rho=0.3)
        series = offset[:, None] + 3.0 * signal + 1.5 * noise + 2.0 * run
        volume = np.zeros(data.shape + (FRAMES_PER_RUN,), dtype=np.float32)
        volume[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = series
        img = nib.Nifti1Image(volume, mask_img.affine)
        img.set_qform(mask_img.affine, code=4)
        img.set_sform(mask_img.affine, code=4)
        images.append(img)
    return images


def lesion_image(lesion_index):
    """A spherical demo lesion on a RAS 4 mm grid."""
    centre, radius = LESION_SPECS[lesion_index % len(LESION_SPECS)]
    jitter = 4.0 * (lesion_index // len(LESION_SPECS))
    affine = np.diag([LESION_VOXEL_MM] * 3 + [1.0])
    affine[:3, 3] = [-96.0, -132.0, -78.0]
    shape = (49, 55, 46)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    d2 = ((world - (np.array(centre) + jitter)) ** 2).sum(axis=-1)
    img = nib.Nifti1Image((d2 <= radius ** 2).astype(np.uint8), affine)
    img.set_qform(affine, code=4)
    img.set_sform(affine, code=4)
    return img


def _save(img, path):
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def write_demo(mask_path, subjects, lesions):
    """Write the demo mask, runs and lesions to the paths named by the sample sheets.

    ``subjects`` is a list of sheets.Subject, ``lesions`` a list of sheets.Lesion; the
    content of each file depends only on its position in the sheet and the seed.
    """
    mask_img = demo_mask()
    _save(mask_img, mask_path)
    for index, subject in enumerate(subjects):
        for img, path in zip(subject_runs(index, len(subject.runs), mask_img), subject.runs):
            _save(img, path)
    for index, lesion in enumerate(lesions):
        _save(lesion_image(index), lesion.path)
    return [mask_path] + [p for s in subjects for p in s.runs] + [les.path for les in lesions]


def write_demo_from_sheets(mask_path, subject_sheet, lesion_sheet):
    """Write the demo files named by the two sample sheets (which need not exist yet)."""
    from .sheets import read_lesions, read_subjects

    return write_demo(mask_path, read_subjects(subject_sheet, check_files=False),
                      read_lesions(lesion_sheet, check_files=False))
