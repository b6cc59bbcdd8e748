"""What a trained model knows: its genes, its obs keys, its drugs and the categories of
its covariates and batch, and whether it reads counts.

A new data set is checked against this before any task runs the model on it. It comes
from a saved model's registry (``InferenceModel.vocabulary``) or, for a model the
workflow is about to train, from the training file and the config: the registry is
made from exactly those (``CPA.setup_anndata`` records every category and drug of the
file, the genes are its var_names), so a query can be checked before the training has
run. NumPy and pandas only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .codes import NO_BATCH

COUNT_LOSSES = ("nb", "zinb")


@dataclass
class ModelVocabulary:
    """The names a trained CPA reads new data by.

    ``setup`` holds the keys of ``CPA.setup_anndata`` (perturbation_key, dosage_key,
    control_group, covariate_keys, batch_key, layer); ``covariate_categories`` and
    ``batch_categories`` map each column to its known values ({"_no_batch": ["all"]}
    without a batch column).
    """

    setup: dict
    var_names: np.ndarray
    drugs: list
    covariate_categories: dict
    batch_categories: dict
    count_data: bool
    source: str = field(default="")

    @property
    def covariate_keys(self):
        return list(self.setup.get("covariate_keys") or [])

    @property
    def batch_key(self):
        return self.setup.get("batch_key")

    @property
    def control_group(self):
        return self.setup["control_group"]

    def categories(self, key):
        """The known values of covariate or batch column ``key``."""
        if key in self.covariate_categories:
            return list(self.covariate_categories[key])
        return list(self.batch_categories.get(key, []))

    @classmethod
    def from_training_file(cls, path, cfg):
        """The vocabulary the model trained on ``path`` with config section ``cfg`` (cpa)
        will have."""
        from . import h5ad_rows
        from .config_keys import setup_kwargs
        from .named_drugs import screen_drugs

        setup = setup_kwargs(cfg)
        covariates = {key: sorted(h5ad_rows.distinct_values(path, key)) for key in setup["covariate_keys"]}
        batch_key = setup.get("batch_key")
        batches = {batch_key: sorted(h5ad_rows.distinct_values(path, batch_key))} if batch_key else {NO_BATCH: ["all"]}
        count_data = (cfg.get("model") or {}).get("recon_loss", "nb") in COUNT_LOSSES
        return cls(setup=setup, var_names=np.asarray(h5ad_rows.var_names(path)).astype(str),
                   drugs=sorted(screen_drugs(path, setup["perturbation_key"], setup["control_group"])),
                   covariate_categories=covariates, batch_categories=batches, count_data=count_data,
                   source=f"the model to be trained on '{path}'")

