"""Task cpa_merge: the shards' latents into one latents.h5ad, preallocated on disk and
filled shard by shard."""

from __future__ import annotations

import anndata as ad
import h5py
import numpy as np
import pandas as pd

from ...atomic import atomic_open, atomic_path
from ...errors import InputError
from .. import h5ad_rows

LATENT_OBSM = {"z_basal": "X_cpa_basal", "z": "X_cpa", "z_corrected": "X_cpa_corrected"}


def open_shard(path):
    """np.load of a shard file written by infer_shard, or InputError if it is damaged."""
    try:
        return np.load(path)
    except (OSError, ValueError, EOFError) as err:
        raise InputError(f"shard file '{path}' is empty or damaged ({err}); delete it and rerun to "
                         "infer the shard again.") from None


def merge_latents(adata_path, shard_paths, out_path, about=None, times_path=None):
    """Write latents.h5ad: the input's obs (copied on disk) and the three latent matrices,
    preallocated and filled shard by shard; no X. ``uns["cpa_inference"]`` records the
    source, the cells and the shards, with ``about`` ({name: value}: for a query its name
    and how its genes were matched). Each shard task's seconds go to ``times_path`` (a
    TSV: shard, first row, rows, seconds), not into the latents, whose bytes must not
    depend on the machine's speed (a rerun gives the same file)."""
    from anndata.io import write_elem

    total = h5ad_rows.n_obs(adata_path)
    seconds = []
    with atomic_path(out_path) as tmp:
        ad.AnnData(obs=pd.DataFrame(index=pd.Index([], dtype=str))).write_h5ad(tmp)
        with h5py.File(tmp, "r+") as out, h5ad_rows.open_h5ad(adata_path) as source:
            del out["obs"]
            source.copy(source["obs"], out, "obs")
            datasets = {}
            filled = 0
            for path in shard_paths:
                with open_shard(path) as shard:
                    start, stop = int(shard["start"]), int(shard["stop"])
                    if start != filled:
                        raise InputError(f"shard '{path}' starts at row {start}, expected {filled}; "
                                         "delete the shard files and rerun.")
                    for key, name in LATENT_OBSM.items():
                        if name not in datasets:
                            datasets[name] = out["obsm"].create_dataset(
                                name, shape=(total, shard[key].shape[1]), dtype="float32")
                            datasets[name].attrs["encoding-type"] = "array"
                            datasets[name].attrs["encoding-version"] = "0.2.0"
                        datasets[name][start:stop] = shard[key]
                    seconds.append((start, stop - start,
                                    float(shard["seconds"]) if "seconds" in shard.files else float("nan")))
                    filled = stop
            if filled != total:
                raise InputError(f"the shards cover rows 0-{filled} of {total}; rerun the missing shards.")
            write_elem(out["uns"], "cpa_inference",
                       {"source": str(adata_path), "cells": total, "shards": len(seconds), **(about or {})})
    if times_path is not None:
        with atomic_open(times_path, "w") as handle:
            handle.write("shard\tfirst_row\trows\tseconds\n")
            handle.writelines(f"{i}\t{start}\t{rows}\t{value:.3f}\n" for i, (start, rows, value) in enumerate(seconds))
