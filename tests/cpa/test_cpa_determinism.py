"""Two trainings and inferences of the perturbation arm with the same config give the same
bytes (the bounds across shard sizes are stated in docs/reliability.md and asserted in
test_cpa_model.py)."""

import json

import numpy as np
import pytest
import torch

from shardmap.cpa.simulate import simulate_screen
from shardmap.cpa.tasks.infer import infer_shard
from shardmap.cpa.tasks.train import train_model


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
        infer_shard(tmp_path / "model", screen_path, 100, 400, tmp_path / f"{name}.npz")
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        assert a.files == b.files
        for key in [k for k in a.files if k != "seconds"]:  # the task's time, recorded for the query table
            np.testing.assert_array_equal(a[key], b[key])
