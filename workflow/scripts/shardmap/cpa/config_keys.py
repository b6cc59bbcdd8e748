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


# Keys of cpa.train that say how the training runs, not what it learns: the workflow hands
# them to the training task from the config, outside its params, so changing one retrains
# nothing.
LOADER_KEYS = ("num_workers", "prefetch_factor", "persistent_workers")
TRAIN_EXECUTION_KEYS = ("accelerator",) + LOADER_KEYS


def training_accelerator(train):
    """The accelerator the training task may use, from cpa.train: a GPU only when one is
    declared (accelerator gpu or cuda, which also requests gpu=1 from the scheduler); auto
    trains on the CPU, so that a scheduler never sees a task use a GPU it did not ask for."""
    return "gpu" if train.get("accelerator") in ("gpu", "cuda") else "cpu"


def loader_options(train):
    """The data loader's settings of cpa.train (workers, prefetching)."""
    return {key: train[key] for key in LOADER_KEYS if key in train}
