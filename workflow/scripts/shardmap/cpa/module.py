"""CPA's scvi-tools module: the network of ``network`` with scvi-tools' module interface
(the registry's tensors in, the likelihoods, the autoencoder's and the adversaries'
losses). The training plan (``training``) alternates the autoencoder's and the
adversaries' updates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch.distributions import Normal, kl_divergence

from .codes import BATCH_KEY, COVARIATES_KEY, PERTURBATION_KEY, split_encoded
from .network import CPANetwork


class CPAModule(CPANetwork, BaseModuleClass):
    """The network of :class:`shardmap.cpa.CPA` as an scvi-tools module.

    ``CPANetwork`` comes first in the bases so that its ``__init__`` builds the layers
    and its ``super().__init__()`` reaches ``BaseModuleClass``.
    """

    def _get_inference_input(self, tensors):
        return {"x": tensors[REGISTRY_KEYS.X_KEY], "perturbation": tensors[PERTURBATION_KEY],
                "covariates": tensors.get(COVARIATES_KEY), "batch": tensors[BATCH_KEY]}

    def _get_generative_input(self, tensors, inference_outputs):
        return {"z": inference_outputs["z"], "library": inference_outputs["library"]}

    @auto_move_data
    def inference(self, x, perturbation, covariates=None, batch=None, sample=None):
        """Latents of a batch of cells. ``sample``: draw z_basal from the posterior
        (default: only while training a variational model); otherwise its mean."""
        return self.latents(x, perturbation, covariates, batch, self.training if sample is None else sample)

    @auto_move_data
    def generative(self, z, library):
        outputs = self.decoder_outputs(z, library)
        if not self.count_data:
            px = Normal(outputs["mean"], torch.exp(0.5 * outputs["logvar"]) + 1e-4)
        elif self.recon_loss == "zinb":
            px = ZeroInflatedNegativeBinomial(mu=outputs["mu"], theta=outputs["theta"],
                                              zi_logits=outputs["zi_logits"])
        else:
            px = NegativeBinomial(mu=outputs["mu"], theta=outputs["theta"])
        return {"px": px, "mean": outputs["mean"]}

    def loss(self, tensors, inference_outputs, generative_outputs, kl_weight=1.0, adv_weight=0.0):
        """Autoencoder loss: reconstruction (+ KL) minus adv_weight x the adversaries'
        cross-entropy on the basal state (the autoencoder tries to make them fail)."""
        x = tensors[REGISTRY_KEYS.X_KEY]
        recon = -generative_outputs["px"].log_prob(x).sum(-1)
        kl = torch.zeros_like(recon)
        if self.variational:
            prior = Normal(torch.zeros_like(inference_outputs["z_basal"]), 1.0)
            kl = kl_divergence(inference_outputs["qz"], prior).sum(-1)
        adversary = self.adversary_losses(inference_outputs["z_basal"], tensors)
        loss = (recon + kl_weight * kl).mean() - adv_weight * adversary["total"]
        return LossOutput(loss=loss, reconstruction_loss=recon, kl_local=kl,
                          extra_metrics={"adv_ce": adversary["total"].detach(),
                                         **{k: v.detach() for k, v in adversary["accuracy"].items()}})

    def adversary_losses(self, z_basal, tensors):
        """Cross-entropies (and accuracies) of the adversaries on the basal state."""
        _, _, conditions = split_encoded(tensors[PERTURBATION_KEY])
        known = conditions >= 0
        logits = self.perturbation_adversary(z_basal)
        total = z_basal.new_zeros(())
        accuracy = {}
        if known.any():
            total = total + F.cross_entropy(logits[known], conditions[known], weight=self.condition_weights)
            accuracy["acc_perturbation"] = (logits[known].argmax(-1) == conditions[known]).float().mean()
        covariates = tensors.get(COVARIATES_KEY)
        for k, adversary in enumerate(self.covariate_adversaries):
            target = covariates[:, k].long()
            cov_logits = adversary(z_basal)
            total = total + F.cross_entropy(cov_logits, target)
            accuracy[f"acc_covariate_{k}"] = (cov_logits.argmax(-1) == target).float().mean()
        return {"total": total, "accuracy": accuracy}

    def adversary_step_loss(self, tensors, penalty_weight):
        """Loss of the adversaries' own update: cross-entropy on the (detached) basal state
        plus a gradient penalty, the squared norm of d CE / d z_basal."""
        with torch.no_grad():
            inference_inputs = self._get_inference_input(tensors)
            z_basal = self.inference(**inference_inputs)["z_basal"]
        z_basal = z_basal.detach().requires_grad_(True)
        losses = self.adversary_losses(z_basal, tensors)
        gradient = torch.autograd.grad(losses["total"], z_basal, create_graph=True)[0]
        penalty = gradient.pow(2).sum(-1).mean()
        return losses["total"] + penalty_weight * penalty, losses, penalty

    @torch.inference_mode()
    def sample(self, tensors, n_samples=1):
        _, generative_outputs = self.forward(tensors, compute_loss=False)
        return generative_outputs["px"].sample()
