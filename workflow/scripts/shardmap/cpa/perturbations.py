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

import rich
from scvi.data.fields import BaseAnnDataField

from ..errors import InputError
from . import codes
from .codes import PERTURBATION_KEY as REGISTRY_KEY
from .codes import encode_parsed
from .conditions import condition_class, parse_obs

OBSM_KEY = "_shardmap_cpa_perturbation"


class PerturbationField(BaseAnnDataField):
    """scvi-tools registry field: parses condition/dosage columns into the sparse encoding
    and keeps the drug and condition vocabularies in the model's registry."""

    DRUGS_KEY = codes.DRUGS
    CONDITIONS_KEY = codes.CONDITIONS
    MAX_DRUGS_KEY = codes.MAX_DRUGS
    CONTROL_KEY = codes.CONTROL

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
        parsed, cell_codes = parse_obs(adata.obs, self.perturbation_key, self.dosage_key, self.control_group)
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
        self._write(adata, parsed, cell_codes, state)
        return state

    def transfer_field(self, state_registry, adata_target, **kwargs):
        self.validate_field(adata_target)
        parsed, cell_codes = parse_obs(adata_target.obs, self.perturbation_key, self.dosage_key,
                                       self.control_group)
        self._write(adata_target, parsed, cell_codes, state_registry)
        return dict(state_registry)

    def _write(self, adata, parsed, cell_codes, state):
        adata.obsm[OBSM_KEY] = encode_parsed(parsed, cell_codes, {**state, codes.CONTROL: self.control_group})

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

