"""The fast float32 pieces of the mapping kernels against float64 NumPy."""

import numpy as np
import pytest

from shardmap.lnm.kernels.cpu import FLOAT64_ABOVE, NumpyMapper, log_ratio_inplace


def test_log_ratio_matches_twice_arctanh_on_its_range():
    r = np.linspace(-FLOAT64_ABOVE, FLOAT64_ABOVE, 200_001).astype(np.float32).reshape(1, -1)
    expected = 2 * np.arctanh(r.astype(np.float64))
    twice_z = log_ratio_inplace(r.copy(), np.empty_like(r))
    assert np.abs(twice_z - expected).max() < 4e-7
    assert twice_z[0, 100_000] == 0.0


def _random_subjects(n_subjects, n_frames, n_voxels, n_lesions, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n_subjects):
        frames = rng.standard_normal((n_frames, n_voxels))
        seeds = rng.standard_normal((n_frames, n_lesions))
        # Make some voxels nearly copies of a seed, so |r| > 0.95 takes the float64 path.
        frames[:, :n_lesions] = seeds + 0.05 * rng.standard_normal((n_frames, n_lesions))
        frames /= np.linalg.norm(frames, axis=0)
        seeds /= np.linalg.norm(seeds, axis=0)
        yield frames.astype(np.float32), seeds


def _float64_sums(subjects, n_lesions, n_voxels):
    sums = np.zeros((n_lesions, 2, n_voxels))
    for frames, seeds in subjects:
        z = np.arctanh(np.clip(seeds.T @ frames.astype(np.float64), -1 + 1e-7, 1 - 1e-7))
        sums[:, 0] += z
        sums[:, 1] += z * z
    return sums


@pytest.mark.parametrize("threads", [1, 3])
def test_numpy_mapper_matches_float64_over_flushes_and_ragged_blocks(threads):
    """19 subjects cross two flushes and end with a partial one; 9001 voxels leave a
    ragged last block; the first voxels take the float64 path."""
    n_subjects, n_frames, n_voxels, n_lesions = 19, 50, 9001, 5
    subjects = list(_random_subjects(n_subjects, n_frames, n_voxels, n_lesions))
    sums = np.zeros((n_lesions, 2, n_voxels))
    with NumpyMapper(sums, threads=threads) as mapper:
        assert len(mapper.blocks) > 1 and n_voxels % mapper.width
        for frames, seeds in subjects:
            mapper.add_subject(frames, np.ones(n_voxels), seeds)
        mapper.finish()
    expected = _float64_sums(subjects, n_lesions, n_voxels)
    assert (np.abs(expected[np.arange(n_lesions), 0, np.arange(n_lesions)]) > FLOAT64_ABOVE * n_subjects).all()
    np.testing.assert_allclose(sums, expected, rtol=1e-5, atol=2e-5)


def test_numpy_mapper_result_does_not_depend_on_threads():
    subjects = list(_random_subjects(10, 40, 20_000, 3, seed=4))
    results = []
    for threads in (1, 2, 5):
        sums = np.zeros((3, 2, 20_000))
        with NumpyMapper(sums, threads=threads) as mapper:
            for frames, seeds in subjects:
                mapper.add_subject(frames, np.ones(20_000), seeds)
            mapper.finish()
        results.append(sums)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


def _torch_device(name):
    """torch's CPU device, or the GPU (skipped where torch sees no CUDA device, as in CI)."""
    torch = pytest.importorskip("torch")
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA GPU")
    return name


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_torch_kernel_matches_float64(device, monkeypatch):
    """Several voxel chunks, some pairs on the float64 path, in more than one recompute round."""
    from shardmap.lnm.kernels import gpu as gpu_kernel

    device = _torch_device(device)
    monkeypatch.setattr(gpu_kernel, "CHUNK_ELEMENTS", 4 * 1500)
    monkeypatch.setattr(gpu_kernel, "EXACT_CHUNK", 3)
    n_voxels, n_lesions = 5000, 4
    subjects = list(_random_subjects(6, 40, n_voxels, n_lesions, seed=2))
    sums = np.zeros((n_lesions, 2, n_voxels))
    with gpu_kernel.TorchMapper(sums, device) as mapper:
        assert mapper.chunk < n_voxels
        for frames, seeds in subjects:
            mapper.add_subject(frames, np.ones(n_voxels), seeds)
        mapper.finish()
    np.testing.assert_allclose(sums, _float64_sums(subjects, n_lesions, n_voxels), rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_torch_kernel_corrects_by_the_stored_norm(device):
    """float16 storage: stored time courses are not unit norm to float32 precision, so r
    is scaled by the inverse stored norm (on the float32 and the float64 path)."""
    from shardmap.lnm.kernels.gpu import TorchMapper

    device = _torch_device(device)
    n_voxels, n_lesions = 3000, 3
    rng = np.random.default_rng(7)
    subjects, expected = [], np.zeros((n_lesions, 2, n_voxels))
    for frames, seeds in _random_subjects(5, 30, n_voxels, n_lesions, seed=6):
        stored = (frames * rng.uniform(0.98, 1.02, n_voxels)).astype(np.float32)
        inv = 1.0 / np.linalg.norm(stored.astype(np.float64), axis=0)
        subjects.append((stored, inv, seeds))
        z = np.arctanh(np.clip(seeds.T @ stored.astype(np.float64) * inv, -1 + 1e-7, 1 - 1e-7))
        expected[:, 0] += z
        expected[:, 1] += z * z
    sums = np.zeros((n_lesions, 2, n_voxels))
    with TorchMapper(sums, device) as mapper:
        for stored, inv, seeds in subjects:
            mapper.add_subject(stored, inv, seeds)
        mapper.finish()
    np.testing.assert_allclose(sums, expected, rtol=1e-5, atol=2e-5)


def test_auto_device_takes_the_gpu_when_torch_sees_one():
    from shardmap.lnm.mapping import resolve_device

    torch = pytest.importorskip("torch")
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA GPU: only the CPU side of 'auto' was checked")
    assert resolve_device("cuda") == "cuda"


def test_float16_frames_widen_exactly():
    from shardmap.lnm.connectome.reader import widen_into

    values = np.random.default_rng(3).standard_normal((7, 1001)).astype(np.float16)
    values.setflags(write=False)
    out = widen_into(np.empty(values.shape, dtype=np.float32), values)
    np.testing.assert_array_equal(out, values.astype(np.float32))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_shard_reader_prefetch_yields_every_subject_as_stored(tmp_path, dtype):
    from shardmap.lnm.connectome.reader import ShardReader
    from shardmap.lnm.connectome.shards import shard_paths, write_shard

    rng = np.random.default_rng(5)
    runs = [rng.standard_normal((300, frames)) for frames in (7, 12, 9)]
    for series in runs:
        series -= series.mean(axis=1, keepdims=True)
    subjects = ((f"s{i}", [], series, (series ** 2).sum(axis=1)) for i, series in enumerate(runs))
    paths = shard_paths(tmp_path / "shard")
    write_shard(subjects, 3, 300, "mask", paths["data"], paths["norms"], paths["info"], dtype)
    stored = np.load(paths["data"]).astype(np.float32)
    seen = {}
    for prefetch in (False, True):
        with ShardReader(paths, prefetch=prefetch) as reader:
            seen[prefetch] = [(index, frames.copy(), norm.copy()) for index, frames, norm, _ in reader.subjects()]
    offsets = np.cumsum([0, 7, 12, 9])
    for prefetch, subjects_seen in seen.items():
        assert [index for index, _, _ in subjects_seen] == [0, 1, 2]
        for index, frames, norm in subjects_seen:
            np.testing.assert_array_equal(frames, stored[offsets[index]:offsets[index + 1]])
            np.testing.assert_allclose(norm, np.linalg.norm(runs[index], axis=1))


def _lesion_batch(sizes, n_voxels, seed, weighted=False):
    from shardmap.lnm.lesions import LesionBatch

    rng = np.random.default_rng(seed)
    positions = np.concatenate([np.sort(rng.choice(n_voxels, size, replace=False)) for size in sizes])
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    weights = rng.uniform(0.05, 3.0, positions.size) if weighted else None
    return LesionBatch([f"l{i}" for i in range(len(sizes))], offsets, positions.astype(np.int64), "mask", weights)


@pytest.mark.parametrize("weighted", [False, True])
def test_numpy_seeds_are_the_weighted_mean_time_courses(weighted):
    """Against the definition in float64: seed = sum of w * x over the lesion's voxels
    (x the centred time course, w its weight, 1 for a binary lesion), scaled to unit norm."""
    from shardmap.lnm.kernels.cpu import lesion_seeds

    rng = np.random.default_rng(12)
    n_voxels = 500
    batch = _lesion_batch([1, 7, 40], n_voxels, seed=13, weighted=weighted)
    centred = rng.standard_normal((30, n_voxels))
    centred -= centred.mean(axis=0)
    norm = np.linalg.norm(centred, axis=0)
    frames = (centred / norm).astype(np.float32)
    seeds = lesion_seeds(frames, norm, batch)
    for index in range(len(batch)):
        positions, weights = batch.positions_of(index), batch.weights_of(index)
        expected = (frames[:, positions].astype(np.float64) * norm[positions]) @ weights
        np.testing.assert_allclose(seeds[:, index], expected / np.linalg.norm(expected), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("weighted", [False, True], ids=["binary", "weighted"])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_torch_kernel_builds_the_seeds_of_the_numpy_kernel(device, monkeypatch, weighted):
    """Seeds built on the device from chunks of lesion voxels (a chunk here holds parts of
    several lesions, and one lesion spans several chunks) equal the NumPy seeds; a lesion
    whose voxels are all constant has a zero seed, exactly. Subjects of different lengths
    go to the GPU through small staging buffers (and the sums come back through them),
    and the maps equal those from the NumPy seeds."""
    from shardmap.lnm.kernels import gpu as gpu_kernel
    from shardmap.lnm.kernels.cpu import lesion_seeds

    device = _torch_device(device)
    monkeypatch.setattr(gpu_kernel, "SEED_CHUNK", 7)
    monkeypatch.setattr(gpu_kernel, "STAGING_ELEMENTS", 3 * 2001)  # 3 rows: an odd number of values
    n_voxels = 2001
    batch = _lesion_batch([1, 5, 30, 4, 12], n_voxels, seed=8, weighted=weighted)
    rng = np.random.default_rng(9)
    by_lesions, by_seeds = np.zeros((5, 2, n_voxels)), np.zeros((5, 2, n_voxels))
    with gpu_kernel.TorchMapper(by_lesions, device) as mapper, \
            gpu_kernel.TorchMapper(by_seeds, device) as plain:
        for n_frames in (20, 33, 9):
            frames = rng.standard_normal((n_frames, n_voxels))
            frames[:, batch.positions_of(3)] = 0.0
            frames = (frames / np.maximum(np.linalg.norm(frames, axis=0), 1e-30)).astype(np.float32)
            norm = rng.uniform(0.5, 2.0, n_voxels)
            expected = lesion_seeds(frames, norm, batch)
            seeds = mapper.lesion_seeds(mapper._upload(frames), norm, batch).cpu().numpy()
            np.testing.assert_allclose(seeds, expected, rtol=1e-12, atol=1e-13)
            assert not seeds[:, 3].any()
            mapper.add_lesions(frames, norm, np.ones(n_voxels), batch)
            plain.add_subject(frames, np.ones(n_voxels), expected)
        mapper.finish()
        plain.finish()
    np.testing.assert_allclose(by_lesions, by_seeds, rtol=1e-6, atol=1e-6)
