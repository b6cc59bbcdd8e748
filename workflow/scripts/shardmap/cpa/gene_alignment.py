"""A file's genes matched to a trained model's genes, by name.

A model reads the genes it was trained on, in its order. A query data set (a lab's own
cells, an atlas) names its genes in another order and holds others besides. The rule:

* genes of the file that the model does not know are dropped;
* a model gene that the file lacks stops the run, naming how many and the first few,
  unless the user asks for ``missing_genes: zero``, which reads it as 0 in every cell
  (this changes the input the model sees, and says so);
* a model gene that the file names twice stops the run: which column is meant cannot
  be guessed.

The alignment is applied to blocks of rows as they are read (``h5ad_rows.RowBlock``):
CSR blocks have their gene indices renumbered (a dropped gene's entry becomes a stored 0,
which adds nothing to any sum over the row, so no entry is moved), dense blocks are
gathered into the model's columns. A file whose genes are the model's,
in its order, is passed through untouched. NumPy only.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .h5ad_rows import RowBlock

MISSING_GENES = ("refuse", "zero")
SHOWN = 5  # genes named in a message


class GeneAlignment:
    """How the columns of a file map onto a model's genes.

    Parameters
    ----------
    model_genes : the model's genes, in its order.
    file_genes : the file's gene names, one per column (``var_names`` or a var column).
    where : how messages name the file (e.g. "cpa.query 'lab' ('lab.h5ad')").
    missing_genes : "refuse" (default) or "zero" (model genes the file lacks read as 0).
    names : how messages name the file's gene names ("var_names" or "var['symbol']").
    """

    def __init__(self, model_genes, file_genes, where, missing_genes="refuse", names="var_names"):
        if missing_genes not in MISSING_GENES:
            raise InputError(f"{where}: missing_genes '{missing_genes}' is not one of {list(MISSING_GENES)}.")
        model_genes = np.asarray(model_genes).astype(str)
        file_genes = np.asarray(file_genes).astype(str)
        position = {gene: i for i, gene in enumerate(model_genes)}
        self.n_model = model_genes.size
        self.n_file = file_genes.size
        # The model's column of each file column; -1 where the model does not know the gene.
        self.model_column = np.full(self.n_file, -1, dtype=np.int64)
        first_column = {}
        for column, gene in enumerate(file_genes):
            i = position.get(gene)
            if i is None:
                continue
            if i in first_column:
                raise InputError(
                    f"{where}: the model's gene '{gene}' is named twice in the file's {names} (columns "
                    f"{first_column[i]} and {column}); the model reads each gene once. Drop or rename the "
                    "duplicate, or match genes by another var column (gene_key).")
            first_column[i] = column
            self.model_column[column] = i
        present = np.zeros(self.n_model, dtype=bool)
        present[self.model_column[self.model_column >= 0]] = True
        self.missing = model_genes[~present]
        self.n_matched = int(present.sum())
        self.n_dropped = int((self.model_column < 0).sum())
        if self.n_matched == 0:
            raise InputError(
                f"{where}: none of the model's {self.n_model} genes is among the file's {self.n_file} {names} "
                f"(the model's first: {list(model_genes[:3])}; the file's: {list(file_genes[:3])}). If the "
                "file names genes another way (symbols against Ensembl ids), match by the var column that "
                "holds the model's kind of name (gene_key).")
        if self.missing.size and missing_genes != "zero":
            raise InputError(
                f"{where}: {self.missing.size} of the model's {self.n_model} genes are not in the file's {names} "
                f"({', '.join(self.missing[:SHOWN])}{', ...' if self.missing.size > SHOWN else ''}). The model "
                "reads every gene it was trained on. Add them to the file, match genes by another var column "
                "(gene_key), or set missing_genes: zero to read them as 0 counts in every cell (this changes "
                "the input the model sees).")
        self.identity = self.n_file == self.n_model and bool((self.model_column == np.arange(self.n_model)).all())
        self._kept = np.flatnonzero(self.model_column >= 0)
        self._lookups = {}
        self._columns = self._dropped = None

    def summary(self):
        """{genes_in_file, genes_matched, genes_dropped, genes_zeroed}: what the alignment did."""
        return {"genes_in_file": self.n_file, "genes_matched": self.n_matched, "genes_dropped": self.n_dropped,
                "genes_zeroed": int(self.missing.size)}

    def block(self, block):
        """``block`` (rows of the file) with the model's columns: a new RowBlock unless
        the file's genes are the model's, in order, valid until the next call (its gene
        indices are a buffer kept between calls). A CSR block's values of dropped genes are
        set to 0 in place."""
        if self.identity:
            return block
        if block.dense is not None:
            dense = np.zeros((block.n_rows, self.n_model), dtype=block.dense.dtype)
            dense[:, self.model_column[self._kept]] = block.dense[:, self._kept]
            return RowBlock(block.start, block.stop, dense=dense)
        index_type = block.indices.dtype if block.indices.dtype in (np.int32, np.int64) else np.int64
        # Into a buffer kept from block to block (fresh memory for every block cost a page
        # fault per 4 KB): the returned block is valid until the next call, as the reader's.
        n = block.indices.size
        if self._columns is None or self._columns.dtype != index_type or self._columns.size < n:
            self._columns = np.empty(n, dtype=index_type)
            self._dropped = np.empty(n, dtype=bool)
        # mode "clip" writes straight into the buffer ("raise" buffers the output again); the
        # indices are the file's columns, all in range, so nothing is clipped.
        columns = np.take(self._lookup(index_type), block.indices, out=self._columns[:n], mode="clip")
        if not self.n_dropped:
            return RowBlock(block.start, block.stop, indptr=block.indptr, indices=columns, data=block.data)
        # A dropped gene's entry stays, as a 0 in the model's first column: it adds exactly
        # nothing to a sum over the row (the first layer, the library size), and removing the
        # entries instead (a cumulative count per block for the rows' new bounds) took three
        # times as long as the rest of the matching (docs/benchmarks.md, "Query data sets").
        # The values are zeroed in place: a block's arrays are the reader's buffers, refilled
        # by the next read (h5ad_rows.row_blocks), so nothing else sees them.
        np.copyto(block.data, 0, where=np.less(columns, 0, out=self._dropped[:n]))
        np.maximum(columns, 0, out=columns)
        return RowBlock(block.start, block.stop, indptr=block.indptr, indices=columns, data=block.data)

    def _lookup(self, index_type):
        """The model's column of each file column as ``index_type`` (kept per type)."""
        cached = self._lookups.get(np.dtype(index_type))
        if cached is None:
            cached = self._lookups[np.dtype(index_type)] = self.model_column.astype(index_type)
        return cached

    def matrix(self, matrix, copy=True):
        """A scipy CSR matrix or dense array with the file's columns, with the model's
        (``copy`` False: a CSR matrix's values of dropped genes are zeroed in place, and the
        result's gene indices are valid until the next call, as ``block``'s)."""
        from scipy import sparse

        if self.identity:
            return matrix
        if sparse.issparse(matrix):
            matrix = matrix.tocsr()
            aligned = self.block(RowBlock(0, matrix.shape[0], indptr=matrix.indptr.astype(np.int64),
                                          indices=matrix.indices,
                                          data=matrix.data.copy() if copy else matrix.data))
            result = aligned.to_scipy(self.n_model)  # the dropped genes' zeros stored in its first column
            if copy:
                result.indices = result.indices.copy()
            return result
        return self.block(RowBlock(0, matrix.shape[0], dense=np.asarray(matrix))).dense
