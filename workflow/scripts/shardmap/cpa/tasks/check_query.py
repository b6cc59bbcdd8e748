"""Task cpa_query_check: a query data set (an entry of cpa.query) checked against what
the model knows, before any task runs the model on it."""

from __future__ import annotations

import logging
from pathlib import Path

from ...atomic import atomic_open
from ...errors import InputError
from .. import h5ad_rows
from ..model_input import ModelInput, query_label
from ..vocabulary import ModelVocabulary
from ..values import (check_values, duplicate_entry_message, empty_cells, empty_cells_message,
                      first_duplicate_entry)

log = logging.getLogger(__name__)


def query_summary(query, vocabulary, rows_per_chunk=20_000):
    """Check the query data set of cpa.query entry ``query`` against ``vocabulary``
    (``vocabulary.ModelVocabulary``: a saved model's, or the training file's for a model
    about to be trained) and return what was found: {name, cells, control_cells,
    genes_in_file, genes_matched, genes_dropped, genes_zeroed, covariates}.

    Stops with a message naming the query for: a missing or unreadable file, no cells,
    model genes it lacks (unless missing_genes: zero), a model gene named twice, a
    covariate column or category the model cannot read (after the entry's mapping),
    drugs the model does not know, perturbed cells without a dose column, values a
    count likelihood cannot read (not finite, negative, not integers, a cell without
    counts in the model's genes) and a gene stored twice for a cell. The matrix is read
    in chunks of rows, so memory is bounded by a chunk.
    """
    path = query["adata"]
    label = query_label(query, path)
    if not Path(path).exists():
        raise InputError(f"{label} does not exist; fix the path of cpa.query '{query['name']}'.")
    total = h5ad_rows.n_obs(path)
    if total == 0:
        raise InputError(f"{label} has no cells; remove the entry or point it at a file with cells.")
    source = ModelInput(vocabulary, path, query)
    obs = source.obs()
    source.check_drugs(obs)
    names = h5ad_rows.read_obs(path, []).index
    n_empty, first_empty = 0, None
    for start in range(0, total, rows_per_chunk):
        stop = min(start + rows_per_chunk, total)
        block = h5ad_rows.read_matrix(path, start, stop, source.layer)
        duplicate = first_duplicate_entry(block)
        if duplicate is not None:
            raise InputError(duplicate_entry_message(source.where, names[start + duplicate[0]], duplicate[1]))
        aligned = source.alignment.matrix(block, copy=False)
        check_values(aligned, vocabulary.count_data, where=source.where, obs_names=names[start:stop],
                     empty_cells_allowed=True, gene_names=vocabulary.var_names)
        n, first = empty_cells(aligned, names, start)
        n_empty, first_empty = n_empty + n, first_empty if first_empty is not None else first
    if vocabulary.count_data and n_empty:
        raise InputError(empty_cells_message(f"{source.where} (in the model's genes)", n_empty, first_empty))
    rules = "; ".join(f"{key}: {rule}" for key, rule in sorted(source.rules.items()))
    return {"name": query["name"], "cells": total, "control_cells": int(source.control_mask(obs).sum()),
            **source.alignment.summary(), "perturbation_column": source.has_perturbations,
            "covariates": rules}


def vocabulary_of(model_file=None, training_file=None, cfg=None):
    """The vocabulary of the saved model ``model_file`` (model.pt), or else of the model to
    be trained on ``training_file`` with config section ``cfg`` (read without torch)."""
    if model_file is not None:
        from ..inference_model import InferenceModel

        return InferenceModel.load(Path(model_file).parent).vocabulary
    return ModelVocabulary.from_training_file(training_file, cfg)


def check_query(query, vocabulary, out_path):
    """Check the query (``query_summary``) and write the summary as a two-column TSV."""
    summary = query_summary(query, vocabulary)
    with atomic_open(out_path, "w") as handle:
        handle.write("".join(f"{key}\t{value}\n" for key, value in summary.items()))
    log.info("%s checked against %s: %s", query_label(query, query["adata"]), vocabulary.source, summary)
    return summary


def read_summary(path):
    """The summary TSV written by ``check_query`` as {key: str}."""
    with open(path, encoding="utf-8") as handle:
        return dict(line.rstrip("\n").split("\t", 1) for line in handle if line.strip())
