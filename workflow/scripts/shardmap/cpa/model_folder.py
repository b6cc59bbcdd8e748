"""The saved model folder: written whole or not at all, loaded on the CPU by the tasks,
and recognised when another tool saved it (``cpa.trained_model`` may name any folder)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import InputError


def save_model_atomically(model, model_dir, extra_files=None):
    """Save into a temporary folder beside ``model_dir`` (with ``extra_files``, {name:
    text}) and rename it into place."""
    model_dir = Path(model_dir)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{model_dir.name}.tmp-"
    for stale in model_dir.parent.glob(prefix + "*"):  # left by a killed task
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=model_dir.parent))
    try:
        model.save(str(tmp), overwrite=True, save_anndata=False)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        for path in tmp.iterdir():
            with open(path, "rb+") as handle:
                os.fsync(handle.fileno())
        if model_dir.exists():
            shutil.rmtree(model_dir)
        os.replace(tmp, model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


MODEL_FILE = "model.pt"
# The fields our CPA.setup_anndata registers (codes.PERTURBATION_KEY, COVARIATES_KEY,
# BATCH_KEY and scvi-tools' X): a registry without them was made by another package.
OUR_FIELDS = {"X", "perturbation", "covariates", "batch"}
TRAIN_HERE = "train the model with shardmap (leave cpa.trained_model unset; cpa.adata and cpa.model say what to train)"


def check_model_folder(folder):
    """Raise InputError unless ``folder`` is a folder holding model.pt, naming what it
    holds instead (files of scvi-tools before 0.15 and of cpa-tools' own format). Reads
    no weights, so the workflow can call it while it builds the job graph."""
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"cpa.trained_model '{folder}' does not exist; give the folder a model was saved "
                         "in (by CPA.save, or rule cpa_train's {outdir}/cpa/model).")
    if not folder.is_dir():
        hint = " (give the folder that holds it)" if folder.name == MODEL_FILE else ""
        raise InputError(f"cpa.trained_model '{folder}' is a file, not a folder{hint}.")
    if (folder / MODEL_FILE).is_file():
        return
    found = sorted(path.name for path in folder.iterdir())
    if {"model_params.pt", "attr.pkl"} & set(found):
        raise InputError(f"cpa.trained_model '{folder}' holds {found}: the format of scvi-tools before 0.15 (and "
                         f"of cpa-tools built on it), not a shardmap CPA; its weights belong to another network. "
                         f"{TRAIN_HERE}.")
    raise InputError(f"cpa.trained_model '{folder}' has no {MODEL_FILE} (it holds {found[:10] or 'nothing'}); "
                     "give the folder CPA.save wrote.")


def check_saved_registry(path, attrs):
    """Raise InputError unless the saved attributes ``attrs`` (model.pt's "attr_dict")
    are those of a shardmap CPA, naming the tool and model that saved them otherwise."""
    registry = attrs.get("registry_") if isinstance(attrs, dict) else None
    if not isinstance(registry, dict):
        raise InputError(f"'{path}' is not a model saved by scvi-tools' save (no registry); {TRAIN_HERE}.")
    name = registry.get("model_name")
    version = registry.get("scvi_version", "?")
    fields = sorted((registry.get("field_registries") or {}))
    setup = sorted((registry.get("setup_args") or {}))
    if name != "CPA":
        raise InputError(f"'{path}' holds a {name} model saved by scvi-tools {version}, not a CPA: shardmap "
                         f"applies CPA models only; {TRAIN_HERE}.")
    if not OUR_FIELDS <= set(fields):
        raise InputError(f"'{path}' holds a CPA saved by another package, most likely cpa-tools (scvi-tools "
                         f"{version}; its data fields {fields}, setup arguments {setup}). Its network is not "
                         f"shardmap's and its weights cannot be loaded here; {TRAIN_HERE}.")


def inference_device(device):
    """'cpu' or 'cuda' for cpa.infer.device (auto: cuda when torch sees a GPU)."""
    from ..devices import resolve_device

    return resolve_device(device, "cpa.infer.device", "inference tasks")


def load_model(model_dir, adata, device="cpu"):
    """The CPA saved in ``model_dir``, set up for ``adata`` from its registry, on ``device``
    ('cpu', 'cuda' or 'auto', see inference_device)."""
    from .model import CPA

    check_model_folder(model_dir)
    accelerator = "gpu" if inference_device(device) == "cuda" else "cpu"
    return CPA.load(str(model_dir), adata=adata, accelerator=accelerator)
