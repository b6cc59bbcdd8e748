"""The CPA network: encoder, perturbation and covariate embeddings, decoder, adversaries.

An encoder maps a cell's expression to a basal latent state meant to be free of the
perturbation and covariate signal. The latent of the cell is the basal state plus, for
each of its drugs, the drug's embedding scaled by a learned dose response, plus one
embedding per covariate and one for the batch. A decoder turns the latent into the
parameters of the expression likelihood. Adversarial classifiers try to recover the
perturbation and the covariates from the basal state; the autoencoder is trained to
defeat them (the training plan alternates the two).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn
from torch.distributions import Normal, kl_divergence

from .perturbations import REGISTRY_KEY as PERTURBATION_KEY
from .perturbations import split_encoded

RECON_LOSSES = ("nb", "zinb", "gauss")
COVARIATES_KEY = "covariates"
BATCH_KEY = "batch"
DOSERS = ("logsigm", "sigm", "linear", "mlp")


def hidden_layers(n_in, n_hidden, n_layers, batch_norm=True, dropout=0.0):
    """``n_layers`` hidden layers of ``n_hidden`` units: Linear, (optional) batch norm, ReLU
    and dropout each (n_layers counts hidden layers, as in scvi-tools and cpa-tools)."""
    layers = []
    sizes = [n_in] + [n_hidden] * n_layers
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers.append(nn.Linear(a, b))
        if batch_norm:
            layers.append(nn.BatchNorm1d(b))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def mlp(n_in, n_hidden, n_layers, n_out, batch_norm=True, dropout=0.0):
    """``n_layers`` hidden layers, then a linear output layer of ``n_out``."""
    return nn.Sequential(hidden_layers(n_in, n_hidden, n_layers, batch_norm, dropout),
                         nn.Linear(n_hidden if n_layers else n_in, n_out))


class DoseResponse(nn.Module):
    """Per-drug dose-response curves f_d(dose) with f_d(0) = 0.

    logsigm: sigmoid(log1p(dose) * beta_d + b_d) - sigmoid(b_d)
    sigm:    sigmoid(dose * beta_d + b_d) - sigmoid(b_d)
    linear:  dose
    mlp:     a small per-drug network g_d(dose) - g_d(0)
    The padding index (n_drugs) always gives 0.
    """

    def __init__(self, n_drugs, kind="logsigm", n_hidden=16):
        super().__init__()
        if kind not in DOSERS:
            raise ValueError(f"doser_type '{kind}' is not one of {DOSERS}")
        self.kind = kind
        self.padding = n_drugs
        rows = n_drugs + 1
        if kind in ("logsigm", "sigm"):
            self.beta = nn.Parameter(torch.ones(rows))
            self.bias = nn.Parameter(torch.zeros(rows))
        elif kind == "mlp":
            self.w1 = nn.Parameter(torch.randn(rows, n_hidden) * 0.5)
            self.b1 = nn.Parameter(torch.randn(rows, n_hidden) * 0.1)
            self.w2 = nn.Parameter(torch.randn(rows, n_hidden) / n_hidden ** 0.5)

    def _mlp(self, drugs, dose):
        hidden = torch.relu(dose.unsqueeze(-1) * self.w1[drugs] + self.b1[drugs])
        return (hidden * self.w2[drugs]).sum(-1)

    def forward(self, drugs, dose):
        if self.kind == "linear":
            scale = dose
        elif self.kind == "mlp":
            scale = self._mlp(drugs, dose) - self._mlp(drugs, torch.zeros_like(dose))
        else:
            x = torch.log1p(dose) if self.kind == "logsigm" else dose
            bias = self.bias[drugs]
            scale = torch.sigmoid(x * self.beta[drugs] + bias) - torch.sigmoid(bias)
        return scale * (drugs != self.padding)


class CPAModule(BaseModuleClass):
    """The network of :class:`shardmap.cpa.CPA` (see the module docstring)."""

    def __init__(self, n_genes, n_drugs, n_conditions, n_cats_per_cov, n_batch, n_latent=64,
                 n_hidden=256, n_layers=2, dropout=0.0, recon_loss="nb", doser_type="logsigm",
                 variational=False, n_hidden_adv=64, n_layers_adv=2, dropout_adv=0.1,
                 drug_fingerprints=None, condition_weights=None):
        super().__init__()
        if recon_loss not in RECON_LOSSES:
            raise ValueError(f"recon_loss '{recon_loss}' is not one of {RECON_LOSSES}")
        self.n_genes, self.n_drugs, self.n_latent = n_genes, n_drugs, n_latent
        self.recon_loss = recon_loss
        self.variational = variational
        self.count_data = recon_loss in ("nb", "zinb")

        if n_layers < 1:
            raise ValueError(f"n_layers must be at least 1, got {n_layers}")
        self.encoder = hidden_layers(n_genes, n_hidden, n_layers, dropout=dropout)
        self.z_mean = nn.Linear(n_hidden, n_latent)
        if variational:
            self.z_logvar = nn.Linear(n_hidden, n_latent)

        if drug_fingerprints is not None:
            fingerprints = torch.as_tensor(drug_fingerprints, dtype=torch.float32)
            padded = torch.cat([fingerprints, torch.zeros(1, fingerprints.shape[1])])
            self.register_buffer("drug_fingerprints", padded)
            self.fingerprint_projection = mlp(fingerprints.shape[1], 128, 1, n_latent, batch_norm=False)
            self.drug_embedding = None
        else:
            self.drug_fingerprints = None
            self.drug_embedding = nn.Embedding(n_drugs + 1, n_latent, padding_idx=n_drugs)
        self.doser = DoseResponse(n_drugs, doser_type)
        self.covariate_embeddings = nn.ModuleList(nn.Embedding(n, n_latent) for n in n_cats_per_cov)
        self.batch_embedding = nn.Embedding(max(n_batch, 1), n_latent)

        self.decoder = hidden_layers(n_latent, n_hidden, n_layers, dropout=dropout)
        self.px_out = nn.Linear(n_hidden, n_genes)
        if self.count_data:
            self.px_r = nn.Parameter(torch.zeros(n_genes))
            if recon_loss == "zinb":
                self.px_dropout = nn.Linear(n_hidden, n_genes)
        else:
            self.px_logvar = nn.Linear(n_hidden, n_genes)

        self.perturbation_adversary = mlp(n_latent, n_hidden_adv, n_layers_adv, n_conditions,
                                          dropout=dropout_adv)
        self.covariate_adversaries = nn.ModuleList(
            mlp(n_latent, n_hidden_adv, n_layers_adv, n, dropout=dropout_adv) for n in n_cats_per_cov)
        weights = torch.ones(n_conditions) if condition_weights is None else torch.as_tensor(
            condition_weights, dtype=torch.float32)
        self.register_buffer("condition_weights", weights)

    # --- parameter groups of the three optimisers --------------------------------------
    def autoencoder_parameters(self):
        skip = {id(p) for p in self.doser_parameters()} | {id(p) for p in self.adversary_parameters()}
        return [p for p in self.parameters() if id(p) not in skip]

    def doser_parameters(self):
        return list(self.doser.parameters())

    def adversary_parameters(self):
        return list(self.perturbation_adversary.parameters()) + list(self.covariate_adversaries.parameters())

    # --- pieces ------------------------------------------------------------------------
    def drug_vectors(self, drugs):
        if self.drug_embedding is not None:
            return self.drug_embedding(drugs)
        vectors = self.fingerprint_projection(self.drug_fingerprints)
        vectors = vectors * (torch.arange(vectors.shape[0], device=vectors.device) != self.n_drugs
                             ).unsqueeze(-1)
        return vectors[drugs]

    def perturbation_effect(self, encoded):
        drugs, doses, _ = split_encoded(encoded)
        scale = self.doser(drugs, doses)  # (B, K)
        return (scale.unsqueeze(-1) * self.drug_vectors(drugs)).sum(1)

    def covariate_effect(self, covariates):
        total = 0.0
        for k, embedding in enumerate(self.covariate_embeddings):
            total = total + embedding(covariates[:, k].long())
        return total

    # --- scvi-tools module interface ---------------------------------------------------
    def _get_inference_input(self, tensors):
        return {"x": tensors[REGISTRY_KEYS.X_KEY], "perturbation": tensors[PERTURBATION_KEY],
                "covariates": tensors.get(COVARIATES_KEY), "batch": tensors[BATCH_KEY]}

    def _get_generative_input(self, tensors, inference_outputs):
        return {"z": inference_outputs["z"], "library": inference_outputs["library"]}

    @auto_move_data
    def inference(self, x, perturbation, covariates=None, batch=None, sample=None):
        """Latents of a batch of cells. ``sample``: draw z_basal from the posterior
        (default: only while training a variational model); otherwise its mean."""
        library = x.sum(1, keepdim=True)
        h = self.encoder(torch.log1p(x) if self.count_data else x)
        z_mean = self.z_mean(h)
        qz = None
        z_basal = z_mean
        if self.variational:
            qz = Normal(z_mean, torch.exp(0.5 * self.z_logvar(h)) + 1e-4)
            draw = self.training if sample is None else sample
            if draw:
                z_basal = qz.rsample()
        z_pert = self.perturbation_effect(perturbation)
        z_cov = self.covariate_effect(covariates) if covariates is not None else 0.0
        z_batch = self.batch_embedding(batch[:, 0].long()) if batch is not None else 0.0
        z_corrected = z_basal + z_pert + z_cov
        return {"z_basal": z_basal, "z": z_corrected + z_batch, "z_corrected": z_corrected,
                "qz": qz, "library": library}

    @auto_move_data
    def generative(self, z, library):
        h = self.decoder(z)
        if self.count_data:
            mu = torch.softmax(self.px_out(h), dim=-1) * library
            theta = torch.exp(self.px_r)
            if self.recon_loss == "zinb":
                zi_logits = self.px_dropout(h)
                return {"px": ZeroInflatedNegativeBinomial(mu=mu, theta=theta, zi_logits=zi_logits),
                        "mean": mu * torch.sigmoid(-zi_logits)}  # (1 - P(zero inflation)) x mu
            return {"px": NegativeBinomial(mu=mu, theta=theta), "mean": mu}
        mean = self.px_out(h)
        return {"px": Normal(mean, torch.exp(0.5 * self.px_logvar(h)) + 1e-4), "mean": mean}

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
