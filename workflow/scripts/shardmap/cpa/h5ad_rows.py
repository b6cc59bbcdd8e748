"""Read row ranges of an .h5ad file without loading the rest of it.

anndata's backed mode keeps ``obs`` of the whole file in memory; a task that should
hold only its shard reads the matrix rows and the few obs columns it needs directly
with h5py, following anndata's on-disk encoding (CSR or dense matrices; categorical,
string and numeric obs columns).
"""

from __future__ import annotations

import anndata as ad
import h5py
import numpy as np
import pandas as pd
from scipy import sparse

from ..errors import InputError


def _decode(values):
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values], dtype=object)


def open_h5ad(path):
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise InputError(f"'{path}' is not a readable .h5ad (HDF5) file ({err}); write it with "
                         "anndata's write_h5ad.") from err


def n_obs(path):
    with open_h5ad(path) as handle:
        obs = handle["obs"]
        return int(obs[obs.attrs["_index"]].shape[0])


def var_names(path):
    with open_h5ad(path) as handle:
        var = handle["var"]
        return pd.Index(_decode(var[var.attrs["_index"]][:]))


def _read_column(element, start, stop):
    if isinstance(element, h5py.Group):
        encoding = element.attrs.get("encoding-type", "")
        if encoding == "categorical":
            categories = _decode(element["categories"][:])
            return pd.Categorical.from_codes(element["codes"][start:stop], categories=categories)
        if encoding in ("nullable-integer", "nullable-boolean", "nullable-string-array"):
            values = element["values"][start:stop]
            values = _decode(values) if values.dtype.kind in "SO" else values.astype(object)
            values[element["mask"][start:stop].astype(bool)] = None
            return values
        raise InputError(f"obs column '{element.name}' is stored as '{encoding}', which row shards "
                         "cannot read; convert it to a categorical or string column.")
    values = element[start:stop]
    if values.dtype.kind in "SO":
        return _decode(values)
    return values


def read_obs(path, columns, start=0, stop=None):
    """Rows start:stop of the named obs columns (and the obs names) as a DataFrame."""
    with open_h5ad(path) as handle:
        obs = handle["obs"]
        stop = obs[obs.attrs["_index"]].shape[0] if stop is None else stop
        index = _decode(obs[obs.attrs["_index"]][start:stop])
        data = {}
        for column in columns:
            if column not in obs:
                raise InputError(f"'{path}': obs has no column '{column}' (columns: "
                                 f"{list(obs.attrs.get('column-order', []))}); fix the key in the config.")
            data[column] = _read_column(obs[column], start, stop)
    return pd.DataFrame(data, index=pd.Index(index))


def _matrix_element(handle, path, layer):
    if layer is None:
        if "X" not in handle:
            raise InputError(f"'{path}' has no X; set cpa.layer to the layer holding counts.")
        return handle["X"]
    if "layers" not in handle or layer not in handle["layers"]:
        raise InputError(f"'{path}' has no layer '{layer}' (cpa.layer).")
    return handle["layers"][layer]


def read_matrix(path, start, stop, layer=None):
    """Rows start:stop of X (or a layer): a CSR matrix if stored sparse, else a dense array."""
    with open_h5ad(path) as handle:
        element = _matrix_element(handle, path, layer)
        if isinstance(element, h5py.Dataset):
            return np.asarray(element[start:stop])
        encoding = element.attrs.get("encoding-type", "")
        if encoding != "csr_matrix":
            raise InputError(f"'{path}': the matrix is stored as {encoding}; row shards need CSR or "
                             "dense storage (convert with adata.X = adata.X.tocsr() and write again).")
        indptr = element["indptr"][start:stop + 1].astype(np.int64)
        data = element["data"][indptr[0]:indptr[-1]]
        indices = element["indices"][indptr[0]:indptr[-1]]
        shape = (stop - start, int(element.attrs["shape"][1]))
        return sparse.csr_matrix((data, indices, indptr - indptr[0]), shape=shape)


def read_rows(path, start, stop, columns, layer=None):
    """An in-memory AnnData of rows start:stop with the named obs columns."""
    matrix = read_matrix(path, start, stop, layer)
    adata = ad.AnnData(X=matrix, obs=read_obs(path, columns, start, stop),
                       var=pd.DataFrame(index=var_names(path)))
    if layer is not None:
        adata.layers[layer] = matrix
    return adata
