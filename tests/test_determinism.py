"""Two runs with the same config give the same bytes; runs split differently agree to
float rounding (the bounds are stated in docs/reliability.md and asserted in
test_lnm_invariance.py and test_cpa_model.py)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import run_library
from shardmap.cpa.tasks.infer import infer_shard
from shardmap.cpa.tasks.train import train_model
from shardmap.cpa.simulate import simulate_screen


def map_files(outdir):
    return {p.name: p.read_bytes() for p in sorted(Path(outdir).glob("*.nii.gz"))}


def test_lesion_maps_of_two_runs_are_bit_identical(dataset, tmp_path):
    run_library(dataset, tmp_path / "a", lesion_batch_size=3, subject_shard_size=2, threads=2)
    run_library(dataset, tmp_path / "b", lesion_batch_size=3, subject_shard_size=2, threads=2)
    first, second = map_files(tmp_path / "a"), map_files(tmp_path / "b")
    assert len(first) == 3 * len(dataset["lesions"])
    assert first == second


def test_lesion_maps_agree_to_rounding_across_batch_and_shard_sizes(dataset, tmp_path):
    """The bound docs/reliability.md states: maps computed as one batch and one shard, or
    one lesion per batch and one subject per shard, differ by at most 1e-6 in AvgR and
    AvgR_Fz and 1e-5 relative in T."""
    whole = run_library(dataset, tmp_path / "whole", lesion_batch_size=100, subject_shard_size=100)
    split = run_library(dataset, tmp_path / "split", lesion_batch_size=1, subject_shard_size=1)
    for lesion_id, maps in whole.items():
        for name in ("AvgR", "AvgR_Fz"):
            assert np.abs(maps[name] - split[lesion_id][name]).max() <= 1e-6, (lesion_id, name)
        relative = np.abs(maps["T"] - split[lesion_id]["T"]) / np.maximum(1.0, np.abs(maps["T"]))
        assert relative.max() <= 1e-5, lesion_id


CFG = {"perturbation_key": "condition", "dosage_key": "dose", "control_group": "control",
       "covariate_keys": ["cell_type"], "layer": None, "split_key": None, "holdout": ["drug00+drug01"],
       "model": {"n_latent": 4, "n_hidden": 16},
       "train": {"max_epochs": 2, "batch_size": 128, "seed": 0}}


@pytest.fixture(scope="module")
def screen_path(tmp_path_factory):
    adata = simulate_screen(n_cells=600, n_genes=30, seed=9)
    del adata.uns["truth"]
    path = tmp_path_factory.mktemp("screen") / "screen.h5ad"
    adata.write_h5ad(path)
    return path


def assert_identical(first, second, where):
    if isinstance(first, dict):
        assert first.keys() == second.keys(), where
        for key in first:
            assert_identical(first[key], second[key], f"{where}.{key}")
    elif isinstance(first, torch.Tensor):
        assert torch.equal(first, second), where
    else:
        assert first == second, where


def test_training_twice_gives_the_same_model_split_and_history(screen_path, tmp_path):
    for name in ("a", "b"):
        train_model(screen_path, CFG, tmp_path / name / "model", tmp_path / name / "splits.tsv",
                          accelerator="cpu")
    for name in ("splits.tsv", "model/history.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    # model.pt also holds a run name and a random id that scvi-tools draws; the weights must agree exactly
    first = torch.load(tmp_path / "a" / "model" / "model.pt", weights_only=False)["model_state_dict"]
    second = torch.load(tmp_path / "b" / "model" / "model.pt", weights_only=False)["model_state_dict"]
    assert_identical(first, second, "model_state_dict")
    assert json.loads((tmp_path / "a" / "model" / "history.json").read_text())


def test_inferred_shards_of_two_runs_are_bit_identical(screen_path, tmp_path):
    train_model(screen_path, CFG, tmp_path / "model", tmp_path / "splits.tsv", accelerator="cpu")
    for name in ("a", "b"):
        infer_shard(tmp_path / "model", screen_path, CFG, 100, 400, tmp_path / f"{name}.npz")
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        assert a.files == b.files
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])
