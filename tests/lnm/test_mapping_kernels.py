"""The fast float32 pieces of the mapping kernels against float64 NumPy."""

import sys

import numpy as np
import pytest

from shardmap.lnm.kernels.cpu import FLOAT64_ABOVE, SUBJECTS_PER_PASS, NumpyMapper, log_ratio_inplace


def test_log_ratio_matches_twice_arctanh_on_its_range():
    r = np.linspace(-FLOAT64_ABOVE, FLOAT64_ABOVE, 200_001).astype(np.float32).reshape(1, -1)
    expected = 2 * np.arctanh(r.astype(np.float64))
    twice_z = log_ratio_inplace(r.copy(), np.empty_like(r))
    assert np.abs(twice_z - expected).max() < 4e-7
    assert twice_z[0, 100_000] == 0.0


def test_compiled_epilogue_matches_twice_arctanh_on_its_range():
    """The compiled loop's own log: as accurate as NumPy's float32 log on |r| <= 0.95, on
    a tile whose used width (999 of 1000 columns) leaves a remainder after the vector loop."""
    fused_epilogue = pytest.importorskip("shardmap.lnm.kernels.fused_epilogue")
    r = np.linspace(-FLOAT64_ABOVE, FLOAT64_ABOVE, 200_001)[:199_800].astype(np.float32).reshape(200, 999)
    tile = np.zeros((200, 1000), dtype=np.float32)
    tile[:, :999] = r
    tile[:, 999] = 0.5  # outside the width: must not be added
    z_sum, z2_sum = np.zeros_like(tile), np.zeros_like(tile)
    z_sum[:, 999] = 7.0
    fused_epilogue.add_twice_z(tile, z_sum, z2_sum, 999)
    expected = 2 * np.arctanh(r.astype(np.float64))
    assert np.abs(z_sum[:, :999] - expected).max() < 4e-7
    assert np.abs(z2_sum[:, :999] - expected ** 2).max() < 4e-6  # (2z)^2 <= 13.4: float32 relative rounding
    assert (z_sum[:, 999] == 7.0).all() and (z2_sum[:, 999] == 0.0).all()


def test_compiled_epilogue_is_used_only_where_it_pays(monkeypatch):
    from shardmap.lnm.kernels import cpu

    assert not cpu.compiled_epilogue_pays(64, 292_019, 10)
    assert not cpu.compiled_epilogue_pays(64, 230_000, 100)
    assert cpu.compiled_epilogue_pays(256, 230_000, 100)
    assert cpu.compiled_epilogue_pays(1024, 292_019, 10)
    with NumpyMapper(np.zeros((2, 2, 100)), compiled=False) as mapper:
        assert mapper._add_twice_z is None
    # Without numba (here: the module cannot be imported) the NumPy passes do the work.
    monkeypatch.setitem(sys.modules, "shardmap.lnm.kernels.fused_epilogue", None)
    with NumpyMapper(np.zeros((2, 2, 100)), compiled=True) as mapper:
        assert mapper._add_twice_z is None


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


@pytest.mark.parametrize("compiled", [False, True], ids=["numpy-epilogue", "compiled-epilogue"])
@pytest.mark.parametrize("threads", [1, 3])
def test_numpy_mapper_matches_float64_over_passes_and_ragged_blocks(threads, compiled):
    """19 subjects in passes of 8, 8 and 3 subjects (and one more, alone); 9001 voxels
    leave a ragged last block; the first voxels take the float64 path."""
    if compiled:
        pytest.importorskip("numba")
    n_subjects, n_frames, n_voxels, n_lesions = 20, 50, 9001, 5
    subjects = list(_random_subjects(n_subjects, n_frames, n_voxels, n_lesions))
    sums = np.zeros((n_lesions, 2, n_voxels))
    with NumpyMapper(sums, threads=threads, compiled=compiled) as mapper:
        assert (mapper._add_twice_z is not None) == compiled
        assert len(mapper.blocks) > 1 and n_voxels % mapper.width
        assert mapper.subjects_per_pass == 1  # 5 lesions: one subject per pass, unless passed more
        assert SUBJECTS_PER_PASS == 8
        as_passed = [(frames, np.ones(n_voxels), seeds) for frames, seeds in subjects]
        for start, stop in ((0, 8), (8, 16), (16, 19)):
            mapper.add_subjects(as_passed[start:stop])
        mapper.add_subject(*as_passed[19])
        mapper.finish()
    expected = _float64_sums(subjects, n_lesions, n_voxels)
    assert (np.abs(expected[np.arange(n_lesions), 0, np.arange(n_lesions)]) > FLOAT64_ABOVE * n_subjects).all()
    np.testing.assert_allclose(sums, expected, rtol=1e-5, atol=2e-5)


def test_memory_request_counts_the_kernels_pass():
    from shardmap.lnm import resources
    from shardmap.lnm.kernels import cpu

    assert resources.CPU_SUBJECTS_PER_PASS == SUBJECTS_PER_PASS
    assert resources.CPU_GROUPED_FROM_LESIONS == cpu.GROUPED_FROM_LESIONS
    for n_lesions, per_pass in ((1, 1), (16, 1), (31, 1), (32, 8), (64, 8)):
        with NumpyMapper(np.zeros((n_lesions, 2, 100))) as mapper:
            assert mapper.subjects_per_pass == per_pass
    info = {"n_voxels": 1000, "frame_offsets": list(range(0, 201, 10)), "dtype": "float32"}
    # One subject per pass holds 2 subjects' frames (one read ahead), 8 per pass 16 of the 20.
    small = resources.mapping_mem_mb(info, 16) - resources.mapping_mem_mb(dict(info, n_voxels=0), 16)
    large = resources.mapping_mem_mb(info, 64) - resources.mapping_mem_mb(dict(info, n_voxels=0), 64)
    assert large > small


def test_compiled_and_numpy_epilogues_agree_to_float32_rounding():
    """The two epilogues differ only in how float32 rounds: the sums of 2z agree within
    a few float32 steps of their size (their relative difference is measured here)."""
    pytest.importorskip("numba")
    subjects = [(frames, np.ones(4000), seeds) for frames, seeds in _random_subjects(12, 60, 4000, 6, seed=11)]
    results = []
    for compiled in (False, True):
        sums = np.zeros((6, 2, 4000))
        with NumpyMapper(sums, threads=2, compiled=compiled) as mapper:
            assert (mapper._add_twice_z is not None) == compiled
            mapper.add_subjects(subjects[:8])
            mapper.add_subjects(subjects[8:])
        results.append(sums)
    # relative to the sums' size, or absolute where they are below 1
    scale = np.maximum(1.0, np.abs(results[0]))
    assert (np.abs(results[1] - results[0]) / scale).max() < 2e-6


@pytest.mark.parametrize("with_torch", [True, False], ids=["torch-widens", "numpy-widens"])
def test_numpy_mapper_widens_float16_blocks_exactly(with_torch, monkeypatch):
    """float16 frames, widened by the kernel a block at a time (by torch, or by NumPy
    without it), give the sums of the same values widened beforehand, bit for bit."""
    if with_torch:
        torch = pytest.importorskip("torch")
        threads_before = torch.get_num_threads()
    else:
        monkeypatch.setitem(sys.modules, "torch", None)
    n_voxels = 20_000
    stored = []
    for frames, seeds in _random_subjects(9, 30, n_voxels, 3, seed=13):
        half = frames.astype(np.float16)
        inv = 1.0 / np.linalg.norm(half.astype(np.float64), axis=0)
        stored.append((half, inv, seeds))
    results = []
    for widened in (False, True):
        sums = np.zeros((3, 2, n_voxels))
        subjects = [(half.astype(np.float32) if widened else half, inv, seeds) for half, inv, seeds in stored]
        with NumpyMapper(sums, threads=2) as mapper:
            assert len(mapper.blocks) > 1
            mapper.add_subjects(subjects[:8])
            mapper.add_subjects(subjects[8:])
            used = mapper._widener._torch
            if widened:
                assert used is None  # float32 frames: nothing to widen
            else:
                assert bool(used) == with_torch
        results.append(sums)
        if with_torch:  # torch ran on one thread during the passes and has its threads back
            assert torch.get_num_threads() == threads_before
    np.testing.assert_array_equal(results[0], results[1])


def test_numpy_mapper_refuses_more_subjects_than_a_pass_holds():
    subjects = [(frames, np.ones(300), seeds) for frames, seeds in _random_subjects(9, 10, 300, 2)]
    with NumpyMapper(np.zeros((2, 2, 300))) as mapper, pytest.raises(ValueError, match="at most 8"):
        mapper.add_subjects(subjects)


@pytest.mark.parametrize("compiled", [False, True], ids=["numpy-epilogue", "compiled-epilogue"])
def test_numpy_mapper_result_does_not_depend_on_threads(compiled):
    if compiled:
        pytest.importorskip("numba")
    subjects = [(frames, np.ones(20_000), seeds) for frames, seeds in _random_subjects(10, 40, 20_000, 3, seed=4)]
    results = []
    for threads in (1, 2, 5):
        sums = np.zeros((3, 2, 20_000))
        with NumpyMapper(sums, threads=threads, compiled=compiled) as mapper:
            mapper.add_subjects(subjects[:8])
            mapper.add_subjects(subjects[8:])
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
    """Several voxel chunks, some pairs on the float64 path, in more than one recompute
    round; 6 subjects cross a flush of the float32 running sums (every 4 here) and end
    with a partial one."""
    from shardmap.lnm.kernels import gpu as gpu_kernel

    device = _torch_device(device)
    monkeypatch.setattr(gpu_kernel, "CHUNK_ELEMENTS", 4 * 1500)
    monkeypatch.setattr(gpu_kernel, "EXACT_CHUNK", 3)
    monkeypatch.setattr(gpu_kernel, "RUNNING_SUBJECTS", 4)
    n_voxels, n_lesions = 5000, 4
    subjects = list(_random_subjects(6, 40, n_voxels, n_lesions, seed=2))
    sums = np.zeros((n_lesions, 2, n_voxels))
    with gpu_kernel.TorchMapper(sums, device) as mapper:
        assert mapper.chunk < n_voxels
        for number, (frames, seeds) in enumerate(subjects, 1):
            mapper.add_subject(frames, np.ones(n_voxels), seeds)
            assert mapper.pending == number % 4
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
    """One subject at a time, and in groups of 2 (the last group short): each subject as
    stored. With prefetch, a group's arrays never share memory with the next group's,
    which is read while the caller still works on the first."""
    from shardmap.lnm.connectome.reader import ShardReader
    from shardmap.lnm.connectome.shards import shard_paths, write_shard

    rng = np.random.default_rng(5)
    runs = [rng.standard_normal((frames, 300)) for frames in (7, 12, 9, 5, 11)]  # (T, V), a frame per row
    for series in runs:
        series -= series.mean(axis=0)
    norms = [np.linalg.norm(series, axis=0) for series in runs]  # write_shard scales the series in place
    subjects = ((f"s{i}", [], series, (series ** 2).sum(axis=0)) for i, series in enumerate(runs))
    paths = shard_paths(tmp_path / "shard")
    write_shard(subjects, len(runs), 300, "mask", paths["data"], paths["norms"], paths["info"], dtype)
    stored = np.load(paths["data"]).astype(np.float32)
    offsets = np.cumsum([0, 7, 12, 9, 5, 11])
    for prefetch in (False, True):
        with ShardReader(paths, prefetch=prefetch, widen=False) as as_stored:
            for index, frames, _, _ in as_stored.subjects():  # float16 left as stored, for the CPU kernel
                assert frames.dtype == np.dtype(dtype)
                np.testing.assert_array_equal(frames, stored[offsets[index]:offsets[index + 1]])
        with ShardReader(paths, prefetch=prefetch) as reader:
            seen = [(index, frames.copy(), norm.copy()) for index, frames, norm, _ in reader.subjects()]
            groups = []
            for group in reader.subject_groups(2):
                groups.append([(index, frames, frames.copy(), norm.copy()) for index, frames, norm, _ in group])
                if prefetch and len(groups) > 1:
                    assert not any(np.shares_memory(held, new) for _, held, _, _ in groups[-2]
                                   for _, new, _, _ in groups[-1])
        assert [len(group) for group in groups] == [2, 2, 1]
        seen += [(index, copy, norm) for group in groups for index, _, copy, norm in group]
        assert [index for index, _, _ in seen] == [0, 1, 2, 3, 4] * 2
        for index, frames, norm in seen:
            np.testing.assert_array_equal(frames, stored[offsets[index]:offsets[index + 1]])
            np.testing.assert_allclose(norm, norms[index])


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
