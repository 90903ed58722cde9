"""One home for row-block iteration over any cells x genes matrix.

:func:`iter_row_blocks` streams ``(start, stop, block)`` over numpy arrays, scipy
sparse matrices/arrays (CSR row blocks are zero-copy views; CSC/COO are converted to
CSR once), dask arrays (each dask chunk is computed exactly once) and backed data (h5py
datasets, anndata backed sparse datasets: only the block's rows are read). Peak memory
is one block, whatever the number of cells.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from scipy import sparse

__all__ = ["check_block_rows", "default_block_rows", "is_backed_sparse", "iter_row_blocks"]

#: default rows per block of a sparse matrix
SPARSE_BLOCK_ROWS = 4096
#: default bytes per block of a dense matrix (float32)
DENSE_BLOCK_BYTES = 256 * 2**20


def _is_dask(x: Any) -> bool:
    return type(x).__module__.startswith("dask.")


def is_backed_sparse(X: Any) -> bool:
    """Whether ``X`` is an anndata backed sparse dataset (row slices read from disk)."""
    mod = type(X).__module__
    return mod.startswith("anndata") and hasattr(X, "format") and hasattr(X, "shape")


def check_block_rows(block_rows: Any, name: str = "block_rows") -> int | None:
    """``None`` or a positive integer; anything else raises a :class:`ValueError`.

    Public functions call this once, so ``0`` or a negative number is refused instead of
    silently meaning "default" or "1".
    """
    if block_rows is None:
        return None
    if isinstance(block_rows, bool) or not isinstance(block_rows, int | np.integer):
        raise ValueError(f"{name} must be a positive integer or None, got {block_rows!r}")
    if block_rows <= 0:
        raise ValueError(
            f"{name} must be a positive integer (rows per block), got {block_rows}; "
            "pass None for the default"
        )
    return int(block_rows)


def default_block_rows(X: Any, *, dense_bytes: int = DENSE_BLOCK_BYTES) -> int:
    """Rows per block: 4096 for sparse data, about ``dense_bytes`` of float32 for dense."""
    if sparse.issparse(X) or is_backed_sparse(X):
        return SPARSE_BLOCK_ROWS
    n_vars = int(X.shape[1]) if len(X.shape) > 1 else 1
    return int(max(256, min(65536, dense_bytes // max(1, 4 * n_vars))))


def iter_row_blocks(
    X: Any, block_rows: int | None = None, *, csr: bool = False
) -> Iterator[tuple[int, int, Any]]:
    """``(start, stop, block)`` over the rows of ``X``, ``block`` in memory.

    Parameters
    ----------
    X
        Cells x genes: numpy, scipy sparse (any format), dask array (numpy or scipy
        chunks), h5py dataset or anndata backed sparse dataset.
    block_rows
        Rows per block; ``None``: :func:`default_block_rows`, and for dask the array's
        own row chunks. For dask, blocks are made of whole chunks (several small chunks
        are merged up to ``block_rows``; a larger chunk is computed once and then cut), so
        every chunk is computed exactly once.
    csr
        Return every block as :class:`scipy.sparse.csr_matrix` (dense blocks are
        converted); otherwise blocks are numpy arrays or scipy sparse matrices.

    Examples
    --------
    >>> import numpy as np
    >>> from genept._core._blocks import iter_row_blocks
    >>> [(a, b, blk.shape) for a, b, blk in iter_row_blocks(np.ones((5, 3)), 2)]
    [(0, 2, (2, 3)), (2, 4, (2, 3)), (4, 5, (1, 3))]
    """
    block_rows = check_block_rows(block_rows)
    if _is_dask(X):
        yield from _dask_blocks(X, block_rows, csr)
        return
    if len(getattr(X, "shape", ())) != 2:
        raise ValueError(f"expected a 2-D cells x genes matrix, got {type(X).__name__}")
    n = int(X.shape[0])
    step = block_rows or default_block_rows(X)
    if sparse.issparse(X):
        if X.format != "csr":
            X = sparse.csr_matrix(X)  # row slices of CSC/COO would re-scan every column
        indptr, indices, data = X.indptr, X.indices, X.data
        for a in range(0, n, step):
            b = min(a + step, n)
            lo, hi = indptr[a], indptr[b]
            # zero-copy CSR view of the rows
            yield (
                a,
                b,
                sparse.csr_matrix(
                    (data[lo:hi], indices[lo:hi], indptr[a : b + 1] - lo),
                    shape=(b - a, X.shape[1]),
                ),
            )
        return
    for a in range(0, n, step):
        b = min(a + step, n)
        yield a, b, _finish(X[a:b], csr)


def _finish(block: Any, csr: bool) -> Any:
    if csr:
        return sparse.csr_matrix(block)
    if sparse.issparse(block):
        return block
    return np.asarray(block)


def _dask_blocks(X, block_rows: int | None, csr: bool) -> Iterator[tuple[int, int, Any]]:
    bounds = np.concatenate([[0], np.cumsum(X.chunks[0])]).astype(np.int64).tolist()
    # merge consecutive chunks up to block_rows (a chunk is never split before compute)
    groups: list[tuple[int, int]] = []
    a = prev = 0
    for b in bounds[1:]:
        if prev > a and (block_rows is None or b - a > block_rows):
            groups.append((a, prev))
            a = prev
        prev = b
    if prev > a:
        groups.append((a, prev))
    for a, b in groups:
        block = X[a:b].compute()
        step = block_rows or (b - a)
        if step >= b - a:
            yield a, b, _finish(block, csr)
            continue
        if sparse.issparse(block) and block.format != "csr":
            block = sparse.csr_matrix(block)
        for s in range(a, b, step):
            e = min(s + step, b)
            yield s, e, _finish(block[s - a : e - a], csr)
