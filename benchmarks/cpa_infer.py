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

Query data sets (``--query-cells``, default 300k; ``--query-only`` for this part alone):
a trained model applied to cpa.query files made from the same simulated cells: (a) the
training-layout file read as a query (the model's genes in its order: identity
alignment); (b) a lab's own controls: the genes in another order with 10 % more genes
that the model does not know, no perturbation or dose column (every cell a control
cell), the covariate column kept. Side by side, interleaved, each task in a fresh process
as its entry script runs it, timed from process start to exit: ``cpa_infer`` over the
training file; the query infer task (``infer_shard(query=entry)``) over (a) and (b); the
counterfactual task (``predict_counterfactual(query=entry)``, the first drug at dose 1)
over (b)'s control cells in blocks of ``--query-shard`` rows (the workflow's shard_size);
the query check (``check_query``: ``query_summary``) on (b); and, for comparison,
``cpa_predict`` over the training file's control cells. The latents of (a) must equal
cpa_infer's, and (b)'s basal latents must match them. Then the query infer task over a
``--query-shard`` shard in the middle of the (b) file and of a ``--query-flat-cells``
file (default 1M rows, written once: about a minute; 0 skips it), beside cpa_infer over
such a shard of the training file: peak RSS flat in the file size. Last, where each
query task's time goes, stage by stage.

Training: cells per second per epoch of ``CPA.train`` with the config's defaults.

    python benchmarks/cpa_infer.py                                   # docs/benchmarks.md
    python benchmarks/cpa_infer.py --cells 50000 200000 1000000 --shard 10000 50000
    python benchmarks/cpa_infer.py --query-only --repeats 5          # the query tables
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
# The workflow's cpa section as rule cpa_query_predict passes it (shard_size: its default).
PREDICT_CFG = {**CFG, "batch_key": None, "smiles_key": None, "split_key": None, "shard_size": 50_000}
COUNTERFACTUAL = ("drug00", "1")  # the first drug at dose 1
EXTRA_GENES = 0.1  # the lab file's genes the model does not know, as a fraction of its genes


def query_entry(path):
    """A cpa.query entry for ``path`` as the workflow passes it to the tasks."""
    return {"name": "bench", "adata": str(path), "layer": None, "gene_key": None, "missing_genes": "refuse",
            "covariates": {}}


def lab_layout(base, seed):
    """(X, obs, var) of ``base`` stored as a lab's own controls: the genes in another order
    with ``EXTRA_GENES`` more that the model does not know (copies of random columns, so of
    the same density), no perturbation or dose column (every cell a control cell), the
    covariate column kept. Sorted CSR indices, as anndata writes them."""
    import numpy as np
    import pandas as pd
    from scipy import sparse

    rng = np.random.default_rng(seed + 100)
    n_genes = base.n_vars
    n_extra = max(1, round(EXTRA_GENES * n_genes))
    extra = base.X[:, rng.choice(n_genes, n_extra, replace=False)]
    names = np.r_[np.asarray(base.var_names), [f"extra{i:04d}" for i in range(n_extra)]]
    order = rng.permutation(names.size)
    matrix = sparse.hstack([base.X, extra]).tocsr()[:, order]
    matrix.sort_indices()
    return matrix.astype(np.float32), base.obs[["cell_type"]].copy(), pd.DataFrame(index=pd.Index(names[order]))


def write_dataset(path, n_cells, n_genes, block, seed, lab=False):
    """Write ``n_cells`` rows: one simulated block of ``block`` cells, repeated on disk;
    with ``lab``, stored as a lab's own controls (``lab_layout``)."""
    import anndata as ad
    import h5py
    import pandas as pd
    from anndata.io import sparse_dataset, write_elem

    from shardmap.cpa.simulate import simulate_screen

    base = simulate_screen(n_cells=min(block, n_cells), n_genes=n_genes, seed=seed)
    del base.uns["truth"]
    if lab:
        base = ad.AnnData(*lab_layout(base, seed))
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
    from shardmap.cpa.model_input import ModelInput
    from shardmap.cpa.network import LATENT_KEYS
    from shardmap.cpa.resources import INFER_ROWS_PER_BLOCK

    clock.done("import torch, h5py, pandas")
    model = InferenceModel.load(model_dir)
    source = ModelInput(model.vocabulary, adata_path)  # the genes checked against the model's
    clock.done("load the network")
    codes = model.encode_obs(source.obs(start, stop, names=False))
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


class Timer:
    """Seconds summed under names, for stages that recur block after block."""

    def __init__(self, stages):
        self.stages = stages
        self.last = time.perf_counter()

    def add(self, name):
        now = time.perf_counter()
        self.stages[name] = self.stages.get(name, 0.0) + now - self.last
        self.last = now


def query_infer_stages(model_dir, adata_path, start, stop, out_path):
    """The stages of the query infer task (tasks.infer.infer_shard with a cpa.query entry),
    timed one by one with the same library calls; blocks read without read-ahead."""
    stages = {}
    clock = Timer(stages)
    import numpy as np

    from shardmap.atomic import atomic_open
    from shardmap.cpa import h5ad_rows
    from shardmap.cpa.inference_model import InferenceModel
    from shardmap.cpa.model_input import ModelInput
    from shardmap.cpa.network import LATENT_KEYS
    from shardmap.cpa.resources import INFER_BATCH, INFER_ROWS_PER_BLOCK

    clock.add("import torch, h5py, pandas")
    model = InferenceModel.load(model_dir)
    clock.add("load the network")
    source = ModelInput(model.vocabulary, adata_path, query_entry(adata_path))
    clock.add("ModelInput (genes matched by name, columns checked)")
    obs = source.obs(start, stop, names=False)
    clock.add("read obs, the query's rules, category checks")
    codes = model.encode_obs(obs)
    clock.add("encode obs")
    latents = {key: np.empty((stop - start, model.network.n_latent), dtype=np.float32) for key in LATENT_KEYS}
    clock.add("allocate the latents")
    for block in h5ad_rows.row_blocks(adata_path, start, stop, INFER_ROWS_PER_BLOCK, source.layer, read_ahead=False):
        clock.add("read rows (blocks, not overlapped here)")
        block = source.alignment.block(block)
        clock.add("align genes (renumber, drop extra genes)")
        at = block.start - start
        model.latents(block, {k: None if v is None else v[at:at + block.n_rows] for k, v in codes.items()},
                      latents, at, INFER_BATCH, source.where, adata_path)
        clock.add("check values + network")
    with atomic_open(out_path) as handle:
        np.savez(handle, start=start, stop=stop, **latents)
    clock.add("write the latents (atomic: fsync, rename)")
    return stages


def query_predict_stages(model_dir, adata_path, out_path, chunk_rows):
    """The stages of the counterfactual task on a query (tasks.predict.predict_counterfactual
    with a cpa.query entry), timed one by one with the same library calls; blocks read
    without read-ahead; InferenceModel.predict_mean's steps timed apart (its calls, inlined)."""
    stages = {}
    clock = Timer(stages)
    import anndata as ad
    import h5py
    import numpy as np
    import pandas as pd
    import torch

    from shardmap.atomic import atomic_path
    from shardmap.cpa import h5ad_rows
    from shardmap.cpa.codes import encode_override
    from shardmap.cpa.h5ad_rows import RowBlock
    from shardmap.cpa.inference_model import InferenceModel
    from shardmap.cpa.model_input import ModelInput
    from shardmap.cpa.resources import INFER_BATCH

    clock.add("import anndata, torch, h5py, pandas")
    model = InferenceModel.load(model_dir)
    clock.add("load the network")
    entry = query_entry(adata_path)
    source = ModelInput(model.vocabulary, adata_path, entry)
    override = encode_override(*COUNTERFACTUAL, model.perturbation_state, 1)
    clock.add("ModelInput (genes matched by name), override encoded")
    obs = source.obs()
    is_control = source.control_mask(obs)
    n_control = int(is_control.sum())
    clock.add("read obs (every row), rules, checks, control mask")
    shown = source.read_obs(model.obs_columns)
    clock.add("read the obs columns kept in the output")
    genes = model.var_names
    with atomic_path(out_path) as tmp:
        result = ad.AnnData(obs=shown[is_control], var=pd.DataFrame(index=pd.Index(genes)))
        result.uns["counterfactual"] = {"perturbation": COUNTERFACTUAL[0], "dosage": COUNTERFACTUAL[1],
                                        "source": str(adata_path), "query": entry["name"],
                                        **source.alignment.summary()}
        result.write_h5ad(tmp)
        clock.add("write the output's obs and var")
        with h5py.File(tmp, "r+") as out:
            if "X" in out:
                del out["X"]
            matrix = out.create_dataset("X", shape=(n_control, len(genes)), dtype="float32")
            matrix.attrs["encoding-type"] = "array"
            matrix.attrs["encoding-version"] = "0.2.0"
            buffer = np.empty((min(chunk_rows, n_control), len(genes)), dtype=np.float32)
            written = 0
            clock.add("write the output's obs and var")
            blocks = h5ad_rows.row_blocks(adata_path, 0, is_control.size, chunk_rows, source.layer,
                                          read_ahead=False, wanted=is_control)
            for block in blocks:
                clock.add("read rows (blocks, not overlapped here)")
                block = source.alignment.block(block)
                clock.add("align genes (renumber; extra genes as stored zeros)")
                rows = np.flatnonzero(is_control[block.start:block.stop])
                block_codes = model.encode_obs(obs.iloc[block.start:block.stop])
                clock.add("encode the block's obs")
                # InferenceModel.predict_mean, its parts timed apart.
                with torch.inference_mode():
                    selected = block
                    if len(rows) < block.n_rows:  # a copy only where some rows are not control cells
                        sub = block.to_scipy(len(genes))[rows]
                        selected = RowBlock(0, sub.shape[0], indptr=sub.indptr.astype(np.int64),
                                            indices=sub.indices, data=sub.data)
                    clock.add("predict: select the control rows (scipy CSR copy)")
                    for first_row in range(0, len(rows), INFER_BATCH):
                        part = slice(first_row, min(first_row + INFER_BATCH, len(rows)))
                        h, library, values = model._encoded(selected, part)
                        model._check_values(values, library, block, source.where, adata_path)
                        clock.add("predict: encoder + value checks")
                        inputs = model._codes_on_device(block_codes, rows[part])
                        inputs["perturbation"] = torch.from_numpy(override).expand(part.stop - part.start, -1)
                        latent = model.network.latents_from_hidden(h, library, **inputs)
                        clock.add("predict: latents (embeddings)")
                        mean = model.network.decoder_outputs(latent["z"], latent["library"])["mean"]
                        clock.add("predict: decoder (hidden layers, softmax over genes)")
                        buffer[part] = mean.cpu().numpy()
                        clock.add("predict: copy into the buffer")
                matrix[written:written + rows.size] = buffer[:rows.size]
                written += rows.size
                clock.add("write the predictions (h5py)")
        clock.add("close the output")
    clock.add("fsync and rename")
    return stages


def query_check_stages(model_dir, adata_path):
    """The stages of the query check (tasks.check_query.query_summary), timed one by one
    with the same library calls."""
    stages = {}
    clock = Timer(stages)
    from shardmap.cpa import h5ad_rows
    from shardmap.cpa.model_input import ModelInput
    from shardmap.cpa.tasks.check_query import vocabulary_of
    from shardmap.cpa.values import check_values, empty_cells, first_duplicate_entry

    clock.add("import h5py, pandas, scipy")
    vocabulary = vocabulary_of(Path(model_dir) / "model.pt")
    clock.add("the model's vocabulary (imports torch, loads model.pt)")
    entry = query_entry(adata_path)
    total = h5ad_rows.n_obs(adata_path)
    source = ModelInput(vocabulary, adata_path, entry)
    clock.add("ModelInput (genes matched by name)")
    obs = source.obs()
    source.check_drugs(obs)
    clock.add("read obs (every row), rules, category and drug checks")
    names = h5ad_rows.read_obs(adata_path, []).index
    clock.add("read the cell names")
    for start in range(0, total, 20_000):
        stop = min(start + 20_000, total)
        block = h5ad_rows.read_matrix(adata_path, start, stop, source.layer)
        clock.add("read_matrix (chunks of 20,000 rows)")
        first_duplicate_entry(block)
        clock.add("first_duplicate_entry")
        aligned = source.alignment.matrix(block)
        clock.add("align genes (alignment.matrix)")
        check_values(aligned, vocabulary.count_data, where=source.where, obs_names=names[start:stop],
                     empty_cells_allowed=True, gene_names=vocabulary.var_names)
        clock.add("check_values")
        empty_cells(aligned, names, start)
        clock.add("empty_cells")
    source.control_mask(obs)
    clock.add("control mask")
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
    if args.method.startswith("stages-query-"):
        # One or more (comma-separated: several in one process, for --smoke).
        stages = {"stages-query-infer": lambda: query_infer_stages(args.model, args.adata, args.start, args.stop,
                                                                   args.out + ".npz"),
                  "stages-query-predict": lambda: query_predict_stages(args.model, args.adata, args.out + ".h5ad",
                                                                       args.chunk_rows),
                  "stages-query-check": lambda: query_check_stages(args.model, args.adata)}
        print(json.dumps({"stages": {method: stages[method]() for method in args.method.split(",")}}))
        return
    if args.method in QUERY_TASKS:
        return query_task(args, started)
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


# The query tasks: (rule, whether its entry script ends the process without teardown).
QUERY_TASKS = {"query-infer": ("cpa_query_infer", True), "query-predict": ("cpa_query_predict", True),
               "query-check": ("cpa_query_check", False), "predict": ("cpa_predict", True)}


def query_task(args, started):
    """A query task as its entry script runs it (cpa_infer.py, cpa_predict.py,
    cpa_query_check.py): in the task wrapper, the teardown skipped where the script skips
    it; prints the seconds and peak RSS before the wrapper ends the process."""
    from shardmap.task import snakemake_task

    rule, skip_teardown = QUERY_TASKS[args.method]
    BenchmarkTask.rule = rule
    with snakemake_task(BenchmarkTask, skip_teardown=skip_teardown):
        entry = query_entry(args.adata)
        if args.method == "query-infer":
            from shardmap.cpa.tasks.infer import infer_shard

            infer_shard(args.model, args.adata, args.start, args.stop, args.out, device="cpu", query=entry)
        elif args.method in ("query-predict", "predict"):
            from shardmap.cpa.tasks.predict import predict_counterfactual

            predict_counterfactual(args.model, args.adata, PREDICT_CFG, *COUNTERFACTUAL, args.out, args.chunk_rows,
                                   device="cpu", query=entry if args.method == "query-predict" else None)
        else:
            from shardmap.cpa.tasks.check_query import check_query, vocabulary_of

            check_query(entry, vocabulary_of(Path(args.model) / "model.pt"), args.out)
        print(json.dumps({"seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb()}), flush=True)


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
    n_cells = args.task_cells
    path = dataset(folder, n_cells, args)
    common = ["--model", str(folder / "model"), "--adata", str(path), "--out", str(folder / "task.npz"),
              "--start", "0", "--stop", str(n_cells)]
    methods = {"now": "ours", "before": "before", "model in memory": "in-memory"}
    if args.smoke:  # its calls are those of "before" (CPA.load, get_latent_representation)
        del methods["model in memory"]
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


def dataset(folder, n_cells, args, lab=False):
    """The file of ``n_cells`` rows (``write_dataset``, seed 1) in ``folder``, written once."""
    path = folder / f"{'lab' if lab else 'training'}-{n_cells}.h5ad"
    if not path.exists():
        write_dataset(path, n_cells, args.genes, args.block, seed=1, lab=lab)
    return path


def query_table(args, env, folder):
    """The query tasks against cpa_infer, end to end, interleaved, ``--repeats`` fresh
    processes each; the query infer task's peak RSS against the file size; the stages."""
    import h5py
    import numpy as np

    from shardmap.cpa import h5ad_rows

    n_cells = args.query_cells
    training, lab = dataset(folder, n_cells, args), dataset(folder, n_cells, args, lab=True)
    shard = min(args.query_shard, n_cells)
    n_control = int((h5ad_rows.read_obs(training, [CFG["perturbation_key"]])[CFG["perturbation_key"]]
                     == CFG["control_group"]).sum())

    def task(method, path, out, start=0, stop=n_cells):
        return ["--model", str(folder / "model"), "--adata", str(path), "--out", str(folder / out), "--start",
                str(start), "--stop", str(stop), "--method", method, "--chunk-rows", str(shard)]

    tasks = {
        "`cpa_infer`, the training file (query=None)": task("ours", training, "infer-training.npz"),
        "query infer (a): the model's genes in its order": task("query-infer", training, "infer-a.npz"),
        "query infer (b): genes reordered, +10 % unknown, no perturbation column":
            task("query-infer", lab, "infer-b.npz"),
        f"counterfactual on (b): {COUNTERFACTUAL[0]} at dose {COUNTERFACTUAL[1]}, {n_cells} control cells, "
        f"chunk_rows {shard}": task("query-predict", lab, "counterfactual-b.h5ad"),
        "query check on (b) (`check_query`: `query_summary`)": task("query-check", lab, "check-b.tsv"),
    }
    if not args.smoke:  # the same function as the row above it but one
        tasks[f"for comparison: `cpa_predict` on the training file (query=None), its {n_control} control "
              "cells"] = task("predict", training, "counterfactual-training.h5ad")
    cells = {name: n_control if name.startswith("for comparison") else n_cells for name in tasks}
    runs = {name: [] for name in tasks}
    counterfactual = folder / "counterfactual-b.h5ad"
    for repeat in range(args.repeats):
        for name, script_args in tasks.items():
            runs[name].append(timed_child_run(script_args, env))
            if counterfactual.exists() and repeat < args.repeats - 1:
                counterfactual.unlink()  # n_cells x genes float32: 2.4 GB at 300k x 2000
            (folder / "counterfactual-training.h5ad").unlink(missing_ok=True)
    with h5py.File(counterfactual, "r") as handle:
        cf_shape = handle["X"].shape
    counterfactual.unlink()
    n_file_genes = len(h5ad_rows.var_names(lab))
    print(f"query tasks over {n_cells} rows (the whole file), G={args.genes} (file (b): {n_file_genes} genes), "
          f"n_latent={args.latent}, threads={args.threads}, repeats={args.repeats}, interleaved; each task in a "
          "fresh process, timed from its start to its exit")
    print()
    print("| task | median s | the runs | cells/s | peak RSS MB |")
    print("|---|---|---|---|---|")
    for name, results in runs.items():
        times = sorted(r["wall"] for r in results)
        print(f"| {name} | {median(times):.2f} | {' / '.join(f'{t:.2f}' for t in times)} | "
              f"{cells[name] / median(times):.0f} | {max(r['peak_rss_mb'] for r in results):.0f} |")
    print()
    latents = {name: np.load(folder / f"infer-{name}.npz") for name in ("training", "a", "b")}
    same = all(np.array_equal(latents["training"][key], latents["a"][key]) for key in ("z_basal", "z", "z_corrected"))
    basal = np.abs(latents["training"]["z_basal"] - latents["b"]["z_basal"]).max()
    print(f"latents: (a) equal to cpa_infer's: {same}; (b) z_basal against cpa_infer's: max |difference| "
          f"{basal:.2g} (largest |z_basal| {np.abs(latents['training']['z_basal']).max():.2g}); "
          f"counterfactual X {cf_shape}")
    check = "; ".join(": ".join(line.split("\t")) for line in (folder / "check-b.tsv").read_text().splitlines())
    print(f"query check of (b): {check}")
    if not same or basal > 1e-4:
        raise SystemExit("the query's latents differ from cpa_infer's on the same cells: the genes are not matched")
    print()
    for name in ("training", "a", "b"):
        (folder / f"infer-{name}.npz").unlink()

    if args.query_flat_cells:
        big = dataset(folder, args.query_flat_cells, args, lab=True)
        shards = [("query infer (b)", "query-infer", lab, n_cells),
                  ("query infer (b)", "query-infer", big, args.query_flat_cells),
                  ("`cpa_infer`, the training file", "ours", training, n_cells)]
        flat = [[] for _ in shards]
        for _ in range(args.repeats):
            for (_, method, path, size), results in zip(shards, flat):
                start = (size - shard) // 2
                results.append(timed_child_run(task(method, path, "flat.npz", start, start + shard), env))
        print(f"one {shard}-row shard in the middle of the file, repeats={args.repeats}, interleaved")
        print()
        print("| task | rows in file | median s | cells/s | peak RSS MB, the runs |")
        print("|---|---|---|---|---|")
        for (name, _, _, size), results in zip(shards, flat):
            seconds = median(r["wall"] for r in results)
            peaks = sorted(r["peak_rss_mb"] for r in results)
            print(f"| {name} | {size} | {seconds:.2f} | {shard / seconds:.0f} | "
                  f"{' / '.join(f'{p:.0f}' for p in peaks)} |")
        print()
        big.unlink()
        (folder / "flat.npz").unlink()

    titles = {"stages-query-infer": "query infer (b)", "stages-query-predict": "counterfactual on (b)",
              "stages-query-check": "query check on (b)"}
    # Each task's stages in a fresh process (with --smoke all three in one).
    groups = [list(titles)] if args.smoke else [[method] for method in titles]
    runs = {}
    for group in groups:
        for _ in range(args.repeats):
            for method, stages in child_run(task(",".join(group), lab, "stages"), env)["stages"].items():
                runs.setdefault(method, []).append(stages)
    for method, stages in runs.items():
        print(f"stages of the {titles[method]} over {n_cells} rows (median s of {args.repeats}; total "
              f"{median(sum(s.values()) for s in stages):.2f}):")
        for name in stages[0]:
            print(f"  {name}: {median(s[name] for s in stages):.2f}")
        print()
    for leftover in ("stages.npz", "stages.h5ad"):
        (folder / leftover).unlink(missing_ok=True)


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
    parser.add_argument("--query-cells", type=int, default=300_000,
                        help="rows of the query files of the query comparison (0: skip it)")
    parser.add_argument("--query-shard", type=int, default=50_000,
                        help="the workflow's shard_size: the counterfactual's chunk_rows and the shard of the "
                             "memory-against-file-size runs")
    parser.add_argument("--query-flat-cells", type=int,
                        help="rows of the larger file of the memory-against-file-size runs (0: skip them; "
                             "default 1,000,000, with --smoke 0)")
    parser.add_argument("--query-only", action="store_true", help="only the query comparison")
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
    parser.add_argument("--chunk-rows", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model:
        return run_task(args)
    if args.smoke:
        # One file size in the per-size table, no model-in-memory row (task_table), the query
        # comparison's stages in one process and its memory-against-file-size runs only if
        # asked (--query-flat-cells 5000): fresh processes are most of the time at these sizes.
        args.cells, args.shard, args.genes, args.latent, args.repeats = [5000], [500], 50, 8, 1
        args.block, args.train_cells, args.train_epochs, args.task_cells = 2000, 1000, 1, 3000
        args.query_cells, args.query_shard = 3000, 500
    if args.query_flat_cells is None:
        args.query_flat_cells = 0 if args.smoke else 1_000_000
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    if args.train_only:
        return training_table(args, env)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMPDIR")) as folder:
        folder = Path(folder)
        (folder / "merge").mkdir()
        train(folder, args.genes, args.latent)
        if args.task_cells and not args.query_only:
            task_table(args, env, folder)
        if args.query_cells and not args.task_only:
            query_table(args, env, folder)
        for path in folder.glob("*.h5ad"):
            path.unlink()
        if args.task_only or args.query_only:
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
