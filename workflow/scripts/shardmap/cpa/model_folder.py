"""The saved model folder: written whole or not at all, loaded on the CPU by the tasks."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


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


def inference_device(device):
    """'cpu' or 'cuda' for cpa.infer.device (auto: cuda when torch sees a GPU)."""
    from ..devices import resolve_device

    return resolve_device(device, "cpa.infer.device", "inference tasks")


def load_model(model_dir, adata, device="cpu"):
    """The CPA saved in ``model_dir``, set up for ``adata`` from its registry, on ``device``
    ('cpu', 'cuda' or 'auto', see inference_device)."""
    from .model import CPA

    accelerator = "gpu" if inference_device(device) == "cuda" else "cpu"
    return CPA.load(str(model_dir), adata=adata, accelerator=accelerator)
