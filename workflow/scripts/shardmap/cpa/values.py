"""Checks of an expression matrix's values, in chunks of rows (no torch needed, so the
workflow's input check runs in a light process)."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ..errors import InputError

COUNT_CHECK_ROWS = 20_000


def check_values(matrix, count_data, where="X", obs_names=None, rows_per_chunk=COUNT_CHECK_ROWS):
    """Raise InputError naming the first bad cell unless ``matrix`` is finite and, for a
    count likelihood, holds non-negative integers (checked in chunks of rows; sparse
    chunks are checked on their stored values only)."""
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
                raise InputError(f"{where} holds {what} (first at cell '{cell}', gene column {column}); "
                                 f"{fix}.")
