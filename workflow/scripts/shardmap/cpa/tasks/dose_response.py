"""Task cpa_dose_response: predicted expression across a dose grid for the configured drugs."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np

from ...atomic import atomic_open
from .. import h5ad_rows
from ..config_keys import obs_keys
from ..model_folder import load_model

log = logging.getLogger(__name__)


def dose_response_table(model_dir, adata_path, cfg, out_path, chunk_rows=20_000):
    """Write cpa.dose_response's table (drug, dose, covariates, gene, mean, change) as TSV."""
    from ..dose_response import control_cells

    spec = cfg["dose_response"]
    obs = h5ad_rows.read_obs(adata_path, obs_keys(cfg))
    # Only the control cells that predict_dose_response will sample are read: the same draw.
    groups = control_cells(obs, cfg["perturbation_key"], cfg["control_group"], list(cfg.get("covariate_keys") or []),
                           int(spec["n_cells"]), int(spec.get("seed", 0)))
    rows = np.sort(np.concatenate(list(groups.values())))
    parts = []
    for start in range(0, len(obs), chunk_rows):
        stop = min(start + chunk_rows, len(obs))
        wanted = rows[(rows >= start) & (rows < stop)] - start
        if wanted.size:
            chunk = h5ad_rows.read_rows(adata_path, start, stop, obs_keys(cfg), cfg.get("layer"))
            parts.append(chunk[wanted].copy())
    cells = ad.concat(parts, merge="same") if len(parts) > 1 else parts[0]
    model = load_model(model_dir, cells)
    table = model.predict_dose_response(spec["drugs"], spec["doses"], adata=cells, n_cells=int(spec["n_cells"]),
                                        seed=int(spec.get("seed", 0)))
    with atomic_open(out_path, "w") as handle:
        table.to_csv(handle, sep="\t", index=False, float_format="%.6g")
    log.info("%d drugs x %d doses from %d control cells: %d rows", len(spec["drugs"]), len(spec["doses"]),
             cells.n_obs, len(table))
    return table
