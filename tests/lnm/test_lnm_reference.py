"""The streamed maps equal an independent float64 reference."""

import nibabel as nib
import numpy as np
import pytest

from pipeline import run_library
from reference import reference_maps


def assert_maps_match(ours, ref):
    fz_err = np.abs(ours["AvgR_Fz"] - ref["AvgR_Fz"]).max()
    assert fz_err <= 1e-4, f"AvgR_Fz differs by {fz_err}"
    r_err = np.abs(ours["AvgR"] - ref["AvgR"]).max()
    assert r_err <= 1e-4, f"AvgR differs by {r_err}"
    t_rel = (np.abs(ours["T"] - ref["T"]) / np.maximum(1.0, np.abs(ref["T"]))).max()
    assert t_rel <= 1e-3, f"T differs by {t_rel} (relative)"


@pytest.fixture(scope="module")
def reference(dataset):
    return reference_maps(dataset["mask"], dataset["subjects"], [p for _, p, _ in dataset["lesions"]])


@pytest.fixture(scope="module")
def ours(dataset, tmp_path_factory):
    return run_library(dataset, tmp_path_factory.mktemp("lib"), lesion_batch_size=3, subject_shard_size=2)


@pytest.mark.parametrize("lesion_id", ["sphere-ras3", "edge-ras25", "one-voxel", "sphere-rad"])
def test_maps_equal_reference(dataset, reference, ours, lesion_id):
    path = next(p for i, p, _ in dataset["lesions"] if i == lesion_id)
    assert_maps_match(ours[lesion_id], reference[path])


def test_maps_are_finite_and_zero_outside_mask(dataset, ours):
    inside = np.asarray(nib.load(dataset["mask"]).dataobj) > 0
    for maps in ours.values():
        for values in maps.values():
            assert np.isfinite(values).all()
            assert not values[~inside].any()


def test_one_voxel_lesion_has_clipped_seed_voxel_and_zero_t(dataset, ours):
    """Inside a one-voxel lesion r = 1 in every subject: z is the clipped value, sd is 0, so T is 0."""
    lesion = np.asarray(nib.load(next(p for i, p, _ in dataset["lesions"] if i == "one-voxel")).dataobj)
    at = tuple(np.argwhere(lesion > 0)[0])
    assert ours["one-voxel"]["AvgR_Fz"][at] == pytest.approx(np.arctanh(1 - 1e-7), abs=1e-4)
    assert ours["one-voxel"]["T"][at] == 0.0


def test_constant_voxels_have_r_zero(dataset, tmp_path):
    """With two subjects, one of them constant in some voxels (r = 0 there), AvgR_Fz at
    those voxels is half the other subject's z. With n = 2, T = mean / (|z1 - z2| / 2) is
    ill-conditioned where z1 ~ z2, so T is compared where the reference |T| <= 100."""
    two = dict(dataset, subjects=[dataset["subjects"][2], dataset["subjects"][0]])
    ours = run_library(two, tmp_path, lesion_batch_size=4, subject_shard_size=1)
    ref = reference_maps(two["mask"], two["subjects"], [p for _, p, _ in two["lesions"]])
    for lesion_id, path, _ in two["lesions"]:
        for name in ("AvgR_Fz", "AvgR"):
            assert np.abs(ours[lesion_id][name] - ref[path][name]).max() <= 1e-4
        sane = np.abs(ref[path]["T"]) <= 100
        t_rel = np.abs(ours[lesion_id]["T"] - ref[path]["T"]) / np.maximum(1.0, np.abs(ref[path]["T"]))
        assert t_rel[sane].max() <= 1e-3


def test_radiological_and_ras_copies_of_a_lesion_give_the_same_maps(dataset, tmp_path):
    """Flip a RAS lesion into radiological storage (data and affine): same voxels, same maps."""
    path = next(p for i, p, _ in dataset["lesions"] if i == "sphere-ras3")
    img = nib.load(path)
    flipped_affine = img.affine.copy()
    flipped_affine[:, 0] = -img.affine[:, 0]
    flipped_affine[:3, 3] = img.affine[:3, :3] @ [img.shape[0] - 1, 0, 0] + img.affine[:3, 3]
    flipped = nib.Nifti1Image(np.asarray(img.dataobj)[::-1], flipped_affine)
    flipped_path = str(tmp_path / "sphere-rad-copy.nii.gz")
    nib.save(flipped, flipped_path)
    variant = dict(dataset, lesions=[("ras", path, None), ("rad", flipped_path, None)])
    ours = run_library(variant, tmp_path / "out", lesion_batch_size=2, subject_shard_size=5)
    for name in ("AvgR_Fz", "T"):
        np.testing.assert_array_equal(ours["ras"][name], ours["rad"][name])


def test_float16_storage_is_close(dataset, reference, tmp_path):
    """float16 storage trades precision for half the bytes; AvgR_Fz stays within 1e-3
    (measured about 1e-4) away from the seed (|AvgR| < 0.9)."""
    ours = run_library(dataset, tmp_path, lesion_batch_size=4, subject_shard_size=5, dtype="float16")
    for lesion_id, path, _ in dataset["lesions"]:
        inside_seed = np.abs(reference[path]["AvgR"]) < 0.9
        err = np.abs(ours[lesion_id]["AvgR_Fz"] - reference[path]["AvgR_Fz"])[inside_seed].max()
        assert err <= 1e-3


@pytest.mark.parametrize("compiled", [False, True], ids=["numpy-epilogue", "compiled-epilogue"])
def test_narrow_and_ragged_voxel_blocks_small_exact_chunks_and_threads(dataset, reference, tmp_path, monkeypatch,
                                                                        compiled):
    """Block widths that do not divide the voxel count (a narrow last block), tiny
    float64-recompute chunks, three worker threads and passes of 3 subjects over shards
    of 4 (a short last pass) give the same maps; with the NumPy epilogue and with the
    compiled one (chosen by the task's size: here every task counts as large)."""
    from shardmap.lnm.kernels import cpu as cpu_kernel

    if compiled:
        pytest.importorskip("numba")
        monkeypatch.setattr(cpu_kernel, "COMPILED_EPILOGUE_FROM", 0)
        used = []
        real_init = cpu_kernel.NumpyMapper.__init__

        def spy_init(self, *args, **kwargs):
            real_init(self, *args, **kwargs)
            used.append(self._add_twice_z is not None)

        monkeypatch.setattr(cpu_kernel.NumpyMapper, "__init__", spy_init)

    monkeypatch.setattr(cpu_kernel, "BLOCK_ELEMENTS", 777)
    monkeypatch.setattr(cpu_kernel, "EXACT_CHUNK", 3)
    monkeypatch.setattr(cpu_kernel, "SUBJECTS_PER_PASS", 3)
    monkeypatch.setattr(cpu_kernel, "GROUPED_FROM_LESIONS", 1)  # grouped passes even for 3 lesions
    monkeypatch.setattr(cpu_kernel.NumpyMapper, "subjects_per_pass", 3)
    ours = run_library(dataset, tmp_path, lesion_batch_size=3, subject_shard_size=4, threads=3)
    for lesion_id, path, _ in dataset["lesions"]:
        assert_maps_match(ours[lesion_id], reference[path])
    if compiled:
        assert used and all(used)


@pytest.mark.parametrize("device", ["torch-cpu", "cuda"])
def test_gpu_kernel_matches_the_reference(dataset, reference, tmp_path, monkeypatch, device):
    """The torch kernel (what lnm.device: cuda runs), on torch's CPU device and, where
    torch sees one, on the GPU, with small chunks so several voxel chunks, seed chunks,
    staging pieces and float64-recompute rounds are crossed."""
    torch = pytest.importorskip("torch")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA GPU")
    from shardmap.lnm.kernels import gpu as gpu_kernel

    monkeypatch.setattr(gpu_kernel, "CHUNK_ELEMENTS", 5000)
    monkeypatch.setattr(gpu_kernel, "EXACT_CHUNK", 3)
    monkeypatch.setattr(gpu_kernel, "SEED_CHUNK", 5)
    monkeypatch.setattr(gpu_kernel, "STAGING_ELEMENTS", 5000)
    ours = run_library(dataset, tmp_path, lesion_batch_size=3, subject_shard_size=4, device=device)
    for lesion_id, path, _ in dataset["lesions"]:
        assert_maps_match(ours[lesion_id], reference[path])


def test_qc_counts_match_nilearn(dataset, tmp_path):
    from reference import lesion_weights
    from shardmap.lnm.lesions import prepare_lesion_batch_files, read_qc_table

    prepare_lesion_batch_files(dataset["mask"], dataset["lesions"], tmp_path / "b.npz", tmp_path / "b.tsv")
    mask_img = nib.load(dataset["mask"])
    for row, (_, path, _) in zip(read_qc_table(tmp_path / "b.tsv"), dataset["lesions"]):
        assert int(row["n_voxels_in_mask"]) == int((lesion_weights(path, mask_img) > 0).sum())
        assert int(row["n_voxels_input"]) == int((np.asarray(nib.load(path).dataobj) > 0).sum())
