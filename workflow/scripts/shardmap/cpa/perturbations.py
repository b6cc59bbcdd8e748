"""Perturbations as sparse per-cell (drug, dose) lists, and the registry field that owns
their vocabulary.

A cell's condition is a string of drugs joined by ``+`` ("drugA+drugB"), its dosage a
string of as many numbers ("0.1+1.0"); the i-th dose belongs to the i-th drug. The
control group has no drug. Each cell is stored as at most K (drug index, dose) pairs,
sorted by drug index, padded with the index ``n_drugs`` and dose 0: no dense
cells x drugs matrix is ever built.

The vocabulary (drug names, condition classes for the adversary) belongs to the model:
``PerturbationField`` records it in the model's registry when the training AnnData is
set up and re-applies it to every later AnnData, so a drug's index never depends on
the data set, and an unknown drug is an error that names it.
"""

from __future__ import annotations


import numpy as np
import rich
from scvi.data.fields import BaseAnnDataField

from ..errors import InputError
from .conditions import SEPARATOR, condition_class, parse_condition, parse_obs  # noqa: F401

OBSM_KEY = "_shardmap_cpa_perturbation"
REGISTRY_KEY = "perturbation"


def encode(parsed, codes, drug_index, condition_index, max_drugs, control_group):
    """Encode cells as an (n, 2K + 1) float32 array: K drug indices (padding = n_drugs),
    K doses (padding 0), and the condition class (-1 when not among the known classes)."""
    n_drugs = len(drug_index)
    table = np.zeros((len(parsed), 2 * max_drugs + 1), dtype=np.float32)
    table[:, :max_drugs] = n_drugs
    for row, pairs in enumerate(parsed):
        if len(pairs) > max_drugs:
            raise InputError(f"a cell has {len(pairs)} drugs ({condition_class(pairs, control_group)}) "
                             f"but the model handles at most {max_drugs} per cell.")
        for k, (drug, dose) in enumerate(pairs):
            if drug not in drug_index:
                raise InputError(f"drug '{drug}' is not in the model's vocabulary "
                                 f"({sorted(drug_index)[:10]}...); the model cannot predict drugs it "
                                 "was not trained on.")
            table[row, k] = drug_index[drug]
            table[row, max_drugs + k] = dose
        table[row, -1] = condition_index.get(condition_class(pairs, control_group), -1)
    return table[codes]


def split_encoded(tensor):
    """(drug indices long, doses float, condition class long) from an encoded batch tensor."""
    max_drugs = (tensor.shape[1] - 1) // 2
    return (tensor[:, :max_drugs].long(), tensor[:, max_drugs:2 * max_drugs],
            tensor[:, 2 * max_drugs].long())


class PerturbationField(BaseAnnDataField):
    """scvi-tools registry field: parses condition/dosage columns into the sparse encoding
    and keeps the drug and condition vocabularies in the model's registry."""

    DRUGS_KEY = "drugs"
    CONDITIONS_KEY = "conditions"
    MAX_DRUGS_KEY = "max_drugs"
    CONTROL_KEY = "control_group"

    def __init__(self, perturbation_key, dosage_key, control_group):
        super().__init__()
        self.perturbation_key = perturbation_key
        self.dosage_key = dosage_key
        self.control_group = str(control_group)

    registry_key = REGISTRY_KEY
    attr_name = "obsm"
    attr_key = OBSM_KEY
    is_empty = False

    def validate_field(self, adata):
        for key in (self.perturbation_key, self.dosage_key):
            if key is not None and key not in adata.obs:
                raise InputError(f"adata.obs has no column '{key}' (columns: {list(adata.obs.columns)}); "
                                 "set perturbation_key and dosage_key to the columns holding the "
                                 "condition and dosage strings (dosage_key=None puts every drug at dose 1).")

    def register_field(self, adata):
        self.validate_field(adata)
        parsed, codes = parse_obs(adata.obs, self.perturbation_key, self.dosage_key, self.control_group)
        if not any(len(p) == 0 for p in parsed):
            raise InputError(f"no cell of obs['{self.perturbation_key}'] is the control group "
                             f"'{self.control_group}'; set control_group to the label of unperturbed cells.")
        drugs = sorted({drug for pairs in parsed for drug, _ in pairs})
        if not drugs:
            raise InputError(f"every cell is in the control group '{self.control_group}'; "
                             "there is no perturbation to model.")
        classes = sorted({condition_class(p, self.control_group) for p in parsed} - {self.control_group})
        conditions = [self.control_group] + classes
        max_drugs = max(len(p) for p in parsed)
        state = {self.DRUGS_KEY: drugs, self.CONDITIONS_KEY: conditions,
                 self.MAX_DRUGS_KEY: max_drugs, self.CONTROL_KEY: self.control_group}
        self._write(adata, parsed, codes, state)
        return state

    def transfer_field(self, state_registry, adata_target, **kwargs):
        self.validate_field(adata_target)
        parsed, codes = parse_obs(adata_target.obs, self.perturbation_key, self.dosage_key,
                                  self.control_group)
        self._write(adata_target, parsed, codes, state_registry)
        return dict(state_registry)

    def _write(self, adata, parsed, codes, state):
        drug_index = {d: i for i, d in enumerate(state[self.DRUGS_KEY])}
        condition_index = {c: i for i, c in enumerate(state[self.CONDITIONS_KEY])}
        # Wider than the training data's K where a cell combines more drugs: the module
        # reads K from the width of the encoding.
        max_drugs = max([state[self.MAX_DRUGS_KEY]] + [len(p) for p in parsed])
        adata.obsm[OBSM_KEY] = encode(parsed, codes, drug_index, condition_index, max_drugs,
                                      self.control_group)

    def get_summary_stats(self, state_registry):
        return {"n_drugs": len(state_registry[self.DRUGS_KEY]),
                "n_conditions": len(state_registry[self.CONDITIONS_KEY])}

    def view_state_registry(self, state_registry):
        table = rich.table.Table(title="perturbation vocabulary")
        table.add_column("drug index")
        table.add_column("drug")
        for i, drug in enumerate(state_registry[self.DRUGS_KEY]):
            table.add_row(str(i), drug)
        return table


def encode_override(perturbation, dosage, state, n_cells):
    """Encode one perturbation given by the user (a counterfactual) for ``n_cells`` cells."""
    control = state[PerturbationField.CONTROL_KEY]
    pairs = parse_condition(perturbation, dosage, control, where="counterfactual: ") if perturbation != control else ()
    max_drugs = max(1, len(pairs))
    drug_index = {d: i for i, d in enumerate(state[PerturbationField.DRUGS_KEY])}
    condition_index = {c: i for i, c in enumerate(state[PerturbationField.CONDITIONS_KEY])}
    row = encode([pairs], np.zeros(1, dtype=np.int64), drug_index, condition_index, max_drugs, control)
    return np.repeat(row, n_cells, axis=0)
