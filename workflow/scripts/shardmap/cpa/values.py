"""Checks of an expression matrix's values, in chunks of rows (no torch needed, so the
workflow's input check runs in a light process)."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ..errors import InputError

COUNT_CHECK_ROWS = 20_000


def empty_cells(matrix, obs_names=None, start=0):
    """(number of cells whose counts are all 0, name of the first) of a block of rows that
    starts at row ``start`` of the file."""
    totals = np.asarray(matrix.sum(axis=1)).ravel()
    empty = np.flatnonzero(totals == 0)
    if empty.size == 0:
        return 0, None
    return int(empty.size), (obs_names[start + empty[0]] if obs_names is not None else start + int(empty[0]))


def empty_cells_message(where, n_empty, first):
    return (f"{where} has {n_empty} cell(s) whose counts are all 0 (the first is '{first}'); a count "
            "likelihood (nb, zinb) models counts given each cell's library size, which must be > 0, "
            "and such cells would lower the observed means and give all-zero predictions. Remove them "
            "first, e.g. scanpy.pp.filter_cells(adata, min_counts=1).")


def check_values(matrix, count_data, where="X", obs_names=None, rows_per_chunk=COUNT_CHECK_ROWS,
                 empty_cells_allowed=False, gene_names=None):
    """Raise InputError naming the first bad cell unless ``matrix`` is finite and, for a
    count likelihood, holds non-negative integers and no cell without counts (checked in
    chunks of rows; sparse chunks are checked on their stored values only). With
    ``empty_cells_allowed`` the caller counts cells without counts itself (over a file
    read in blocks, to give the total). ``gene_names`` (one per column) names the gene in
    messages, for a matrix whose columns are not the file's (a query's genes matched to a
    model's)."""
    fix_counts = ("a count likelihood (nb, zinb) needs raw counts: point `layer` at the counts, or "
                  "use recon_loss: gauss for log-normalised data")
    for start in range(0, matrix.shape[0], rows_per_chunk):
        block = matrix[start:start + rows_per_chunk]
        if sparse.issparse(block):
            block = block.tocoo()
            values, rows, columns = block.data, block.row, block.col
        else:
            block = np.asarray(block)
            values = block
        problems = [("NaN or Inf", ~np.isfinite(values), "remove or fix those cells")]
        if count_data:
            problems += [("negative values", values < 0, fix_counts),
                         ("non-integer values", np.isfinite(values) & (values != np.round(values)), fix_counts)]
        for what, bad, fix in problems:
            if bad.any():
                if sparse.issparse(matrix):
                    first = int(np.flatnonzero(bad)[0])
                    row, column = rows[first], columns[first]
                else:
                    row, column = np.argwhere(bad)[0]
                cell = obs_names[start + row] if obs_names is not None else start + row
                gene = f"gene column {column}" if gene_names is None else f"gene '{gene_names[column]}'"
                raise InputError(f"{where} holds {what} (first at cell '{cell}', {gene}); {fix}.")
    if count_data and not empty_cells_allowed:
        found = [empty_cells(matrix[start:start + rows_per_chunk], obs_names, start)
                 for start in range(0, matrix.shape[0], rows_per_chunk)]
        n_empty = sum(n for n, _ in found)
        if n_empty:
            raise InputError(empty_cells_message(where, n_empty, next(first for n, first in found if n)))


def first_duplicate_entry(matrix):
    """(row, gene column) of the first value a CSR block stores twice for one cell and
    gene, or None. Such a matrix means the sum of the two values; the inference tasks,
    which read the stored values as they are (``inference_model``), would see two genes."""
    if not sparse.issparse(matrix) or matrix.nnz == 0:
        return None
    matrix = sparse.csr_matrix(matrix)
    # Most files store each row's genes in increasing order: then no gene repeats, and one
    # vectorised pass shows it (the order between rows does not matter).
    increasing = matrix.indices[1:] > matrix.indices[:-1]  # one boolean per value, no wider copy
    row_starts = matrix.indptr[1:-1]
    increasing[row_starts[(row_starts > 0) & (row_starts < matrix.nnz)] - 1] = True
    if increasing.all():
        return None
    ordered = matrix.copy()
    ordered.sort_indices()
    rows = np.repeat(np.arange(ordered.shape[0]), np.diff(ordered.indptr))
    repeated = np.flatnonzero((np.diff(ordered.indices) == 0) & (rows[1:] == rows[:-1]))
    if repeated.size == 0:
        return None
    return int(rows[repeated[0]]), int(ordered.indices[repeated[0]])


def duplicate_entry_message(where, cell, column):
    return (f"{where} stores gene column {column} of cell '{cell}' twice (a CSR matrix with duplicate "
            "entries, which means their sum); sum them first: adata.X.sum_duplicates() (or the layer's), "
            "then write the file again.")
