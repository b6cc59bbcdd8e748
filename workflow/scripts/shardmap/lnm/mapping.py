"""The mapping task: one lesion batch against one connectome shard, streamed by subject.

The task reads the stored time courses of each subject once, a group of subjects at a
time (the next group is read in the background meanwhile), and hands them to a kernel
that builds the seeds of all lesions of the batch in float64, correlates them with
every mask voxel and adds z and z^2 into float64 sums: ``kernels.cpu`` (NumPy) on the
CPU, eight subjects per pass over the voxels; ``kernels.gpu`` (torch) on a CUDA GPU, one
subject at a time. Both recompute |r| > 0.95 in float64.

Memory: two groups' frames (T x V per subject, as stored: float32, or float16 that the
CPU kernel widens block by block; the GPU kernel gets them widened to float32) and the
float64 sums (L x 2 x V). It does not depend on the number of subjects.
"""

from __future__ import annotations

import logging
import time

from ..devices import resolve_device as resolve_config_device
from ..errors import InputError
from .connectome.reader import ShardReader
from .kernels.cpu import NumpyMapper, compiled_epilogue_pays
from .stats import SufficientStats

log = logging.getLogger(__name__)

def resolve_device(device):
    """'cpu' or 'cuda' for the configured ``lnm.device`` (auto: cuda when torch sees a GPU)."""
    return resolve_config_device(device, "lnm.device", "mapping tasks")


def make_mapper(sums, device, threads, n_subjects=1):
    """The kernel for ``device``: 'cpu', 'cuda', or 'torch-cpu' (the torch kernel on the
    CPU: slower than NumPy there, but it lets the tests check the GPU code without a GPU).
    On the CPU a task of ``n_subjects`` large enough gets the compiled epilogue."""
    if device == "cpu":
        n_lesions, _, n_voxels = sums.shape
        return NumpyMapper(sums, threads, compiled=compiled_epilogue_pays(n_lesions, n_voxels, n_subjects))
    from .kernels.gpu import TorchMapper

    return TorchMapper(sums, "cpu" if device == "torch-cpu" else device)


def map_batch_over_shard(batch, shard_paths, progress_every=10.0, device="auto", threads=1, prefetch=True):
    """Stream every subject of a prepared shard through the lesions of ``batch``.

    Parameters
    ----------
    batch : lesions.LesionBatch
    shard_paths : dict with keys data, norms, info (see connectome.shards.shard_paths)
    device : 'auto', 'cpu' or 'cuda' ('auto' takes a GPU when torch sees one), or
        'torch-cpu' to run the GPU kernel on the CPU (for tests)
    threads : worker threads of the CPU kernel
    prefetch : read the next subject while the current one is computed

    Returns
    -------
    stats.SufficientStats over the shard's subjects.
    """
    device = device if device == "torch-cpu" else resolve_device(device)
    # The CPU kernel widens float16 storage itself, a voxel block at a time in cache.
    with ShardReader(shard_paths, prefetch=prefetch, widen=device != "cpu") as reader:
        info = reader.info
        if info.mask_fingerprint != batch.mask_fingerprint:
            raise InputError(f"lesion batch '{batch.lesion_ids[0]}...' and connectome shard "
                             f"'{shard_paths['info']}' were prepared on different brain masks; delete "
                             "the prepared connectome and lesion batches (lnm/connectome, lnm/lesions "
                             "under outdir) and rerun.")
        stats = SufficientStats.zeros(batch.lesion_ids, info.n_voxels)
        with make_mapper(stats.sums, device, threads, len(reader)) as mapper:
            log.info("%d lesions x %d subjects x %d voxels on %s (%s)", len(batch), len(reader), info.n_voxels,
                     device, type(mapper).__name__)
            started = last = time.monotonic()
            for group in reader.subject_groups(mapper.subjects_per_pass):
                mapper.add_group([subject[1:] for subject in group], batch)
                done = group[-1][0] + 1
                now = time.monotonic()
                if now - last >= progress_every or done == len(reader):
                    rate = done / (now - started)
                    eta = (len(reader) - done) / rate if rate > 0 else float("nan")
                    log.info("subjects %d/%d, %.2f subjects/s, ETA %.0f s", done, len(reader), rate, eta)
                    last = now
            mapper.finish()
        stats.n[:] = len(reader)
        stats.subject_ids = list(info.subject_ids)
    return stats


def map_batch_files(batch_path, shard_paths, data_path, info_path, device="auto", threads=1):
    """Run one mapping task from files and write its partial sums."""
    from .lesions import LesionBatch

    stats = map_batch_over_shard(LesionBatch.load(batch_path), shard_paths, device=device, threads=threads)
    stats.save(data_path, info_path)
    return stats
