"""cpa.infer.device: the inference tasks on a GPU give the CPU's latents to float rounding,
and a device that is not there is a clear error."""

import numpy as np
import pytest
import torch

from shardmap.cpa.model_folder import inference_device
from shardmap.cpa.simulate import simulate_screen
from shardmap.cpa.tasks.infer import infer_shard
from shardmap.cpa.tasks.train import train_model
from shardmap.errors import InputError

CFG = {"perturbation_key": "condition", "dosage_key": "dose", "control_group": "control",
       "covariate_keys": ["cell_type"], "layer": None, "holdout": [], "split_key": None,
       "model": {"n_latent": 8, "n_hidden": 32}, "train": {"max_epochs": 2, "batch_size": 128, "seed": 0}}


def test_device_names():
    with pytest.raises(InputError, match="cpa.infer.device is 'tpu'"):
        inference_device("tpu")
    assert inference_device("cpu") == "cpu"
    assert inference_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this node has a GPU")
def test_cuda_without_a_gpu_says_what_to_do():
    with pytest.raises(InputError, match="torch sees no CUDA GPU.*'auto' or 'cpu'"):
        inference_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU")
def test_latents_on_a_gpu_equal_the_cpu_ones(tmp_path):
    adata = simulate_screen(n_cells=1500, n_genes=40, seed=3)
    del adata.uns["truth"]
    path = tmp_path / "screen.h5ad"
    adata.write_h5ad(path)
    train_model(path, CFG, tmp_path / "model", tmp_path / "splits.tsv", accelerator="cpu")
    for device in ("cpu", "cuda"):
        infer_shard(tmp_path / "model", path, 0, 1500, tmp_path / f"{device}.npz", device=device)
    with np.load(tmp_path / "cpu.npz") as cpu, np.load(tmp_path / "cuda.npz") as gpu:
        for key in ("z_basal", "z", "z_corrected"):
            np.testing.assert_allclose(gpu[key], cpu[key], rtol=1e-4, atol=1e-5)
