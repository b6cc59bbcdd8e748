"""Categorical covariates (and the batch) as codes whose meaning belongs to the model.

The categories of each column are recorded, sorted, in the model's registry when the
training AnnData is set up; every later AnnData is encoded by value against that list,
so the order of categories in a file never changes a code, and a value the model has
not seen is an error that names it.
"""

from __future__ import annotations

import rich
from scvi.data.fields import BaseAnnDataField

from .codes import CATEGORIES, NO_BATCH, check_categories_present, encode_categories


class CategoricalCodesField(BaseAnnDataField):
    """Encodes the obs columns ``keys`` as an (n, len(keys)) float32 code matrix in obsm.

    With no keys and ``single_category`` set, every cell gets code 0 of one category
    (used for an absent batch key).
    """

    CATEGORIES_KEY = CATEGORIES

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
        check_categories_present(adata.obs, self.keys)

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
        adata.obsm[self._obsm_key] = encode_categories(adata.obs, self.keys, categories)

    def get_summary_stats(self, state_registry):
        return {f"n_{self.registry_key}": len(state_registry.get(self.CATEGORIES_KEY, {}))}

    def view_state_registry(self, state_registry):
        table = rich.table.Table(title=self.registry_key)
        table.add_column("column")
        table.add_column("categories")
        for key, values in state_registry.get(self.CATEGORIES_KEY, {}).items():
            table.add_row(key, ", ".join(values))
        return table


def n_categories(state_registry, keys=None):
    """Number of categories of each encoded column, in column order: that of ``keys``, the
    obs columns as the setup named them (the registry's dict of categories may come back
    with its keys sorted, while the code matrix keeps the setup's order)."""
    categories = state_registry[CategoricalCodesField.CATEGORIES_KEY]
    return [len(categories[key]) for key in (categories if keys is None else keys)]
