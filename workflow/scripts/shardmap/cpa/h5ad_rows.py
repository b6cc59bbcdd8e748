"""Read row ranges of an .h5ad file without loading the rest of it.

anndata's backed mode keeps ``obs`` of the whole file in memory; a task that should
hold only its shard reads the matrix rows and the few obs columns it needs directly
with h5py, following anndata's on-disk encoding (CSR or dense matrices; categorical,
string and numeric obs columns). ``row_blocks`` streams a shard's matrix in blocks of
rows through buffers allocated once, for the inference tasks; only ``read_rows``, which
builds an AnnData, imports anndata.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

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


def var_column(path, key):
    """The var column ``key`` as strings (gene names held beside var_names, e.g. symbols)."""
    with open_h5ad(path) as handle:
        var = handle["var"]
        if key not in var:
            columns = [name for name in var if name != var.attrs["_index"]]
            raise InputError(f"'{path}': var has no column '{key}' (columns: {columns}); fix gene_key.")
        values = _read_column(var[key], 0, None)
        return pd.Index([None if value is None else str(value) for value in values])


def obs_columns(path):
    """The names of the file's obs columns."""
    with open_h5ad(path) as handle:
        obs = handle["obs"]
        return [name for name in obs if name != obs.attrs["_index"]]


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


def distinct_values(path, column):
    """The values that the cells of obs column ``column`` take, as strings (a categorical
    column by its codes in use, so a category that no cell has left is not counted)."""
    with open_h5ad(path) as handle:
        obs = handle["obs"]
        if column not in obs:
            raise InputError(f"'{path}': obs has no column '{column}' (columns: "
                             f"{list(obs.attrs.get('column-order', []))}); fix the key in the config.")
        element = obs[column]
        if isinstance(element, h5py.Group) and element.attrs.get("encoding-type", "") == "categorical":
            codes = np.unique(element["codes"][:])
            return list(_decode(element["categories"][:][codes[codes >= 0]]))
        values = _read_column(element, 0, None)
        return [str(value) for value in pd.unique(np.asarray(values, dtype=object)) if value is not None]


def read_obs(path, columns, start=0, stop=None, names=True):
    """Rows start:stop of the named obs columns as a DataFrame indexed by the obs names
    (with ``names`` False by the row number in the file, which skips decoding them)."""
    with open_h5ad(path) as handle:
        obs = handle["obs"]
        stop = obs[obs.attrs["_index"]].shape[0] if stop is None else stop
        index = _decode(obs[obs.attrs["_index"]][start:stop]) if names else np.arange(start, stop)
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


def _check_csr(element, path):
    """Raise InputError unless the sparse matrix ``element`` is stored by rows (CSR)."""
    encoding = element.attrs.get("encoding-type", "")
    if encoding != "csr_matrix":
        raise InputError(f"'{path}': the matrix is stored as {encoding}; row shards need CSR or "
                         "dense storage (convert with adata.X = adata.X.tocsr() and write again).")


def read_matrix(path, start, stop, layer=None):
    """Rows start:stop of X (or a layer): a CSR matrix if stored sparse, else a dense array."""
    with open_h5ad(path) as handle:
        element = _matrix_element(handle, path, layer)
        if isinstance(element, h5py.Dataset):
            return np.asarray(element[start:stop])
        _check_csr(element, path)
        indptr = element["indptr"][start:stop + 1].astype(np.int64)
        data = element["data"][indptr[0]:indptr[-1]]
        indices = element["indices"][indptr[0]:indptr[-1]]
        shape = (stop - start, int(element.attrs["shape"][1]))
        return sparse.csr_matrix((data, indices, indptr - indptr[0]), shape=shape)


def read_rows(path, start, stop, columns, layer=None):
    """An in-memory AnnData of rows start:stop with the named obs columns."""
    import anndata as ad

    matrix = read_matrix(path, start, stop, layer)
    adata = ad.AnnData(X=matrix, obs=read_obs(path, columns, start, stop),
                       var=pd.DataFrame(index=var_names(path)))
    if layer is not None:
        adata.layers[layer] = matrix
    return adata


@dataclass
class RowBlock:
    """Rows ``start:stop`` of a matrix: CSR arrays (``indptr`` from 0, ``indices``,
    ``data``) when it is stored sparse, else ``dense``. The arrays are views of the
    reader's buffers, valid until the next block is read."""

    start: int
    stop: int
    indptr: np.ndarray | None = None
    indices: np.ndarray | None = None
    data: np.ndarray | None = None
    dense: np.ndarray | None = None

    @property
    def n_rows(self):
        return self.stop - self.start

    def to_scipy(self, n_columns):
        """The block as a scipy matrix (CSR, sharing the arrays) or the dense array."""
        if self.dense is not None:
            return self.dense
        return sparse.csr_matrix((self.data, self.indices, self.indptr), shape=(self.n_rows, n_columns))


def row_blocks(path, start, stop, rows_per_block, layer=None, read_ahead=True, wanted=None):
    """Yield the matrix rows start:stop as RowBlocks of at most ``rows_per_block`` rows.

    Each block is read with h5py straight into buffers allocated once for the largest
    block (fresh arrays per block would cost a page fault per 4 KB, which made reading
    slower than the model). With ``read_ahead`` a thread reads the next block into a
    second set of buffers while the caller works on this one (torch releases the GIL while
    it computes, so the read overlaps with the model). Either way a block's arrays stay
    valid until the caller asks for the next block. ``wanted`` (a boolean per row of
    start:stop) skips the blocks without a wanted row: they are not read.
    """
    blocks = _row_blocks(path, start, stop, rows_per_block, layer, 2 if read_ahead else 1, wanted)
    if not read_ahead:
        yield from blocks
        return
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(next, blocks, None)
        try:
            while (block := pending.result()) is not None:
                pending = reader.submit(next, blocks, None)
                yield block
        finally:
            pending.cancel() or pending.exception()  # wait for a read in flight before closing
            blocks.close()


def _row_blocks(path, start, stop, rows_per_block, layer, n_buffers, wanted):
    with open_h5ad(path) as handle:
        element = _matrix_element(handle, path, layer)
        if isinstance(element, h5py.Dataset):
            shape = (min(rows_per_block, stop - start),) + element.shape[1:]
            buffers = [np.empty(shape, dtype=element.dtype) for _ in range(n_buffers)]
            n_read = 0  # buffers alternate between blocks read, not blocks skipped
            for first in range(start, stop, rows_per_block):
                last = min(first + rows_per_block, stop)
                if wanted is not None and not wanted[first - start:last - start].any():
                    continue
                view = buffers[n_read % n_buffers][:last - first]
                n_read += 1
                element.read_direct(view, np.s_[first:last])
                yield RowBlock(first, last, dense=view)
            return
        _check_csr(element, path)
        indptr = element["indptr"][start:stop + 1].astype(np.int64)
        bounds = list(range(0, stop - start, rows_per_block)) + [stop - start]
        largest = max((int(indptr[b] - indptr[a]) for a, b in zip(bounds[:-1], bounds[1:])), default=0)
        buffers = [(np.empty(largest, dtype=element["data"].dtype), np.empty(largest, dtype=element["indices"].dtype))
                   for _ in range(n_buffers)]
        n_read = 0
        for a, b in zip(bounds[:-1], bounds[1:]):
            if wanted is not None and not wanted[a:b].any():
                continue
            data, indices = buffers[n_read % n_buffers]
            n_read += 1
            lo, hi = int(indptr[a]), int(indptr[b])
            if hi > lo:
                element["data"].read_direct(data, np.s_[lo:hi], np.s_[0:hi - lo])
                element["indices"].read_direct(indices, np.s_[lo:hi], np.s_[0:hi - lo])
            yield RowBlock(start + a, start + b, indptr=indptr[a:b + 1] - lo, indices=indices[:hi - lo],
                           data=data[:hi - lo])
