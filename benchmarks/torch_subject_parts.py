"""Where one subject's time goes in the torch mapping kernel (lnm.device: cuda).

Times, in ms, each the median of a few calls after a warm-up, on a synthetic shard
(V voxels, T = 240): reading a subject from the page cache; copying it to the device
straight from the mapping, and through pinned memory; the seeds built by NumPy on the
CPU and by the kernel on the device; one subject added with NumPy seeds
(``add_subject``) and with the kernel's own (``add_lesions``, what a task runs); and
copying the sums back (``finish``). Not run in CI (it is meant for a GPU):

    python benchmarks/torch_subject_parts.py                    # on a GPU
    python benchmarks/torch_subject_parts.py --device cpu --voxels 20000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--voxels", type=int, default=230_000)
    parser.add_argument("--lesions", type=int, nargs="+", default=[64, 256, 1024])
    args = parser.parse_args()

    import torch

    from lnm_task import make_batch, make_shard
    from shardmap.lnm.connectome.reader import ShardReader
    from shardmap.lnm.kernels.cpu import lesion_seeds
    from shardmap.lnm.kernels.gpu import TorchMapper

    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    cuda = args.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def ms(work, repeats=5):
        work()
        sync()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            work()
            sync()
            times.append(time.perf_counter() - started)
        return round(1000 * sorted(times)[len(times) // 2], 2)

    import numpy as np

    out = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMPDIR")) as folder:
        paths = make_shard(folder, args.voxels, 240, 4, "float32")
        with ShardReader(paths) as reader:
            out["read"] = ms(lambda: reader.read(1))
            frames, norm, inv = reader.read(0)
            mapped = torch.from_numpy(frames)
            if cuda:
                out["copy_from_mapping"] = ms(lambda: mapped.to("cuda"))
                pinned = torch.empty(mapped.shape, pin_memory=True)
                target = torch.empty(mapped.shape, device="cuda")
                out["mapping_to_pinned"] = ms(lambda: pinned.copy_(mapped))
                out["copy_from_pinned"] = ms(lambda: target.copy_(pinned, non_blocking=True))
            for n_lesions in args.lesions:
                batch = make_batch(args.voxels, n_lesions)
                seeds = lesion_seeds(frames, norm, batch)
                out[f"L{n_lesions}_seeds_numpy"] = ms(lambda: lesion_seeds(frames, norm, batch), 3)
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                with TorchMapper(np.zeros((n_lesions, 2, args.voxels)), args.device) as mapper:
                    out[f"L{n_lesions}_upload"] = ms(lambda: mapper._upload(frames), 3)
                    on_device = mapper._upload(frames)
                    out[f"L{n_lesions}_seeds_kernel"] = ms(lambda: mapper.lesion_seeds(on_device, norm, batch), 3)
                    out[f"L{n_lesions}_add_subject"] = ms(lambda: mapper.add_subject(frames, inv, seeds), 3)
                    out[f"L{n_lesions}_add_lesions"] = ms(lambda: mapper.add_lesions(frames, norm, inv, batch), 3)
                    out[f"L{n_lesions}_finish"] = ms(mapper.finish, 1)
                if cuda:
                    out[f"L{n_lesions}_peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
