"""The cells of one .h5ad as a trained model reads them: the training file (cpa.adata) or
a query data set (an entry of cpa.query).

The training file must hold the model's genes in its order and the obs columns it was
set up with. A query is read by these rules (README, "New data for a trained model"):

* genes: matched by name (``gene_alignment``): var_names, or the var column ``gene_key``;
  extra genes are dropped; missing model genes stop the run unless ``missing_genes: zero``;
* the perturbation column (the model's ``perturbation_key``): where the file has none,
  every cell is a control cell; where it has one but no dose column, its perturbed cells
  stop the run (a dose cannot be guessed);
* covariates and batch (the model's keys): read from the column of the same name, with
  values renamed by ``covariates: {key: {file value: model value}}``, or one category for
  every cell with ``covariates: {key: category}`` (also where the file lacks the column);
  a value the model never saw stops the run, naming it and the query.

Only NumPy, pandas and h5py: the query check runs without the model's network.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import InputError
from . import h5ad_rows
from .conditions import parse_obs
from .gene_alignment import GeneAlignment

SHOWN = 10  # known categories named in a message


def query_label(query, path):
    """How messages name a query data set."""
    return f"cpa.query '{query['name']}' ('{path}')"


class ModelInput:
    """The cells of ``path`` as the model of ``vocabulary`` (``vocabulary.ModelVocabulary``)
    reads them; ``query`` is the cpa.query entry (None: the training file)."""

    def __init__(self, vocabulary, path, query=None):
        self.vocabulary = vocabulary
        self.path = str(path)
        self.query = dict(query) if query else None
        setup = vocabulary.setup
        self.layer = (self.query or {}).get("layer") if self.query else setup.get("layer")
        self.label = query_label(self.query, self.path) if self.query else f"'{self.path}'"
        self.where = f"{self.label} ({f'layers[{self.layer!r}]' if self.layer else 'X'})"
        self.file_columns = set(h5ad_rows.obs_columns(self.path))
        self.rules = dict((self.query or {}).get("covariates") or {})
        self.alignment = self._genes()
        self._check_columns()

    # --- genes ----------------------------------------------------------------------------
    def _genes(self):
        model_genes = self.vocabulary.var_names
        if self.query is None:
            genes = np.asarray(h5ad_rows.var_names(self.path)).astype(str)
            alignment = GeneAlignment(model_genes, genes, self.label, missing_genes="zero")
            if not alignment.identity:
                if genes.size != model_genes.size:
                    detail = f"it has {genes.size} genes, the model {model_genes.size}"
                elif set(genes) == set(model_genes):
                    detail = "the same genes in another order"
                else:
                    detail = f"genes differ (e.g. the model's '{sorted(set(model_genes) - set(genes))[0]}' is missing)"
                raise InputError(f"{self.label}: {detail}. The model reads the genes it was trained on, in that "
                                 "order; subset and reorder the file with adata[:, model_genes] first, or give it "
                                 "as a cpa.query entry, whose genes are matched by name.")
            return alignment
        gene_key = self.query.get("gene_key")
        genes = h5ad_rows.var_column(self.path, gene_key) if gene_key else h5ad_rows.var_names(self.path)
        return GeneAlignment(model_genes, np.asarray(genes).astype(str), self.label,
                             self.query.get("missing_genes") or "refuse",
                             names=f"var['{gene_key}']" if gene_key else "var_names")

    # --- obs --------------------------------------------------------------------------------
    @property
    def category_keys(self):
        """The model's covariate columns and its batch column (if any)."""
        return self.vocabulary.covariate_keys + ([self.vocabulary.batch_key] if self.vocabulary.batch_key else [])

    @property
    def perturbation_key(self):
        return self.vocabulary.setup["perturbation_key"]

    @property
    def dosage_key(self):
        return self.vocabulary.setup.get("dosage_key")

    @property
    def has_perturbations(self):
        """Whether the file has the model's perturbation column (a query may not)."""
        return self.perturbation_key in self.file_columns

    def _check_columns(self):
        unknown = sorted(set(self.rules) - set(self.category_keys))
        if unknown:
            raise InputError(f"{self.label}: covariates names {unknown}, which the model does not read; its "
                             f"covariate and batch columns are {self.category_keys}.")
        if self.query is None:
            keys = [self.perturbation_key] + ([self.dosage_key] if self.dosage_key else [])
            for key in [k for k in keys if k not in self.file_columns]:
                raise InputError(f"{self.label}: obs has no column '{key}', which the model reads (columns: "
                                 f"{sorted(self.file_columns)[:20]}).")
        for key in self.category_keys:
            if key not in self.file_columns and not isinstance(self.rules.get(key), str):
                where = f"the query's covariates.{key}" if self.query else "cpa.covariate_keys"
                raise InputError(f"{self.label}: obs has no column '{key}', which the model reads (columns: "
                                 f"{sorted(self.file_columns)[:20]}). Add it, or give every cell one category "
                                 f"with {where}: <category> (known: {self.vocabulary.categories(key)[:SHOWN]}).")

    def _columns_to_read(self):
        keys = [self.perturbation_key] + ([self.dosage_key] if self.dosage_key else []) + self.category_keys
        return [key for key in dict.fromkeys(keys) if key in self.file_columns and not isinstance(self.rules.get(key),
                                                                                                   str)]

    def read_obs(self, columns=(), start=0, stop=None, names=True):
        """Rows start:stop of the file's obs columns ``columns`` (those it has)."""
        return h5ad_rows.read_obs(self.path, [c for c in dict.fromkeys(columns) if c in self.file_columns], start,
                                  stop, names)

    def obs(self, start=0, stop=None, names=True):
        """Rows start:stop of obs with the model's columns, as the model reads them (the
        rules above applied); InputError for a value the model cannot read."""
        frame = h5ad_rows.read_obs(self.path, self._columns_to_read(), start, stop, names)
        setup = self.vocabulary.setup
        if not self.has_perturbations:
            frame[self.perturbation_key] = setup["control_group"]
        if self.dosage_key and self.dosage_key not in frame:
            perturbed = frame[self.perturbation_key].astype(str).str.strip() != setup["control_group"]
            if perturbed.any():
                raise InputError(f"{self.label}: obs['{self.perturbation_key}'] has perturbed cells (e.g. "
                                 f"'{frame[self.perturbation_key][perturbed].iloc[0]}') but the file has no dose "
                                 f"column '{self.dosage_key}', which the model reads; add it.")
            frame[self.dosage_key] = "0"
        for key in self.category_keys:
            rule = self.rules.get(key)
            if isinstance(rule, str):
                frame[key] = rule
            elif rule:
                values = frame[key].astype(str)
                frame[key] = values.map(lambda value: rule.get(value, value))
            self._check_categories(frame[key], key)
        return frame

    def _check_categories(self, column, key):
        known = set(self.vocabulary.categories(key))
        values = pd.unique(column.astype(str).to_numpy())
        unseen = [value for value in values if value not in known]
        if not unseen:
            return
        n_cells = int((column.astype(str) == unseen[0]).sum())
        hint = (f"Map it to a category the model knows in the query's entry, covariates: {{{key}: {{'{unseen[0]}': "
                "<known category>}}: the full latent and the counterfactuals then use that category's embedding; "
                "the basal latent does not depend on it." if self.query else
                "The training file must hold only categories the model was trained on.")
        raise InputError(f"{self.label}: obs['{key}'] has the value '{unseen[0]}' ({n_cells} cells in these rows"
                         f"{f'; {len(unseen) - 1} more unknown values' if len(unseen) > 1 else ''}) that the model "
                         f"was not trained on (known: {sorted(known)[:SHOWN]}). {hint}")

    def check_drugs(self, frame):
        """InputError naming a drug of ``frame`` (from ``obs``) the model does not know."""
        parsed, _ = parse_obs(frame, self.perturbation_key, self.dosage_key, self.vocabulary.control_group)
        known = set(self.vocabulary.drugs)
        unknown = sorted({drug for pairs in parsed for drug, _ in pairs} - known)
        if unknown:
            raise InputError(f"{self.label}: obs['{self.perturbation_key}'] names the drug(s) {unknown[:SHOWN]}, "
                             f"which the model was not trained on (known: {sorted(known)[:SHOWN]}); it cannot "
                             "embed them. Drop those cells, or label them as controls only if they are.")

    def control_mask(self, frame):
        """Per cell of ``frame`` (from ``obs``): whether it is a control cell (the model's
        control value of the perturbation column; every cell where the file has none)."""
        return np.asarray(frame[self.perturbation_key].astype(str).str.strip() == self.vocabulary.control_group)

    # --- matrix ---------------------------------------------------------------------------
    def blocks(self, start, stop, rows_per_block, wanted=None):
        """The matrix rows start:stop in blocks (``h5ad_rows.row_blocks``) with the model's
        genes as columns."""
        for block in h5ad_rows.row_blocks(self.path, start, stop, rows_per_block, self.layer, wanted=wanted):
            yield self.alignment.block(block)
