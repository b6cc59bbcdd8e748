"""Lesions are matched to the mask by world coordinates, ties included."""

import nibabel as nib
import numpy as np

from shardmap.lnm.lesions import prepare_lesion_batch_files
from synthetic import save


def flip_x(img):
    """The same image stored the other way along x (data reversed, affine adjusted)."""
    affine = img.affine.copy()
    affine[:, 0] = -img.affine[:, 0]
    affine[:3, 3] = img.affine[:3, :3] @ [img.shape[0] - 1, 0, 0] + img.affine[:3, 3]
    return nib.Nifti1Image(np.asarray(img.dataobj)[::-1], affine)


def test_ties_break_the_same_way_in_both_orientations(tmp_path):
    """A radiological 6 mm mask and 4 mm lesions with aligned origins put every other mask
    voxel centre exactly halfway between two lesion voxels (as in the demo)."""
    mask_affine = np.array([[-6.0, 0, 0, 96.0], [0, 6.0, 0, -132.0], [0, 0, 6.0, -78.0], [0, 0, 0, 1]])
    mask = save(nib.Nifti1Image(np.ones((33, 37, 31), np.uint8), mask_affine), tmp_path / "mask.nii.gz")
    lesion_affine = np.diag([4.0, 4.0, 4.0, 1.0])
    lesion_affine[:3, 3] = [-96.0, -132.0, -78.0]
    rng = np.random.default_rng(3)
    lesions = []
    for k in range(6):
        ijk = np.stack(np.meshgrid(*[np.arange(n) for n in (49, 55, 46)], indexing="ij"), axis=-1)
        world = ijk @ lesion_affine[:3, :3].T + lesion_affine[:3, 3]
        centre = rng.uniform(-40, 40, 3)
        img = nib.Nifti1Image((((world - centre) ** 2).sum(-1) <= (6 + 2 * k) ** 2).astype(np.uint8),
                              lesion_affine)
        ras = save(img, tmp_path / f"ras-{k}.nii.gz")
        rad = save(flip_x(img), tmp_path / f"rad-{k}.nii.gz")
        lesions += [(f"ras-{k}", ras, None), (f"rad-{k}", rad, None)]
    batch = prepare_lesion_batch_files(mask, lesions, tmp_path / "b.npz", tmp_path / "b.tsv")
    for k in range(6):
        np.testing.assert_array_equal(batch.positions_of(2 * k), batch.positions_of(2 * k + 1))
        assert batch.positions_of(2 * k).size > 0
