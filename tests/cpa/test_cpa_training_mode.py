"""A second ``CPA.train()`` trains in training mode (scvi-tools leaves the module in eval
mode after a fit, and Lightning does not switch it back)."""

import lightning.pytorch as pl
import scvi
import torch

from shardmap.cpa import CPA
from shardmap.cpa.simulate import simulate_screen


class ModeRecorder(pl.Callback):
    """Records, at every training minibatch, the names of the submodules in eval mode."""

    def __init__(self):
        self.eval_modules = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.eval_modules.append([name for name, m in pl_module.named_modules() if not m.training])


def test_a_second_fit_trains_in_training_mode():
    adata = simulate_screen(n_cells=300, n_genes=20, seed=1)
    del adata.uns["truth"]
    scvi.settings.seed = 0
    CPA.setup_anndata(adata, perturbation_key="condition", dosage_key="dose", control_group="control",
                      covariate_keys=["cell_type"])
    model = CPA(adata, n_latent=4, n_hidden=8)
    model.train(max_epochs=1, batch_size=64, accelerator="cpu")
    assert not model.module.training  # what scvi-tools leaves behind: the state under test
    norm = model.module.encoder[1]
    assert isinstance(norm, torch.nn.BatchNorm1d)
    before = norm.running_mean.clone()

    recorder = ModeRecorder()
    model.train(max_epochs=1, batch_size=64, accelerator="cpu", callbacks=[recorder])
    assert recorder.eval_modules, "no training minibatch was seen"
    assert all(names == [] for names in recorder.eval_modules), recorder.eval_modules[0]
    # In eval mode batch norm neither uses nor updates the minibatch statistics.
    assert (norm.running_mean - before).abs().max() > 1e-3
