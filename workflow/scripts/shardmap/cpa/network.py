"""The CPA network in PyTorch alone: encoder, perturbation and covariate embeddings,
dose-response curves, decoder and adversaries, and the deterministic passes through them.

An encoder maps a cell's expression to a basal latent state meant to be free of the
perturbation and covariate signal. The latent of the cell is the basal state plus, for
each of its drugs, the drug's embedding scaled by a learned dose response, plus one
embedding per covariate and one for the batch. A decoder turns the latent into the
parameters of the expression likelihood. Adversarial classifiers try to recover the
perturbation and the covariates from the basal state.

scvi-tools' side (the likelihoods, the loss, the registry's tensors) is in ``module``,
whose ``CPAModule`` is this network with scvi-tools' module interface on top; the
inference tasks load the trained weights into this class alone (``inference_model``)
and never import scvi-tools.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Normal

from .codes import split_encoded

RECON_LOSSES = ("nb", "zinb", "gauss")
LATENT_KEYS = ("z_basal", "z", "z_corrected")
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


class CPANetwork(nn.Module):
    """The layers of CPA (see the module docstring) and the passes through them.

    ``CPAModule`` subclasses it; its parameter names are those of the saved models.
    """

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

    # --- passes -------------------------------------------------------------------------
    def encoder_input(self, x):
        """What the encoder's first layer reads: log1p of counts, or the data as given."""
        return torch.log1p(x) if self.count_data else x

    def latents(self, x, perturbation, covariates=None, batch=None, sample=False):
        """Latents of a batch of cells (dense ``x``); ``sample`` draws z_basal from the
        posterior of a variational model, otherwise its mean is used."""
        first = self.encoder[0](self.encoder_input(x))
        return self.latents_from_first_layer(first, x.sum(1, keepdim=True), perturbation, covariates, batch,
                                             sample)

    def latents_from_first_layer(self, first, library, perturbation, covariates=None, batch=None, sample=False):
        """``latents`` from the output of the encoder's first linear layer and each cell's
        library size."""
        return self.latents_from_hidden(self.encoder[1:](first), library, perturbation, covariates, batch, sample)

    def latents_from_hidden(self, h, library, perturbation, covariates=None, batch=None, sample=False):
        """``latents`` from the encoder's output ``h`` (computed elsewhere, e.g. from sparse
        rows) and each cell's library size."""
        z_mean = self.z_mean(h)
        qz = None
        z_basal = z_mean
        if self.variational:
            qz = Normal(z_mean, torch.exp(0.5 * self.z_logvar(h)) + 1e-4)
            if sample:
                z_basal = qz.rsample()
        z_pert = self.perturbation_effect(perturbation)
        z_cov = self.covariate_effect(covariates) if covariates is not None else 0.0
        z_batch = self.batch_embedding(batch[:, 0].long()) if batch is not None else 0.0
        z_corrected = z_basal + z_pert + z_cov
        return {"z_basal": z_basal, "z": z_corrected + z_batch, "z_corrected": z_corrected,
                "qz": qz, "library": library}

    def decoder_outputs(self, z, library):
        """The likelihood's parameters for latents ``z``: for counts ``mu`` (scaled to
        ``library``), ``theta`` and, for zinb, ``zi_logits``; for gauss ``mean`` and
        ``logvar``. Always ``mean``, the expected expression."""
        h = self.decoder(z)
        if self.count_data:
            mu = torch.softmax(self.px_out(h), dim=-1) * library
            outputs = {"mu": mu, "theta": torch.exp(self.px_r), "mean": mu}
            if self.recon_loss == "zinb":
                outputs["zi_logits"] = self.px_dropout(h)
                outputs["mean"] = mu * torch.sigmoid(-outputs["zi_logits"])  # (1 - P(zero inflation)) x mu
            return outputs
        mean = self.px_out(h)
        return {"mean": mean, "logvar": self.px_logvar(h)}
