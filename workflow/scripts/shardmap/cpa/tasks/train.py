"""Task cpa_train: validate the AnnData, train CPA on the train split, save the model
folder and the split."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from ...atomic import atomic_open
from ..config_keys import setup_kwargs
from ..model_folder import save_model_atomically
from ..splits import assign_splits
from .check_inputs import load_and_validate

log = logging.getLogger(__name__)


def train_model(adata_path, cfg, model_dir, splits_path, accelerator="auto", loader=None):
    """Validate the data, train CPA on the train split, save the model and the split.
    ``loader``: the data loader's settings (config_keys.loader_options), which change how
    fast it trains, not what it learns."""
    from ..model import CPA

    adata = load_and_validate(adata_path, cfg)
    splits = assign_splits(adata.obs, cfg)
    import scvi

    CPA.setup_anndata(adata, **setup_kwargs(cfg))
    train_cfg = dict(cfg.get("train") or {})
    loader = dict(loader or {})
    scvi.settings.seed = int(train_cfg.get("seed", 0))  # the initial weights too
    model = CPA(adata, **dict(cfg.get("model") or {}))
    train_idx = np.flatnonzero(splits == "train")
    valid_idx = np.flatnonzero(splits == "valid")
    log.info("training on %d cells, validating on %d, holding out %d", train_idx.size, valid_idx.size,
             int((splits == "test").sum()))
    model.train(max_epochs=int(train_cfg.get("max_epochs", 100)), batch_size=int(train_cfg.get("batch_size", 512)),
                accelerator=accelerator, devices=1, train_indices=train_idx, validation_indices=valid_idx,
                seed=train_cfg.get("seed", 0), num_workers=int(loader.get("num_workers", 0)),
                prefetch_factor=int(loader.get("prefetch_factor", 2)),
                persistent_workers=bool(loader.get("persistent_workers", False)),
                plan_kwargs=train_cfg.get("plan"), validation_every=int(train_cfg.get("validation_every", 5)),
                keep_best=bool(train_cfg.get("keep_best", True)),
                early_stopping=bool(train_cfg.get("early_stopping", False)),
                early_stopping_patience=int(train_cfg.get("early_stopping_patience", 5)))
    history = {k: v.iloc[:, 0].astype(float).tolist() for k, v in model.history.items()}
    history.update(model.selection_history)  # "selection": the validation checks, "selected_epoch"
    # The model folder appears with model.pt and history.json together, or not at all.
    save_model_atomically(model, model_dir, {"history.json": json.dumps(history)})
    with atomic_open(splits_path, "w") as handle:
        pd.DataFrame({"split": splits}, index=adata.obs_names).to_csv(handle, sep="\t", index_label="cell")
    return model
