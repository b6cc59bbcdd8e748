"""What the workflow's ``cpa`` config section names in the AnnData: the arguments of
``CPA.setup_anndata`` and the obs columns every task reads."""

from __future__ import annotations


def setup_kwargs(cfg):
    """Keyword arguments of ``CPA.setup_anndata`` for the config's keys."""
    return {"perturbation_key": cfg["perturbation_key"], "dosage_key": cfg.get("dosage_key"),
            "control_group": cfg["control_group"], "covariate_keys": list(cfg.get("covariate_keys") or []),
            "batch_key": cfg.get("batch_key"), "smiles_key": cfg.get("smiles_key"),
            "layer": cfg.get("layer")}


def obs_keys(cfg):
    """The obs columns the config names (perturbation, dosage, covariates, batch, SMILES, split)."""
    keys = [cfg["perturbation_key"]] + list(cfg.get("covariate_keys") or [])
    keys += [k for k in (cfg.get("dosage_key"), cfg.get("batch_key"), cfg.get("smiles_key"), cfg.get("split_key"))
             if k]
    return keys
