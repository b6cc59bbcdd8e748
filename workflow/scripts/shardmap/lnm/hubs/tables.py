"""Tab-separated tables of the lesion arm's reports (hub bias, null summary, null lesions)."""

from __future__ import annotations

import csv

import numpy as np

from ...atomic import atomic_open


def write_table(path, rows, columns):
    """Rows of dicts as a TSV, atomically: floats with 6 significant digits, NaN as NA."""
    def cell(value):
        if isinstance(value, float):
            return "NA" if np.isnan(value) else f"{value:.6g}"
        return value

    with atomic_open(path, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: cell(row[key]) for key in columns} for row in rows)
