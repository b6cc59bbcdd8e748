"""Small projects the tests run the workflow on, from another folder, and checks of their
outputs. Shared by the tests of every package (tests/lnm, tests/cpa, tests/workflow, and
the plumbing tests at the top)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import yaml

from shardmap.cpa.simulate import simulate_screen
from synthetic import write_sheet

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# What shardmap.atomic puts in the names of files not yet complete.
TEMPORARY_MARK = ".tmp-"


def snakemake(workdir, *args, configfile="my.yaml"):
    """Run the workflow on the project in ``workdir`` (2 cores) with ``args``."""
    cmd = SNAKEMAKE + ["-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2"]
    if configfile:
        cmd += ["--configfile", configfile]
    return subprocess.run(cmd + list(args), cwd=workdir, capture_output=True, text=True, timeout=600)


def load_map(path):
    """A NIfTI map's values as float64 (the 3D grid)."""
    return np.asarray(nib.load(str(path)).dataobj, dtype=np.float64)


def write_project(workdir, dataset, report=False, **lnm):
    """Sheets and config with paths relative to ``workdir``. The report's figures are off
    unless asked for (they are tested on the demo, tests/workflow/test_demo.py)."""
    rel = lambda p: os.path.relpath(p, workdir)  # noqa: E731
    write_sheet(workdir / "sheets" / "lesions.tsv", ["lesion_id", "path", "group"],
                [(i, rel(p), g) for i, p, g in dataset["lesions"]])
    write_sheet(workdir / "sheets" / "subjects.tsv", ["subject_id", "path"],
                [(s, rel(run)) for s, runs in dataset["subjects"] for run in runs])
    config = {"outdir": "out", "report": report,
              "lnm": {"lesions": "sheets/lesions.tsv",
                      "connectome": {"subjects": "sheets/subjects.tsv", "mask": rel(dataset["mask"])},
                      "lesion_batch_size": 3, "subject_shard_size": 2, "sensitivity_threshold": 2.0,
                      **lnm}}
    (workdir / "my.yaml").write_text(yaml.safe_dump(config))
    return config


def write_cpa_project(workdir, n_cells, n_genes, seed, **cpa):
    """A simulated screen (screen.h5ad) and my.yaml with the perturbation arm alone;
    ``cpa`` overrides the small defaults here. Returns the AnnData."""
    adata = simulate_screen(n_cells=n_cells, n_genes=n_genes, seed=seed)
    del adata.uns["truth"]
    adata.write_h5ad(workdir / "screen.h5ad")
    config = {"outdir": "out", "report": False, "lnm": {"enabled": False},
              "cpa": {"enabled": True, "adata": "screen.h5ad", "covariate_keys": ["cell_type"],
                      "holdout": ["drug00+drug01"], "model": {"n_latent": 8, "n_hidden": 32},
                      "train": {"max_epochs": 3, "batch_size": 128, "accelerator": "cpu"},
                      "threads": 1, **cpa}}
    (workdir / "my.yaml").write_text(yaml.safe_dump(config))
    return adata


def assert_every_file_is_whole(out):
    """Every file under its final name opens completely (temporaries may lie around)."""
    for path in out.rglob("*"):
        if not path.is_file() or TEMPORARY_MARK in path.name or "logs" in path.parts:
            continue
        name = path.name
        if name.endswith(".npy"):
            np.load(path, mmap_mode="r")[...].sum()
        elif name.endswith(".npz"):
            with np.load(path) as data:
                [data[key] for key in data.files]
        elif name.endswith(".json"):
            json.loads(path.read_text())
        elif name.endswith(".nii.gz"):
            np.asarray(nib.load(str(path)).dataobj).sum()
        elif name.endswith(".h5ad"):
            with h5py.File(path, "r") as handle:
                handle.visit(lambda key: None)
