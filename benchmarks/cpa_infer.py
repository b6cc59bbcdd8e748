"""CPA: inference throughput and peak memory per task against the scvi-tools pattern,
and training throughput, on simulated data made here (no download).

A model is trained briefly on a small screen with G genes (inference speed does not
depend on the weights). Datasets of N cells are written as CSR .h5ad: a simulated block
of ``--block`` cells, appended on disk until N rows, so a million-cell file needs no
million-cell array in memory. Each task runs in a fresh process (peak RSS = its VmHWM)
on one shard of S rows in the middle of the file:

* ours (``cpa_infer``): reads only the shard's rows and fills preallocated arrays;
* the scvi-tools pattern: reads the whole AnnData into memory, runs the same model over
  the shard's indices in minibatches of the same size, collects the minibatch outputs in
  a list and concatenates them.

End to end (``--task-cells``, default 300k): one task over a shard of that many rows,
timed by the parent from process start to exit, side by side with the task as it was
before the torch-only path (rows read into an AnnData, ``CPA.load``, scvi-tools' data
loader) and with the model's own speed on the same rows already in memory
(``CPA.get_latent_representation``, the inference call alone); and where each task's
time goes, stage by stage.

Training: cells per second per epoch of ``CPA.train`` with the config's defaults.

    python benchmarks/cpa_infer.py                                   # docs/benchmarks.md
    python benchmarks/cpa_infer.py --cells 50000 200000 1000000 --shard 10000 50000
    python benchmarks/cpa_infer.py --smoke                           # tiny sizes, for CI
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))

from measure import peak_rss_mb, run_in_fresh_process  # noqa: E402

CFG = {"perturbation_key": "condition", "dosage_key": "dose", "control_group": "control",
       "covariate_keys": ["cell_type"], "layer": None}


def write_dataset(path, n_cells, n_genes, block, seed):
    """Write ``n_cells`` rows: one simulated block of ``block`` cells, repeated on disk."""
    import h5py
    import pandas as pd
    from anndata.io import sparse_dataset, write_elem

    from shardmap.cpa.simulate import simulate_screen

    base = simulate_screen(n_cells=min(block, n_cells), n_genes=n_genes, seed=seed)
    del base.uns["truth"]
    if n_cells <= block:
        base.write_h5ad(path)
        return
    repeats = -(-n_cells // block)
    obs = pd.concat([base.obs] * repeats).iloc[:n_cells]
    obs.index = pd.Index([f"cell{i}" for i in range(n_cells)])
    with h5py.File(path, "w") as handle:
        handle.attrs["encoding-type"] = "anndata"
        handle.attrs["encoding-version"] = "0.1.0"
        write_elem(handle, "obs", obs)
        write_elem(handle, "var", base.var)
        write_elem(handle, "X", base.X)
        matrix = sparse_dataset(handle["X"])
        written = block
        while written < n_cells:
            rows = min(block, n_cells - written)
            matrix.append(base.X[:rows])
            written += rows
        for key in ("obsm", "varm", "layers", "obsp", "varp", "uns"):
            write_elem(handle, key, {})


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


def scvi_pattern(model_dir, adata_path, start, stop, batch_size=4096):
    """The usual scvi-tools way: the whole AnnData in memory, minibatch outputs collected
    in a list and concatenated at the end."""
    import anndata as ad
    import numpy as np
    import torch

    from shardmap.cpa.model import LATENT_KEYS
    from shardmap.cpa.model_folder import load_model

    adata = ad.read_h5ad(adata_path)
    model = load_model(model_dir, adata)
    parts = {key: [] for key in LATENT_KEYS}
    with torch.inference_mode():
        for _, _, inputs in model._eval_batches(adata, np.arange(start, stop), batch_size):
            result = model.module.inference(**inputs, sample=False)
            for key in LATENT_KEYS:
                parts[key].append(result[key].cpu().numpy())
    return {key: np.concatenate(value) for key, value in parts.items()}


def scvi_path_task(model_dir, adata_path, start, stop, out_path, stages=None):
    """cpa_infer as it was before the torch-only path: the shard's rows read into an
    AnnData, the model loaded by scvi-tools' CPA.load (which sets the AnnData up), its
    data loader over the rows, the latents saved. ``stages`` collects seconds per stage."""
    import numpy as np

    from shardmap.cpa import h5ad_rows

    stages = {} if stages is None else stages
    clock = Stages(stages)
    shard = h5ad_rows.read_rows(adata_path, start, stop, list(CFG_OBS))
    clock.done("read rows into an AnnData")
    import scvi  # noqa: F401

    from shardmap.cpa.model import CPA

    clock.done("import scvi-tools and Lightning")
    model = CPA.load(str(model_dir), adata=shard, accelerator="cpu")
    clock.done("CPA.load (sets the shard up)")
    latents = model.get_latent_representation(shard, batch_size=4096)
    clock.done("inference (scvi-tools' loader)")
    with open(out_path, "wb") as handle:
        np.savez(handle, start=start, stop=stop, **latents)
    clock.done("write the latents")
    return stages


def torch_path_stages(model_dir, adata_path, start, stop, out_path):
    """The stages of cpa_infer's torch-only path, timed one by one (the same library calls
    as tasks.infer.infer_shard)."""
    import numpy as np

    stages = {}
    clock = Stages(stages)
    from shardmap.cpa import h5ad_rows
    from shardmap.cpa.inference_model import InferenceModel
    from shardmap.cpa.network import LATENT_KEYS
    from shardmap.cpa.resources import INFER_ROWS_PER_BLOCK

    clock.done("import torch, h5py, pandas")
    model = InferenceModel.load(model_dir)
    model.check_genes(h5ad_rows.var_names(adata_path), "bench")
    clock.done("load the network")
    codes = model.read_codes(adata_path, start, stop)
    clock.done("read and encode obs")
    latents = {key: np.empty((stop - start, model.network.n_latent), dtype=np.float32) for key in LATENT_KEYS}
    blocks = h5ad_rows.row_blocks(adata_path, start, stop, INFER_ROWS_PER_BLOCK, read_ahead=False)
    reading = computing = 0.0
    while True:
        tick = time.perf_counter()
        block = next(blocks, None)
        tock = time.perf_counter()
        reading += tock - tick
        if block is None:
            break
        at = block.start - start
        model.latents(block, {k: None if v is None else v[at:at + block.n_rows] for k, v in codes.items()},
                      latents, at)
        computing += time.perf_counter() - tock
    stages["read rows (blocks, not overlapped here)"] = reading
    stages["check values + network"] = computing
    clock.last = time.perf_counter()
    with open(out_path, "wb") as handle:
        np.savez(handle, start=start, stop=stop, **latents)
    clock.done("write the latents")
    return stages


def in_memory_model(model_dir, adata_path, start, stop):
    """The model's own speed: CPA.get_latent_representation over the rows already in
    memory (set up once), the inference call alone."""
    from shardmap.cpa import h5ad_rows
    from shardmap.cpa.model import CPA

    shard = h5ad_rows.read_rows(adata_path, start, stop, list(CFG_OBS))
    model = CPA.load(str(model_dir), adata=shard, accelerator="cpu")
    started = time.perf_counter()
    model.get_latent_representation(shard, batch_size=4096)
    return time.perf_counter() - started


class Stages:
    """Seconds since the previous stage ended, recorded under each stage's name."""

    def __init__(self, stages):
        self.stages = stages
        self.last = time.perf_counter()

    def done(self, name):
        now = time.perf_counter()
        self.stages[name] = now - self.last
        self.last = now


CFG_OBS = ("condition", "dose", "cell_type")


def merge_task(adata_path, folder, shard, n_latent):
    """cpa_merge over shard files of random latents that cover every row of the file."""
    import numpy as np

    from shardmap.cpa import h5ad_rows
    from shardmap.cpa.model import LATENT_KEYS
    from shardmap.cpa.tasks.merge import merge_latents

    total = h5ad_rows.n_obs(adata_path)
    rng = np.random.default_rng(0)
    block = {key: rng.standard_normal((shard, n_latent)).astype(np.float32) for key in LATENT_KEYS}
    paths = []
    for start in range(0, total, shard):
        stop = min(start + shard, total)
        paths.append(Path(folder) / f"latents-{start}.npz")
        np.savez(paths[-1], start=start, stop=stop, **{k: v[:stop - start] for k, v in block.items()})
    started = time.perf_counter()
    merge_latents(adata_path, paths, Path(folder) / "latents.h5ad")
    seconds = time.perf_counter() - started
    for path in paths:
        path.unlink()
    (Path(folder) / "latents.h5ad").unlink()
    return seconds


def run_task(args):
    if args.method == "train":
        rate = training_throughput(args.train_cells, args.genes, args.latent, args.train_epochs, args.threads,
                                   args.train_accelerator[0])
        print(json.dumps({"cells_per_s": rate, "peak_rss_mb": peak_rss_mb()}))
        return
    started = time.perf_counter()
    if args.method == "in-memory":
        print(json.dumps({"seconds": in_memory_model(args.model, args.adata, args.start, args.stop)}))
        return
    if args.method in ("stages-ours", "stages-before"):
        run = torch_path_stages if args.method == "stages-ours" else scvi_path_task
        print(json.dumps({"stages": run(args.model, args.adata, args.start, args.stop, args.out)}))
        return
    if args.method == "merge":
        seconds = merge_task(args.adata, Path(args.out).parent, args.stop - args.start, args.latent)
        print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb()}))
        return
    if args.method == "scvi":
        scvi_pattern(args.model, args.adata, args.start, args.stop)
    elif args.method == "before":
        scvi_path_task(args.model, args.adata, args.start, args.stop, args.out)
    else:
        # As the entry script of rule cpa_infer runs it: in the task wrapper, which ends
        # the process without the interpreter's teardown once the task has succeeded.
        from shardmap.task import snakemake_task

        with snakemake_task(BenchmarkTask, skip_teardown=True):
            from shardmap.cpa.tasks.infer import infer_shard

            infer_shard(args.model, args.adata, args.start, args.stop, args.out)
            seconds = time.perf_counter() - started
            print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb()}))
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb()}))


class BenchmarkTask:
    """What the task wrapper reads of Snakemake's object: threads from OMP_NUM_THREADS."""

    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    rule, log = "cpa_infer", []

    class wildcards:
        @staticmethod
        def items():
            return []


def training_throughput(n_cells, n_genes, n_latent, epochs, threads, accelerator="cpu"):
    """Training cells per second per epoch of CPA.train (the config's default minibatch of 512)."""
    import scvi
    import torch

    from shardmap.cpa import CPA
    from shardmap.cpa.simulate import simulate_screen

    torch.set_num_threads(threads)
    adata = simulate_screen(n_cells=n_cells, n_genes=n_genes, seed=2)
    scvi.settings.seed = 0
    CPA.setup_anndata(adata, **{k: v for k, v in CFG.items() if k != "layer"})
    model = CPA(adata, n_latent=n_latent)
    model.train(max_epochs=1, batch_size=512, accelerator=accelerator)  # warm-up
    started = time.perf_counter()
    model.train(max_epochs=epochs, batch_size=512, accelerator=accelerator)
    # Training cells (the default 90 % split) per second; the 10 % validation pass is
    # part of the time, as it is in a real run.
    return 0.9 * n_cells * epochs / (time.perf_counter() - started)


def child_run(script_args, env):
    return run_in_fresh_process(__file__, script_args, env)


def timed_child_run(script_args, env):
    """child_run, with ``wall``: the seconds from starting the process to its exit."""
    started = time.perf_counter()
    result = child_run(script_args, env)
    result["wall"] = time.perf_counter() - started
    return result


def task_table(args, env, folder):
    """One task over ``--task-cells`` rows end to end, before and now, and the model in
    memory on the same rows; interleaved, ``--repeats`` fresh processes each."""
    path = folder / "task.h5ad"
    n_cells = args.task_cells
    write_dataset(path, n_cells, args.genes, args.block, seed=1)
    common = ["--model", str(folder / "model"), "--adata", str(path), "--out", str(folder / "task.npz"),
              "--start", "0", "--stop", str(n_cells)]
    methods = {"now": "ours", "before": "before", "model in memory": "in-memory"}
    runs = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, method in methods.items():
            runs[name].append(timed_child_run(common + ["--method", method], env))
    print(f"one task over {n_cells} rows (the whole file), G={args.genes}, n_latent={args.latent}, "
          f"threads={args.threads}, repeats={args.repeats}, interleaved")
    print()
    print("| method | median s | the runs | cells/s | peak RSS MB |")
    print("|---|---|---|---|---|")
    for name, results in runs.items():
        key = "seconds" if name == "model in memory" else "wall"
        times = sorted(r[key] for r in results)
        peak = max(r.get("peak_rss_mb", 0) for r in results)
        label = {"now": "cpa_infer now, end to end (process start to exit)",
                 "before": "cpa_infer before (scvi-tools path), end to end",
                 "model in memory": "the model in memory (CPA.get_latent_representation alone)"}[name]
        print(f"| {label} | {median(times):.2f} | {' / '.join(f'{t:.2f}' for t in times)} | "
              f"{n_cells / median(times):.0f} | {f'{peak:.0f}' if peak else '-'} |")
    print()
    for method, title in (("stages-before", "before"), ("stages-ours", "now")):
        stages = [child_run(common + ["--method", method], env)["stages"] for _ in range(args.repeats)]
        print(f"stages {title} (median s of {args.repeats}):")
        for name in stages[0]:
            print(f"  {name}: {median(s[name] for s in stages):.2f}")
        print()
    path.unlink()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, nargs="+", default=[50_000, 200_000, 1_000_000])
    parser.add_argument("--shard", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--latent", type=int, default=64)
    parser.add_argument("--block", type=int, default=50_000, help="simulated cells repeated to fill a file")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--task-cells", type=int, default=300_000,
                        help="rows of the end-to-end task comparison (0: skip it)")
    parser.add_argument("--task-only", action="store_true", help="only the end-to-end task comparison")
    parser.add_argument("--train-cells", type=int, default=20_000, help="0: skip the training benchmark")
    parser.add_argument("--train-epochs", type=int, default=3)
    parser.add_argument("--train-accelerator", nargs="+", default=["cpu"], choices=["cpu", "gpu"],
                        help="train on each of these, side by side (each run in a fresh process)")
    parser.add_argument("--train-only", action="store_true", help="skip the inference and merge benchmarks")
    parser.add_argument("--smoke", action="store_true")
    for hidden in ("--model", "--adata", "--out", "--method"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stop", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model:
        return run_task(args)
    if args.smoke:
        args.cells, args.shard, args.genes, args.latent, args.repeats = [2000, 5000], [500], 50, 8, 1
        args.block, args.train_cells, args.train_epochs, args.task_cells = 2000, 1000, 1, 3000
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    if args.train_only:
        return training_table(args, env)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMPDIR")) as folder:
        folder = Path(folder)
        (folder / "merge").mkdir()
        train(folder, args.genes, args.latent)
        if args.task_cells:
            task_table(args, env, folder)
        if args.task_only:
            return
        print(f"G={args.genes} n_latent={args.latent} threads={args.threads} repeats={args.repeats}")
        print()
        print("| cells in file | shard | method | median s/task (process start to exit) | cells/s | peak RSS MB |")
        print("|---|---|---|---|---|---|")
        for n_cells in args.cells:
            path = folder / f"data-{n_cells}.h5ad"
            write_dataset(path, n_cells, args.genes, args.block, seed=1)
            for shard in args.shard:
                if shard > n_cells:
                    continue
                start = (n_cells - shard) // 2
                for method in ("ours", "scvi"):
                    runs = [timed_child_run(["--model", str(folder / "model"), "--adata", str(path), "--out",
                                             str(folder / "shard.npz"), "--start", str(start), "--stop",
                                             str(start + shard), "--method", method], env)
                            for _ in range(args.repeats)]
                    seconds = median(r["wall"] for r in runs)
                    peak = max(r["peak_rss_mb"] for r in runs)
                    name = "shardmap cpa_infer" if method == "ours" else "scvi-tools pattern"
                    print(f"| {n_cells} | {shard} | {name} | {seconds:.2f} | {shard / seconds:.0f} | {peak:.0f} |")
            if n_cells == max(args.cells):
                shard = max(args.shard)
                merged = child_run(["--model", "-", "--adata", str(path), "--out", str(folder / "merge" / "x"),
                                    "--start", "0", "--stop", str(shard), "--latent", str(args.latent),
                                    "--method", "merge"], env)
                merge_line = (f"cpa_merge of {n_cells} cells from {-(-n_cells // shard)} shards: "
                              f"{merged['seconds']:.1f} s ({n_cells / merged['seconds']:.0f} cells/s), "
                              f"peak RSS {merged['peak_rss_mb']:.0f} MB")
            path.unlink()
        print()
        print(merge_line)
    if args.train_cells:
        print()
        training_table(args, env)


def training_table(args, env):
    """Training cells per second per epoch on each accelerator, ``--repeats`` fresh processes each."""
    print(f"training: {args.train_cells} cells x {args.train_epochs} epochs after a warm-up epoch, G={args.genes}, "
          f"n_latent={args.latent}, minibatch 512, threads={args.threads}, repeats={args.repeats}")
    print()
    print("| accelerator | median training cells/s per epoch | runs | peak RSS MB |")
    print("|---|---|---|---|")
    for accelerator in args.train_accelerator:
        runs = [child_run(["--model", "-", "--method", "train", "--train-accelerator", accelerator,
                           "--train-cells", str(args.train_cells), "--train-epochs", str(args.train_epochs),
                           "--genes", str(args.genes), "--latent", str(args.latent), "--threads",
                           str(args.threads)], env) for _ in range(args.repeats)]
        rates = sorted(r["cells_per_s"] for r in runs)
        print(f"| {accelerator} | {median(rates):.0f} | {' / '.join(f'{r:.0f}' for r in rates)} | "
              f"{max(r['peak_rss_mb'] for r in runs):.0f} |")


if __name__ == "__main__":
    main()
