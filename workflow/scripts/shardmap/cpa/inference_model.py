"""A saved CPA loaded for the inference tasks with PyTorch alone, run over blocks of rows.

``CPA.load`` imports scvi-tools and Lightning (about 3.5 s), then sets up the shard's
AnnData as if for training (checking and encoding every cell again), and its data
loader densifies each minibatch before the encoder's first layer, the largest product
of the network. An inference task needs none of that: it reads the weights and the
registry from ``model.pt``, encodes the shard's obs with the registry's vocabularies
(``codes``, the functions the registry fields use), and feeds CSR rows to the first
layer as a weighted sum of the weight rows of the cell's non-zero genes
(``torch.nn.functional.embedding_bag``: 3.5 x fewer operations at 26 % non-zeros), with
the encoder's batch norms folded into its linear layers. Each stored value counts
once, so a CSR matrix must not store a gene twice for one cell (``cpa_check_inputs``
names such a cell).

The checks ``CPA.load`` made on the data are made here and in ``model_input`` (the
genes and the categories), so a file the model cannot read stops the task with a
message: the genes must be the model's, in its order (a query's are matched by name);
the values finite (and non-negative integers, with at least one count per cell, for a
count likelihood); the categories known to the model.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from . import codes
from .h5ad_rows import RowBlock, read_obs
from .model_folder import MODEL_FILE, check_model_folder, check_saved_registry
from .network import CPANetwork
from .values import check_values

log = logging.getLogger(__name__)


def _registry_state(registry, key):
    return (registry["field_registries"].get(key) or {}).get("state_registry") or {}


def _vocabularies(registry):
    """(perturbation state, {covariate: categories}, {batch column: categories}) of a
    saved model's registry."""
    return (_registry_state(registry, codes.PERTURBATION_KEY),
            _registry_state(registry, codes.COVARIATES_KEY).get(codes.CATEGORIES, {}),
            _registry_state(registry, codes.BATCH_KEY).get(codes.CATEGORIES, {}))


class InferenceModel:
    """The trained network of a saved CPA with the vocabularies it encodes cells by.

    Build it with :meth:`load`. ``latents`` and ``predict_mean`` take one block of rows
    (``h5ad_rows.RowBlock``) and the block's codes (``encode_obs``).
    """

    def __init__(self, network, registry, var_names, device="cpu"):
        self.network = network.to(device).eval()
        self.device = torch.device(device)
        self.setup = registry["setup_args"]
        self.folder = ""
        self.var_names = np.asarray(var_names).astype(str)
        self.perturbation_state, self.covariate_categories, self.batch_categories = _vocabularies(registry)
        layers = [(w.to(self.device), b.to(self.device)) for w, b in folded_layers(network.encoder)]
        # (genes, hidden): the weight rows embedding_bag sums, one per non-zero gene.
        self._first_weight = layers[0][0].t().contiguous()
        self._first_bias = layers[0][1]
        self._hidden_layers = layers[1:]

    @classmethod
    def load(cls, model_dir, device="cpu"):
        """The model saved in ``model_dir`` (by ``CPA.save``) on ``device`` ('cpu' or 'cuda')."""
        path = Path(model_dir) / MODEL_FILE
        if not path.exists() and Path(model_dir).is_dir() and any(Path(model_dir).iterdir()):
            check_model_folder(model_dir)  # a folder of another tool's format: say which
        try:
            saved = torch.load(path, map_location="cpu", weights_only=False)
            attrs = saved["attr_dict"]
        except FileNotFoundError as err:
            raise InputError(f"'{path}' does not exist; train the model first (rule cpa_train).") from err
        except Exception as err:  # unpickling errors of every kind, or a dict without the keys
            raise InputError(f"'{path}' is not a model saved by CPA.save ({err!r}); train it again.") from err
        check_saved_registry(path, attrs)
        try:
            registry, init = attrs["registry_"], attrs["init_params_"]
            state_dict, var_names = saved["model_state_dict"], saved["var_names"]
        except (KeyError, TypeError) as err:
            raise InputError(f"'{path}' is not a model saved by CPA.save (it lacks {err}); train it again.") from err
        params = {**init.get("non_kwargs", {}), **init.get("kwargs", {})}
        perturbations, covariates, batches = _vocabularies(registry)
        network = CPANetwork(
            n_genes=len(var_names), n_drugs=len(perturbations[codes.DRUGS]),
            n_conditions=len(perturbations[codes.CONDITIONS]),
            # In the setup's order of covariate_keys, that of the code columns and embeddings.
            n_cats_per_cov=[len(covariates[key]) for key in registry["setup_args"].get("covariate_keys") or []],
            n_batch=len(next(iter(batches.values()))), **params)
        # scvi-tools saves its Pyro parameter store beside the module's weights.
        network.load_state_dict({k: v for k, v in state_dict.items() if k != "pyro_param_store"})
        model = cls(network, registry, var_names, device)
        model.folder = str(model_dir)
        return model

    @property
    def vocabulary(self):
        """The model's genes, keys, drugs and categories (``vocabulary.ModelVocabulary``)."""
        from .vocabulary import ModelVocabulary

        return ModelVocabulary(setup=dict(self.setup), var_names=self.var_names,
                               drugs=list(self.perturbation_state[codes.DRUGS]),
                               covariate_categories=dict(self.covariate_categories),
                               batch_categories=dict(self.batch_categories), count_data=self.network.count_data,
                               source=f"the model in '{self.folder}'")

    # --- what a shard must provide ------------------------------------------------------
    @property
    def obs_columns(self):
        """The obs columns the model encodes cells by."""
        columns = [self.setup["perturbation_key"]] + list(self.setup.get("covariate_keys") or [])
        return columns + [k for k in (self.setup.get("dosage_key"), self.setup.get("batch_key")) if k]

    def encode_obs(self, obs):
        """{"perturbation", "covariates" (None without covariates), "batch"}: float32 arrays
        of the cells' codes, as the registry fields encode them."""
        covariate_keys = list(self.setup.get("covariate_keys") or [])
        batch_keys = [self.setup["batch_key"]] if self.setup.get("batch_key") else []
        codes.check_categories_present(obs, covariate_keys + batch_keys)
        perturbation = codes.encode_perturbations(obs, self.setup["perturbation_key"], self.setup.get("dosage_key"),
                                                  self.perturbation_state)
        covariates = codes.encode_categories(obs, covariate_keys, self.covariate_categories) if covariate_keys else None
        return {"perturbation": perturbation, "covariates": covariates,
                "batch": codes.encode_categories(obs, batch_keys, self.batch_categories)}

    # --- passes -------------------------------------------------------------------------
    def _codes_on_device(self, block_codes, rows):
        tensors = {}
        for key, values in block_codes.items():
            tensors[key] = None if values is None else torch.from_numpy(values[rows]).to(self.device)
        return tensors

    def _encoded(self, block, rows):
        """(encoder output, library size, values) of the block's rows ``rows`` (a slice)."""
        first, library, values = self._first_layer(block, rows)
        h = torch.relu_(first)
        for weight, bias in self._hidden_layers:
            h = torch.relu_(F.linear(h, weight, bias))
        return h, library, values

    def _first_layer(self, block, rows):
        """(first layer's output before its ReLU, library size, values) of the block's
        rows ``rows`` (a slice)."""
        if block.dense is not None:
            x = torch.from_numpy(np.ascontiguousarray(block.dense[rows], dtype=np.float32)).to(self.device)
            first = F.linear(self.network.encoder_input(x), self._first_weight.t(), self._first_bias)
            return first, x.sum(1, keepdim=True), x
        lo, hi = int(block.indptr[rows.start]), int(block.indptr[rows.stop])
        # int32 gene indices as stored (no int64 copy of every index); the offsets follow.
        index_type = block.indices.dtype if block.indices.dtype in (np.int32, np.int64) else np.int64
        genes = torch.from_numpy(block.indices[lo:hi].astype(index_type, copy=False)).to(self.device)
        offsets = torch.from_numpy((block.indptr[rows.start:rows.stop + 1] - lo).astype(index_type)).to(self.device)
        values = torch.from_numpy(block.data[lo:hi].astype(np.float32, copy=False)).to(self.device)
        first = F.embedding_bag(genes, self._first_weight, offsets, mode="sum",
                                per_sample_weights=self.network.encoder_input(values), include_last_offset=True)
        library = torch.segment_reduce(values, "sum", offsets=offsets).unsqueeze(1)
        return first.add_(self._first_bias), library, values

    def _check_values(self, values, library, block, where, path):
        """Raise InputError naming the first bad cell of ``block`` unless the values of a
        batch of its rows are what the likelihood needs: finite, and for a count
        likelihood non-negative integers with counts in every cell. The test runs on the
        batch while it is in cache (a non-finite value makes its cell's library size
        non-finite); ``values.check_values`` searches the block only when it fails."""
        ok = bool(torch.isfinite(library).all())
        if ok and self.network.count_data:
            ok = (bool((library > 0).all()) and (values.numel() == 0 or bool(values.min() >= 0))
                  and not bool(torch.frac(values).any()))
        if ok:
            return
        names = read_obs(path, [], block.start, block.stop).index if path is not None else None
        check_values(block.to_scipy(self.var_names.size), self.network.count_data, where=where, obs_names=names)
        raise InputError(f"{where}: rows {block.start}-{block.stop} hold values the model cannot read (a cell's "
                         "values sum to more than float32 holds).")

    @torch.inference_mode()
    def latents(self, block, block_codes, out, at, batch_size=4096, where="the rows", path=None):
        """Write the latents ("z_basal", "z", "z_corrected") of the block's rows into
        ``out`` (a dict of (n, n_latent) arrays) from row ``at`` on. Values the model
        cannot read stop it with a message that names ``where`` and the cell (its name read
        from ``path``)."""
        for first_row in range(0, block.n_rows, batch_size):
            rows = slice(first_row, min(first_row + batch_size, block.n_rows))
            h, library, values = self._encoded(block, rows)
            self._check_values(values, library, block, where, path)
            inputs = self._codes_on_device(block_codes, rows)
            result = self.network.latents_from_hidden(h, library, **inputs)
            for key in out:
                out[key][at + rows.start:at + rows.stop] = result[key].cpu().numpy()

    @torch.inference_mode()
    def predict_mean(self, block, block_codes, perturbation_codes, rows, out, batch_size=4096, where="the rows",
                     path=None):
        """Mean expression of the block's rows ``rows`` (indices into the block) with their
        perturbation replaced by ``perturbation_codes`` (one encoded row): written into
        ``out`` (len(rows), n_genes). The cells keep their basal state, covariates and
        library size (a counterfactual). Values as in ``latents``."""
        override = torch.from_numpy(perturbation_codes).to(self.device)
        every_row = len(rows) == block.n_rows  # rows are sorted and distinct: then they are all
        selected = block if every_row else None
        if not every_row:  # the selected rows copied once, as a block of their own
            sub = block.to_scipy(self.var_names.size)[rows]
            selected = (RowBlock(0, sub.shape[0], dense=np.asarray(sub)) if block.dense is not None
                        else RowBlock(0, sub.shape[0], indptr=sub.indptr.astype(np.int64), indices=sub.indices,
                                      data=sub.data))
        for first_row in range(0, len(rows), batch_size):
            part = slice(first_row, min(first_row + batch_size, len(rows)))
            h, library, values = self._encoded(selected, part)
            self._check_values(values, library, block, where, path)
            inputs = self._codes_on_device(block_codes, rows[part])
            inputs["perturbation"] = override.expand(part.stop - part.start, -1)
            result = self.network.latents_from_hidden(h, library, **inputs)
            out[part] = self.network.decoder_outputs(result["z"], result["library"])["mean"].cpu().numpy()


def folded_layers(encoder):
    """The encoder's linear layers as (weight, bias) pairs with the batch norm that follows
    each (in eval mode, a fixed affine map per unit) folded into it: the encoder is then
    ReLU(x W_k^T + b_k) layer after layer (dropout is the identity in eval mode)."""
    modules = list(encoder)
    layers = []
    for i, module in enumerate(modules):
        if not isinstance(module, nn.Linear):
            continue
        weight, bias = module.weight.detach().clone(), module.bias.detach().clone()
        following = [type(m) for m in modules[i + 1:i + 3]]
        norm = modules[i + 1] if following and following[0] is nn.BatchNorm1d else None
        if nn.ReLU not in following:
            raise ValueError(f"encoder layer {i} is not followed by a ReLU: {modules[i + 1:i + 3]}")
        if norm is not None:
            scale = norm.weight.detach() / torch.sqrt(norm.running_var + norm.eps)
            weight = weight * scale[:, None]
            bias = (bias - norm.running_mean) * scale + norm.bias.detach()
        layers.append((weight, bias))
    return layers
