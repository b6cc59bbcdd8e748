"""Categorical covariates (and the batch) as codes whose meaning belongs to the model.

The categories of each column are recorded, sorted, in the model's registry when the
training AnnData is set up; every later AnnData is encoded by value against that list,
so the order of categories in a file never changes a code, and a value the model has
not seen is an error that names it.
"""

from __future__ import annotations

import numpy as np
import rich
from scvi.data.fields import BaseAnnDataField

from ..errors import InputError

NO_BATCH = "_no_batch"


class CategoricalCodesField(BaseAnnDataField):
    """Encodes the obs columns ``keys`` as an (n, len(keys)) float32 code matrix in obsm.

    With no keys and ``single_category`` set, every cell gets code 0 of one category
    (used for an absent batch key).
    """

    CATEGORIES_KEY = "categories"

    def __init__(self, registry_key, keys, obsm_key, single_category=None):
        super().__init__()
        self._registry_key = registry_key
        self.keys = list(keys)
        self._obsm_key = obsm_key
        self.single_category = single_category

    @property
    def registry_key(self):
        return self._registry_key

    @property
    def attr_name(self):
        return "obsm"

    @property
    def attr_key(self):
        return self._obsm_key

    @property
    def is_empty(self):
        return not self.keys and self.single_category is None

    def validate_field(self, adata):
        for key in self.keys:
            if key not in adata.obs:
                raise InputError(f"adata.obs has no column '{key}' (columns: {list(adata.obs.columns)}).")
            if adata.obs[key].isna().any():
                raise InputError(f"adata.obs['{key}'] has missing values in {int(adata.obs[key].isna().sum())} "
                                 "cells; fill or drop them.")

    def register_field(self, adata):
        self.validate_field(adata)
        if not self.keys:
            categories = {NO_BATCH: [self.single_category]}
        else:
            categories = {key: sorted(set(adata.obs[key].astype(str))) for key in self.keys}
        self._write(adata, categories)
        return {self.CATEGORIES_KEY: categories}

    def transfer_field(self, state_registry, adata_target, **kwargs):
        self.validate_field(adata_target)
        self._write(adata_target, state_registry[self.CATEGORIES_KEY])
        return {self.CATEGORIES_KEY: dict(state_registry[self.CATEGORIES_KEY])}

    def _write(self, adata, categories):
        if not self.keys:
            adata.obsm[self._obsm_key] = np.zeros((adata.n_obs, 1), dtype=np.float32)
            return
        codes = np.empty((adata.n_obs, len(self.keys)), dtype=np.float32)
        for column, key in enumerate(self.keys):
            index = {value: i for i, value in enumerate(categories[key])}
            values = adata.obs[key].astype(str).to_numpy()
            unseen = sorted(set(values) - set(index))
            if unseen:
                raise InputError(f"obs['{key}'] has the value '{unseen[0]}' that the model was not trained "
                                 f"on (known: {categories[key][:10]}); the model cannot embed unseen "
                                 "categories.")
            codes[:, column] = [index[v] for v in values]
        adata.obsm[self._obsm_key] = codes

    def get_summary_stats(self, state_registry):
        return {f"n_{self.registry_key}": len(state_registry.get(self.CATEGORIES_KEY, {}))}

    def view_state_registry(self, state_registry):
        table = rich.table.Table(title=self.registry_key)
        table.add_column("column")
        table.add_column("categories")
        for key, values in state_registry.get(self.CATEGORIES_KEY, {}).items():
            table.add_row(key, ", ".join(values))
        return table


def n_categories(state_registry):
    """Number of categories of each encoded column, in column order."""
    return [len(values) for values in state_registry[CategoricalCodesField.CATEGORIES_KEY].values()]
