"""Throughput and peak memory of one CPA inference task (cpa_infer) on simulated data.

A model is trained briefly on a small screen with G genes; datasets of N cells are
simulated and written as CSR .h5ad; each inference task runs in a fresh process (peak
RSS = its VmHWM) on one shard of S rows in the middle of the file.

    python benchmarks/cpa_infer.py --cells 50000 200000 --shard 10000 --genes 2000
    python benchmarks/cpa_infer.py --smoke      # tiny sizes, for CI
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))

from measure import peak_rss_mb  # noqa: E402
CFG = {"perturbation_key": "condition", "dosage_key": "dose", "control_group": "control",
       "covariate_keys": ["cell_type"], "layer": None}


def write_dataset(path, n_cells, n_genes, seed):
    from shardmap.cpa.simulate import simulate_screen

    adata = simulate_screen(n_cells=n_cells, n_genes=n_genes, seed=seed)
    del adata.uns["truth"]
    adata.write_h5ad(path)


def train(folder, n_genes, n_latent):
    import scvi

    from shardmap.cpa import CPA
    from shardmap.cpa.simulate import simulate_screen

    adata = simulate_screen(n_cells=3000, n_genes=n_genes, seed=0)
    scvi.settings.seed = 0
    CPA.setup_anndata(adata, **{k: v for k, v in CFG.items() if k != "layer"})
    model = CPA(adata, n_latent=n_latent)
    model.train(max_epochs=1, batch_size=256, accelerator="cpu")
    model.save(str(folder / "model"), save_anndata=False)


def run_task(args):
    from shardmap.cpa.tasks import infer_shard

    started = time.perf_counter()
    infer_shard(args.model, args.adata, CFG, args.start, args.stop, args.out)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb()}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--shard", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--latent", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true")
    for hidden in ("--model", "--adata", "--out"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stop", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model:
        return run_task(args)
    if args.smoke:
        args.cells, args.shard, args.genes, args.latent, args.repeats = [2000], [500], 50, 8, 1
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        train(folder, args.genes, args.latent)
        print(f"G={args.genes} n_latent={args.latent} threads={args.threads}")
        print("| cells in file | shard | median s/task | cells/s | peak RSS MB |")
        print("|---|---|---|---|---|")
        for n_cells in args.cells:
            path = folder / f"data-{n_cells}.h5ad"
            write_dataset(path, n_cells, args.genes, seed=1)
            for shard in args.shard:
                if shard > n_cells:
                    continue
                start = (n_cells - shard) // 2
                runs = []
                for _ in range(args.repeats):
                    out = subprocess.run([sys.executable, __file__, "--model", str(folder / "model"),
                                          "--adata", str(path), "--out", str(folder / "shard.npz"),
                                          "--start", str(start), "--stop", str(start + shard)],
                                         env=env, check=True, capture_output=True, text=True)
                    runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
                seconds = sorted(r["seconds"] for r in runs)[len(runs) // 2]
                peak = max(r["peak_rss_mb"] for r in runs)
                print(f"| {n_cells} | {shard} | {seconds:.2f} | {shard / seconds:.0f} | {peak:.0f} |")
            path.unlink()


if __name__ == "__main__":
    main()
