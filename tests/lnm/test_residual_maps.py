"""A lesion's maps with the degree map regressed out (lnm.degree_regression): a lesion that
leaves no room outside it to fit the degree map is named, with the fix, by the lesions'
preparation before any mapping, and by the maps task should it get that far."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from shardmap.errors import InputError
from shardmap.lnm.lesions import prepare_lesion_batch_files
from shardmap.lnm.residual_maps import MIN_FIT_VOXELS, check_room_to_fit, degree_residual, outside
from synthetic import MASK_AFFINE, make_mask, save


@pytest.fixture
def mask(tmp_path):
    return save(make_mask(), tmp_path / "mask.nii.gz")


def whole_mask_lesion(mask, path):
    return save(nib.Nifti1Image((np.asarray(nib.load(mask).dataobj) > 0).astype(np.uint8), MASK_AFFINE), path)


def small_lesion(mask, path):
    data = np.zeros(nib.load(mask).shape, np.uint8)
    data[7, 6, 5] = 1
    return save(nib.Nifti1Image(data, MASK_AFFINE), path)


def test_a_whole_mask_lesion_is_named_before_any_mapping(tmp_path, mask):
    lesions = [("small", small_lesion(mask, tmp_path / "small.nii.gz"), "g"),
               ("brain", whole_mask_lesion(mask, tmp_path / "brain.nii.gz"), "g")]
    batch, qc = tmp_path / "batch.npz", tmp_path / "batch.qc.tsv"
    with pytest.raises(InputError) as info:
        prepare_lesion_batch_files(mask, lesions, batch, qc, check=check_room_to_fit)
    text = str(info.value)
    assert text.startswith("lesion 'brain' leaves 0 of the brain mask's") and "'small'" not in text
    assert "remove the lesion from the sheet" in text and "lnm.degree_regression: false" in text
    assert not batch.exists() and not qc.exists()
    prepare_lesion_batch_files(mask, lesions, batch, qc)  # without degree regression it is a lesion like any
    assert batch.exists()


def test_every_lesion_without_room_is_listed_at_once(tmp_path, mask):
    lesions = [(f"brain{k}", whole_mask_lesion(mask, tmp_path / f"brain{k}.nii.gz"), "g") for k in range(2)]
    with pytest.raises(InputError) as info:
        prepare_lesion_batch_files(mask, lesions, tmp_path / "b.npz", tmp_path / "b.tsv", check=check_room_to_fit)
    assert str(info.value).startswith("2 lesions leave no room to fit the degree map")
    assert "'brain0'" in str(info.value) and "'brain1'" in str(info.value)


def test_the_fit_names_the_lesion_when_it_cannot_be_made():
    degree, values = np.arange(10.0), np.ones(10)
    with pytest.raises(InputError, match=f"lesion 'X' leaves 2 of the brain mask's 10 voxels outside it.*at least "
                                          f"{MIN_FIT_VOXELS}"):
        degree_residual(values, degree, outside(10, np.arange(8)), "lesion 'X'")
    with pytest.raises(InputError, match="the degree map is constant over the 4 mask voxels outside lesion 'Y'"):
        degree_residual(values, np.r_[np.arange(6.0), [1.0] * 4], outside(10, np.arange(6)), "lesion 'Y'")
