"""What cpa-tools (theislab/cpa, the ``cpa-tools`` package) calls things, and what the CPA
here calls them.

Users who move from cpa-tools bring its keyword arguments, result keys and method
names. Instead of a bare ``unexpected keyword argument``, ``KeyError`` or
``AttributeError``, each of them gets a message: our name for the same thing, or that
we do not have it and why. The tables below map each cpa-tools name to that message;
``model`` (CPA's methods) and ``embeddings`` use them.

Keyword arguments are refused with :class:`KeywordError`, an ``InputError`` that
``except TypeError`` still catches, as it would the bare error.
"""

from __future__ import annotations

import inspect

from ..errors import InputError


class KeywordError(InputError, TypeError):
    """A keyword argument the method does not take; the message says what to write instead."""


# --- CPA(adata, ...) ---------------------------------------------------------------------
_SPLIT = ("the split is not the model's here but train's: train(train_indices=..., "
          "validation_indices=...), row positions (cells in neither are not used), e.g. "
          "train_indices=np.flatnonzero(adata.obs[key] == 'train'). In the workflow set cpa.split_key: "
          "shardmap.cpa.splits reads that obs column's labels train, valid and test (also training, "
          "validation, val and ood; any case). Mind that cpa-tools' default valid_split is 'test': its 'test' "
          "cells are validation cells, while the workflow's 'test' cells are held out (evaluated, never "
          "trained or validated on)")
_HIDDEN = "here it is n_hidden (one size for the encoder's and the decoder's hidden layers)"
_LAYERS = ("here it is n_layers (one depth for the encoder and the decoder; it counts hidden layers, as cpa-tools "
           "does)")
_DROPOUT = "here it is dropout (one rate for the encoder and the decoder)"
_BATCH_NORM = ("we do not have it: every hidden layer of the encoder and the decoder has batch norm "
               "(cpa-tools' default), and there is no layer norm")
_ADVERSARY = ("we do not have it: the adversarial classifiers are fixed (2 hidden layers of 64 units with batch "
              "norm, dropout 0.1); their strength is set by train(plan_kwargs={'reg_adv': ..., 'pen_adv': ..., "
              "'adv_lr': ..., 'adv_steps': ...})")
_DOSER = ("we do not have it: doser_type='logsigm' and 'sigm' learn two numbers per drug, and doser_type='mlp' "
          "is a per-drug network of one hidden layer of 16 units")

INIT = {
    "split_key": _SPLIT,
    "train_split": _SPLIT,
    "valid_split": _SPLIT,
    "test_split": _SPLIT,
    "use_rdkit_embeddings": ("we do not have the switch: the drugs' Morgan fingerprints (RDKit) are used whenever "
                             "setup_anndata got smiles_key, and learned embeddings otherwise; a fingerprint "
                             "table of your own is drug_fingerprints="),
    "drug_embeddings": "here it is drug_fingerprints (a drugs x features array in the order of model.drugs)",
    "n_hidden_encoder": _HIDDEN,
    "n_hidden_decoder": _HIDDEN,
    "autoencoder_width": _HIDDEN,
    "n_layers_encoder": _LAYERS,
    "n_layers_decoder": _LAYERS,
    "autoencoder_depth": _LAYERS,
    "dropout_rate_encoder": _DROPOUT,
    "dropout_rate_decoder": _DROPOUT,
    "dropout_rate": _DROPOUT,
    "use_batch_norm_encoder": _BATCH_NORM,
    "use_batch_norm_decoder": _BATCH_NORM,
    "use_layer_norm_encoder": _BATCH_NORM,
    "use_layer_norm_decoder": _BATCH_NORM,
    "use_batch_norm": _BATCH_NORM,
    "use_layer_norm": _BATCH_NORM,
    "n_hidden_doser": _DOSER,
    "n_layers_doser": _DOSER,
    "n_hidden_adv": _ADVERSARY,
    "n_layers_adv": _ADVERSARY,
    "dropout_rate_adv": _ADVERSARY,
    "use_batch_norm_adv": _ADVERSARY,
    "use_layer_norm_adv": _ADVERSARY,
    "loss_ae": "here it is recon_loss ('nb', 'zinb' or 'gauss')",
    "seed": ("we do not take it here: the weights are initialised from torch's global random state, so set "
             "scvi.settings.seed = N before CPA(...); training's own seed is train(seed=N)"),
}

# --- CPA.setup_anndata(adata, ...) ----------------------------------------------------
_DEGS = ("we do not have it: the model selection scores the reconstruction of every gene (R^2 per condition, "
         "shardmap.cpa.selection); the workflow's evaluation reports R^2 on all genes and on each group's 20 "
         "most changed genes, which it finds itself (no DEG table needed)")

SETUP_ANNDATA = {
    "is_count_data": ("here the model's likelihood says it: CPA(adata, recon_loss='nb' or 'zinb') for raw "
                      "counts, recon_loss='gauss' for log-normalised data; the values are "
                      "checked against it"),
    "deg_uns_key": _DEGS,
    "deg_uns_cat_key": _DEGS,
    "n_deg_r2": _DEGS,
    "max_comb_len": ("we do not have it: the number of drugs per cell is that of the largest combination in the "
                     "registered data, found by setup_anndata"),
    "drug_key": "here it is perturbation_key (the obs column of conditions, 'drugA+drugB')",
    "perturbation_keys": ("here they are two arguments, perturbation_key= (the conditions column) and "
                          "dosage_key= (the doses column)"),
    "dose_key": "here it is dosage_key (the obs column of doses, '0.1+1.0'; None puts every drug at dose 1)",
    "control_key": "here it is control_group (the condition label of the control cells)",
    "combinatorial": ("we do not have the switch: combinations ('drugA+drugB', with doses '0.1+1.0') are always "
                      "understood"),
    "continuous_covariate_keys": ("we do not have it: continuous covariates are not modelled; bin them into "
                                  "categories and give them as covariate_keys"),
    "copy": "we do not have it: setup_anndata registers adata in place; pass adata.copy() to keep the original",
}

# --- model.train(...) and its plan_kwargs -------------------------------------------------
TRAIN = {
    "use_gpu": ("here it is accelerator: use_gpu=False is accelerator='cpu', use_gpu=True is accelerator='gpu' (a GPU "
                "index i is accelerator='gpu', devices=[i]); the default 'auto' takes a GPU when there is one"),
    "save_path": ("we do not have it: train does not save; call model.save(path, overwrite=True) after "
                  "train (the workflow's rule cpa_train saves to {outdir}/cpa/model/)"),
    "validation_size": ("we do not have it: the random split is train_size of the cells for training and the rest "
                        "for validation; choose them yourself with train_indices= and validation_indices="),
    "hyperopt": ("we do not have it: there is no Ray Tune hook; train models with different settings and "
                 "compare model.selection_history"),
}

_SHARED_DECAY = "here it is weight_decay (one weight decay for the autoencoder, the adversaries and the dosers)"
_NO_MIXUP = "we do not have it: there is no mixup of cells in training"
_EPOCHS = ("we do not have it: the warm-ups and the pretraining count epochs: n_epochs_kl_warmup, "
           "n_epochs_adv_warmup, n_epochs_pretrain_ae")
PLAN = {
    "wd": _SHARED_DECAY,
    "adv_wd": _SHARED_DECAY,
    "doser_wd": _SHARED_DECAY,
    "n_steps_kl_warmup": _EPOCHS,
    "n_steps_adv_warmup": _EPOCHS,
    "n_steps_pretrain_ae": _EPOCHS,
    "n_epochs_mixup_warmup": _NO_MIXUP,
    "mixup_alpha": _NO_MIXUP,
    "n_hidden_adv": _ADVERSARY,
    "n_layers_adv": _ADVERSARY,
    "dropout_rate_adv": _ADVERSARY,
    "use_batch_norm_adv": _ADVERSARY,
    "use_layer_norm_adv": _ADVERSARY,
    "adv_loss": ("we do not have it: the adversaries' loss is the cross-entropy (weighted by inverse condition "
                 "frequency for the perturbation adversary)"),
    "do_clip_grad": "we do not have it: gradients are not clipped",
    "gradient_clip_value": "we do not have it: gradients are not clipped",
}

# --- model.predict(...) -------------------------------------------------------------------
PREDICT = {
    "n_samples": ("we do not have it: predict returns the likelihood's mean (for a variational model, decoded "
                  "from the posterior mean), or with sample=True one seeded draw per cell (seed=); call it "
                  "with several seeds for several draws"),
    "return_mean": ("we do not have it: predict returns the mean unless sample=True, which gives one seeded draw "
                    "per cell instead"),
}
PREDICT_RETURNS = ("CPA.predict returns the predicted expression as a (cells x genes) array and does not write "
                   "adata.obsm['CPA_pred'] as cpa-tools does; assign it yourself: "
                   "adata.obsm['CPA_pred'] = model.predict(adata). (Said once per model.)")

# --- the learned embeddings ---------------------------------------------------------------
DRUG_EMBEDDINGS = {
    "dosage": "here it is dose (one dose for every drug asked for; 1.0 by default)",
    "doses": "here it is dose (one dose for every drug asked for; 1.0 by default)",
    "pert": "here it is drugs (one drug name or a list; all of the model's drugs by default)",
    "drug": "here it is drugs (one drug name or a list; all of the model's drugs by default)",
}
COVARIATE_EMBEDDINGS = {
    "covariate": ("we do not have it: get_covariate_embeddings() returns {covariate key: DataFrame} of every "
                  "covariate; pick one with [covariate]"),
    "covariate_value": ("we do not have it: get_covariate_embeddings() returns {covariate key: DataFrame} of "
                        "every covariate, one row per value; pick one with [covariate].loc[value]"),
}

# --- methods and result keys ------------------------------------------------------------
METHODS = {
    "custom_predict": ("CPA here has no custom_predict: predict(adata, indices=..., perturbation=..., dosage=...) "
                       "predicts the selected cells under a perturbation of your choice (their basal state and "
                       "covariates kept), and get_latent_representation() returns the latents z_basal, z and "
                       "z_corrected; a prediction with some covariates left out of the latent is not offered"),
    "get_pert_embeddings": ("CPA here has no get_pert_embeddings: get_drug_embeddings(dose=..., drugs=...) returns "
                            "a (drugs x n_latent) DataFrame, each drug's vector scaled by its learned dose response "
                            "at dose (cpa-tools' dosage=, pert=)"),
    "get_covar_embeddings": ("CPA here has no get_covar_embeddings: get_covariate_embeddings() returns {covariate "
                             "key: (values x n_latent) DataFrame} of every covariate (cpa-tools' covariate= and "
                             "covariate_value= are [covariate].loc[value])"),
}

LATENTS = {"latent_basal": "z_basal", "latent_after": "z", "latent_corrected": "z_corrected"}


def latent_key_message(key, ours):
    """The message of the KeyError for a missing key ``key`` of the latents ``ours`` (their keys)."""
    known = ", ".join(repr(k) for k in ours)
    if key in LATENTS:
        return (f"{key!r} is cpa-tools' name; here it is {LATENTS[key]!r} (the keys are {known}), and the values "
                "are (cells x n_latent) arrays, not AnnData as in cpa-tools: wrap one yourself, e.g. "
                f"adata.obsm['X_cpa'] = latents[{LATENTS[key]!r}]")
    return f"no latent {key!r}; the keys are {known}, each a (cells x n_latent) array"


def parameters_of(function):
    """The names of ``function``'s parameters that a caller may give by keyword."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in inspect.signature(function).parameters.values() if p.kind in kinds and p.name != "self"]


def describe(method, name, table, parameters):
    """One line on keyword argument ``name`` that ``method`` does not take."""
    if name in table:
        return f"{method} has no argument '{name}' (a cpa-tools name): {table[name]}."
    return (f"{method} got an unexpected keyword argument '{name}'; its arguments are "
            f"{', '.join(parameters)}.")


def check_keywords(method, given, table, parameters=None):
    """Raise KeywordError for the keyword arguments ``given`` (names) that ``method`` does
    not take: each cpa-tools name in ``table`` with its message; any other name with
    ``parameters``, the arguments ``method`` takes. With ``parameters`` None, only the
    names in ``table`` are refused (the rest go on, e.g. to Lightning's Trainer)."""
    names = [name for name in given if name in table or parameters is not None]
    if not names:
        return
    lines = [describe(method, name, table, parameters or []) for name in names]
    if len(lines) == 1:
        raise KeywordError(lines[0])
    raise KeywordError(f"{method} got {len(lines)} arguments it does not take:\n"
                       + "\n".join(f"  - {line}" for line in lines))
