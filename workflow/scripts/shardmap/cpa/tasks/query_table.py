"""Task cpa_query_table: one row per query data set, from its latents file's record and
its inference tasks' seconds (both written by ``merge.merge_latents``)."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np

from ...atomic import atomic_open

COLUMNS = ["query", "file", "cells", "control_cells", "genes_in_file", "genes_matched", "genes_dropped",
           "genes_zeroed", "covariates", "shards", "task_seconds", "slowest_task_seconds", "cells_per_second"]


def query_row(latents_path, times_path):
    """The table's row for one query: its latents.h5ad's record and its tasks' seconds."""
    from anndata.io import read_elem

    with h5py.File(latents_path, "r") as handle:
        record = read_elem(handle["uns"]["cpa_inference"])
    about = record.get("query", {})
    seconds = np.loadtxt(times_path, delimiter="\t", skiprows=1, usecols=3, ndmin=1)
    total = float(seconds.sum())
    return {"query": about.get("name", Path(latents_path).parent.name), "file": record["source"],
            "cells": int(record["cells"]), "control_cells": about.get("control_cells", ""),
            "genes_in_file": about.get("genes_in_file", ""), "genes_matched": about.get("genes_matched", ""),
            "genes_dropped": about.get("genes_dropped", ""), "genes_zeroed": about.get("genes_zeroed", ""),
            "covariates": about.get("covariates", ""), "shards": int(record["shards"]),
            "task_seconds": f"{total:.2f}", "slowest_task_seconds": f"{seconds.max():.2f}",
            # per task: a shard's cells over its task's seconds, pooled over the shards
            "cells_per_second": f"{int(record['cells']) / total:.0f}" if total > 0 else ""}


def write_query_table(latents_paths, times_paths, out_path):
    """queries.tsv: ``query_row`` of every query's latents and times files."""
    rows = [query_row(latents, times) for latents, times in zip(latents_paths, times_paths)]
    with atomic_open(out_path, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return rows
