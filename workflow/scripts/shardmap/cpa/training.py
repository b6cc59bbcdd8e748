"""The training plan of CPA: the autoencoder and the adversaries take turns.

Three Adam optimisers (autoencoder, adversaries, dose-response curves: the linear
doser has no parameters and so no optimiser), each with a StepLR schedule. Within every
cycle of ``adv_steps`` minibatches the adversaries are updated ``adv_steps - 1`` times
and the autoencoder (with the dosers) once; ``adv_steps=1`` updates the adversaries and
then the autoencoder on every minibatch (the demo's setting: the autoencoder gets three
times the updates of the default, for 1.57 times the time at equal epochs:
docs/benchmarks.md, "The demo's training time"); during the
first ``n_epochs_pretrain_ae`` epochs only the autoencoder trains. The adversarial
weight and the KL weight (variational model) warm up linearly.
"""

from __future__ import annotations

import logging

import lightning.pytorch as pl
import torch

log = logging.getLogger(__name__)


class CPATrainingPlan(pl.LightningModule):
    def __init__(self, module, lr=1e-3, doser_lr=1e-3, adv_lr=1e-3, weight_decay=1e-6,
                 adv_steps=3, reg_adv=5.0, pen_adv=5.0, n_epochs_adv_warmup=5, n_epochs_kl_warmup=10,
                 n_epochs_pretrain_ae=0, step_size_lr=10, gamma_lr=0.9, seed=0):
        super().__init__()
        self.seed = int(seed)
        self._steps = 0
        self.module = module
        self.automatic_optimization = False
        self.lr, self.doser_lr, self.adv_lr, self.weight_decay = lr, doser_lr, adv_lr, weight_decay
        if int(adv_steps) < 1:
            raise ValueError(f"adv_steps must be >= 1 (one autoencoder update per adv_steps - 1 "
                             f"adversary updates; 1: both on every minibatch), got {adv_steps}")
        self.adv_steps = int(adv_steps)
        self.reg_adv, self.pen_adv = reg_adv, pen_adv
        self.n_epochs_adv_warmup, self.n_epochs_kl_warmup = n_epochs_adv_warmup, n_epochs_kl_warmup
        self.n_epochs_pretrain_ae = n_epochs_pretrain_ae
        self.step_size_lr, self.gamma_lr = step_size_lr, gamma_lr
        self.n_obs_training = None
        self.n_obs_validation = None
        self._turn = 0  # counts minibatches across epochs: an epoch may have fewer than adv_steps

    def on_fit_start(self):
        """Put every layer in training mode: scvi-tools leaves the module in eval mode when a
        fit ends and Lightning does not switch it back, so a second ``train()`` would run
        without dropout and with frozen batch-norm statistics."""
        # on_fit_start runs before the sanity check and the fit loop (whose eval-mode
        # warning and on_train_start come later): the validation loop then saves and
        # restores training mode rather than eval mode.
        self.train()

    def _ramp(self, n_epochs, since_epoch=0):
        if n_epochs <= 0:
            return 1.0
        return min(1.0, max(0, self.current_epoch - since_epoch + 1) / n_epochs)

    @property
    def adv_weight(self):
        """0 during autoencoder pretraining, then ramped up over n_epochs_adv_warmup."""
        if self.current_epoch < self.n_epochs_pretrain_ae:
            return 0.0
        return self.reg_adv * self._ramp(self.n_epochs_adv_warmup, self.n_epochs_pretrain_ae)

    @property
    def kl_weight(self):
        return self._ramp(self.n_epochs_kl_warmup)

    def configure_optimizers(self):
        optimizers = [
            torch.optim.Adam(self.module.autoencoder_parameters(), lr=self.lr, weight_decay=self.weight_decay),
            torch.optim.Adam(self.module.adversary_parameters(), lr=self.adv_lr, weight_decay=self.weight_decay),
        ]
        if self.module.doser_parameters():  # the linear doser has none
            optimizers.append(torch.optim.Adam(self.module.doser_parameters(), lr=self.doser_lr,
                                               weight_decay=self.weight_decay))
        schedulers = [torch.optim.lr_scheduler.StepLR(opt, step_size=self.step_size_lr, gamma=self.gamma_lr)
                      for opt in optimizers]
        return optimizers, schedulers

    def training_step(self, batch, batch_idx):
        # Every step draws its random numbers (dropout, posterior samples) from a seed of
        # its own, so they do not depend on what DataLoader workers consumed meanwhile.
        torch.manual_seed(self.seed * 1_000_003 + self._steps)
        self._steps += 1
        ae_opt, adv_opt, *doser_opt = self.optimizers()
        pretraining = self.current_epoch < self.n_epochs_pretrain_ae
        both = self.adv_steps == 1
        adversary_turn = not pretraining and (both or (self._turn % self.adv_steps) != self.adv_steps - 1)
        self._turn += 1
        n = batch["X"].shape[0]
        if adversary_turn:
            loss, losses, penalty = self.module.adversary_step_loss(batch, self.pen_adv)
            adv_opt.zero_grad()
            self.manual_backward(loss)
            adv_opt.step()
            self.log("adv_loss", losses["total"], on_epoch=True, on_step=False, batch_size=n)
            self.log("adv_penalty", penalty, on_epoch=True, on_step=False, batch_size=n)
            for name, value in losses["accuracy"].items():
                self.log(name, value, on_epoch=True, on_step=False, batch_size=n)
            if not both:
                return None
        _, _, output = self.module(batch, loss_kwargs={"kl_weight": self.kl_weight,
                                                       "adv_weight": self.adv_weight})
        for optimizer in [ae_opt, *doser_opt]:
            optimizer.zero_grad()
        self.manual_backward(output.loss)
        for optimizer in [ae_opt, *doser_opt]:
            optimizer.step()
        self.log("train_loss", output.loss, on_epoch=True, on_step=False, batch_size=n, prog_bar=True)
        self.log("reconstruction_loss", output.reconstruction_loss_sum / n, on_epoch=True, on_step=False,
                 batch_size=n)
        if self.module.variational:
            self.log("kl_local", output.kl_local_sum / n, on_epoch=True, on_step=False, batch_size=n)
        return None

    def on_train_epoch_end(self):
        for scheduler in self.lr_schedulers():
            scheduler.step()
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items()}
        log.info("epoch %d/%d %s", self.current_epoch + 1, self.trainer.max_epochs,
                 " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))

    def validation_step(self, batch, batch_idx):
        _, _, output = self.module(batch, loss_kwargs={"kl_weight": self.kl_weight, "adv_weight": 0.0})
        n = batch["X"].shape[0]
        self.log("validation_loss", output.reconstruction_loss_sum / n, on_epoch=True, on_step=False,
                 batch_size=n, prog_bar=True)
