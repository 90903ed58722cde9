"""Ranking genes by expression per cell, and cutting to a token budget."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ..._core._blocks import check_block_rows, iter_row_blocks
from ..._core._docs import doc_params, doc_random_state
from ..._utils import keyword_only, renamed_arg
from ._numba import _pack_keys, _row_nonzeros, _top_k, _unpack_genes

#: non-zero entries per row block when ``block_rows`` is not given (bounds memory)
_BLOCK_NNZ = 1 << 24
#: elements of a dense row block when ``block_rows`` is not given
_BLOCK_DENSE = 1 << 24


def _auto_block_rows(X) -> int:
    n_obs, n_vars = X.shape
    if sparse.issparse(X) and n_obs:
        per_row = max(1.0, X.nnz / n_obs)
        return max(1, int(_BLOCK_NNZ // per_row))
    return max(1, _BLOCK_DENSE // max(1, n_vars))


def _to_csr(block) -> sparse.csr_matrix:
    if sparse.issparse(block):
        csr = sparse.csr_matrix(block)
        if not csr.has_canonical_format:
            csr = csr.copy()
            csr.sum_duplicates()
        return csr
    arr = np.asarray(block)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-d cells x genes matrix, got shape {arr.shape}")
    return sparse.csr_matrix(arr)


def _iter_row_blocks(X, block_rows: int | None):
    """``(start, stop, canonical CSR block)``; default blocks of about 16M entries."""
    if block_rows is None and not type(X).__module__.startswith("dask."):
        block_rows = _auto_block_rows(X)  # dask: the array's own row chunks
    for a, b, block in iter_row_blocks(X, block_rows):
        yield a, b, _to_csr(block)


def _check_values(data: np.ndarray) -> None:
    if data.size == 0:
        return
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise ValueError(f"expression values must be real numbers, got dtype {data.dtype}")
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        n_nan, n_inf = int(np.isnan(data).sum()), int(np.isinf(data).sum())
        raise ValueError(
            f"the expression matrix contains {n_nan} NaN and {n_inf} infinite values; cell "
            "sentences rank genes by expression, so clean them first (e.g. np.nan_to_num) "
            "or pass another `layer`"
        )
    lo = data.min()
    if lo < 0:
        raise ValueError(
            f"the expression matrix has negative values (min {lo:g}); cell sentences rank "
            "non-negative expression (counts or normalize_total + log1p). Pass unscaled data: "
            "`layer=` with counts, `use_raw=True`, or run the ranking before `sc.pp.scale`"
        )


def _tie_priority(n_vars: int, random_state: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``(priority, gene_of)``: tie priority of each gene and the gene of each priority."""
    if random_state is None:
        ar = np.arange(n_vars, dtype=np.int64)
        return ar, ar
    priority = np.random.default_rng(random_state).permutation(n_vars).astype(np.int64)
    gene_of = np.empty(n_vars, dtype=np.int64)
    gene_of[priority] = np.arange(n_vars, dtype=np.int64)
    return priority, gene_of


def _value_keys(data: np.ndarray) -> tuple[np.ndarray, int]:
    """``(vals, vbits)``: uint32 ordering like ``data`` (0 for zero) and its bit width.

    Values that float32 holds exactly (float32 data, counts, most log1p data) use their
    float32 bits (31 bits: non-negative); others their dense rank among the block's values.
    """
    _check_values(data)
    f32 = data if data.dtype == np.float32 else data.astype(np.float32)
    if f32 is data or np.array_equal(f32, data):
        return f32.view(np.uint32), 31
    uniq, inv = np.unique(data, return_inverse=True)
    shift = 0 if uniq[0] == 0 else 1
    return (inv.ravel() + shift).astype(np.uint32), max(1, int(uniq.size - 1 + shift).bit_length())


#: use the per-row heap when the cut keeps at most this share of a row's genes
_HEAP_SHARE = 0.1


def _rank_block(
    csr: sparse.csr_matrix,
    priority: np.ndarray,
    gene_of: np.ndarray,
    n_genes: int | None,
    *,
    keep: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank one CSR row block: ``(indptr, int32 gene indices)``.

    Genes outside ``keep`` (a boolean mask; e.g. missing symbols) rank as zeros: never kept.
    """
    pbits = max(1, int(csr.shape[1] - 1).bit_length())
    vals, vbits = _value_keys(csr.data)
    if keep is not None and vals.size:
        vals = np.where(keep[csr.indices], vals, np.uint32(0)).astype(np.uint32, copy=False)
    indptr = csr.indptr.astype(np.int64, copy=False)
    nnz_row = _row_nonzeros(indptr, vals, vbits)
    counts = nnz_row if n_genes is None else np.minimum(nnz_row, n_genes)
    out_indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    out_idx = np.empty(int(out_indptr[-1]), dtype=np.int32)
    total_nz = int(nnz_row.sum())
    if out_idx.size == 0:
        return out_indptr, out_idx
    if out_idx.size <= _HEAP_SHARE * total_nz:  # short cut: one pass per row, no full sort
        _top_k(indptr, csr.indices, vals, vbits, priority, pbits, gene_of, out_indptr, out_idx)
        return out_indptr, out_idx
    # long rows kept: one global sort (numpy's SIMD sort) of (row, value, priority) keys;
    # rows are packed in the bits left, so sort in chunks of at most 2**rbits rows
    rbits = 64 - vbits - pbits
    chunk = 1 << min(rbits, 40)
    nz_indptr = np.concatenate([[0], np.cumsum(nnz_row)]).astype(np.int64)
    keys = np.empty(total_nz, dtype=np.uint64)
    _pack_keys(indptr, csr.indices, vals, vbits, priority, pbits, nz_indptr, chunk - 1, keys)
    n = csr.shape[0]
    for a in range(0, n, chunk):
        keys[nz_indptr[a] : nz_indptr[min(n, a + chunk)]].sort()
    _unpack_genes(keys, nz_indptr, pbits, gene_of, out_indptr, out_idx)
    return out_indptr, out_idx


def _check_n_genes(n_genes: int | None) -> int | None:
    if n_genes is None:
        return None
    if isinstance(n_genes, bool) or not isinstance(n_genes, int | np.integer) or n_genes < 1:
        raise ValueError(f"n_genes must be a positive integer or None, got {n_genes!r}")
    return int(n_genes)


@doc_params(doc_random_state=doc_random_state)
@renamed_arg("seed", "random_state")
def rank_genes(
    X,
    *,
    n_genes: int | None = None,
    random_state: int | None = 0,
    block_rows: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Genes of each cell ordered by descending expression, zeros omitted.

    Parameters
    ----------
    X
        Cells x genes, non-negative: numpy, scipy sparse (CSR/CSC/…), dask (processed
        chunk by chunk) or a backed AnnData matrix.
    n_genes
        Keep at most this many leading genes per cell (``None``: all non-zero genes).
    {doc_random_state}
        Here: how equal values are ordered. ``None``: by gene index, ascending. An integer:
        by a random priority of the genes, ``np.random.default_rng(random_state).permutation(n_vars)``
        (gene ``g`` comes before an equally expressed gene ``h`` when
        ``priority[g] < priority[h]``), drawn once so it is the same for all cells.
    block_rows
        Rows per block (default: about 16M non-zeros, or 16M dense entries, per block).

    Returns
    -------
    ``(indptr, gene_indices)``, a ragged CSR-like layout: the genes of cell ``i`` are
    ``gene_indices[indptr[i]:indptr[i + 1]]`` (``int32`` column indices), best first.

    Examples
    --------
    >>> import numpy as np
    >>> indptr, idx = rank_genes(np.array([[0, 2, 1, 2], [0, 0, 0, 0]]), random_state=None)
    >>> indptr.tolist(), idx.tolist()
    ([0, 3, 3], [1, 3, 2])
    """
    n_genes = _check_n_genes(n_genes)
    block_rows = check_block_rows(block_rows)
    if len(X.shape) != 2:
        raise ValueError(f"expected a 2-d cells x genes matrix, got shape {X.shape}")
    priority, gene_of = _tie_priority(int(X.shape[1]), random_state)
    ptrs, idxs = [np.zeros(1, dtype=np.int64)], []
    offset = 0
    for _, _, csr in _iter_row_blocks(X, block_rows):
        p, i = _rank_block(csr, priority, gene_of, n_genes)
        ptrs.append(p[1:] + offset)
        idxs.append(i)
        offset += int(p[-1])
    idx = np.concatenate(idxs) if idxs else np.zeros(0, dtype=np.int32)
    return np.concatenate(ptrs), idx.astype(np.int32, copy=False)


@keyword_only("budget", "sep_tokens")
def truncate_to_budget(
    indptr: np.ndarray,
    idx: np.ndarray,
    gene_token_counts: np.ndarray,
    *,
    budget: int,
    sep_tokens: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Keep each cell's leading genes while their tokens fit in ``budget``.

    A gene costs ``gene_token_counts[g] + sep_tokens`` tokens; a cell keeps its longest
    prefix of genes whose summed cost is ``<= budget``.

    Parameters
    ----------
    indptr, idx
        Ranked genes as returned by :func:`rank_genes`.
    gene_token_counts
        Tokens of each gene's word (without special tokens), indexed like the genes.
    budget
        Tokens available to the genes: the encoder's maximum minus the prefix and the
        special tokens (see :func:`token_budget`).
    sep_tokens
        Extra tokens per gene for the separator (0 for WordPiece and byte-level BPE,
        where the space is not a token of its own).

    Returns
    -------
    The truncated ``(indptr, idx)``.

    Examples
    --------
    >>> import numpy as np
    >>> truncate_to_budget(np.array([0, 3]), np.array([0, 1, 2]), np.array([2, 3, 1]), budget=5)
    (array([0, 2]), array([0, 1]))
    """
    indptr = np.asarray(indptr, dtype=np.int64)
    idx = np.asarray(idx)
    if budget < 0:
        raise ValueError(f"token budget must be >= 0, got {budget}")
    costs = np.asarray(gene_token_counts, dtype=np.int64)
    if (costs < 0).any():
        raise ValueError("gene_token_counts must be non-negative")
    cost = costs[idx] + int(sep_tokens)
    cum = np.concatenate([[0], np.cumsum(cost)])
    n = indptr.shape[0] - 1
    lengths = np.diff(indptr)
    # cumulative cost within the cell: costs are >= 0, so what fits is a prefix
    within = cum[1:] - np.repeat(cum[indptr[:-1]], lengths)
    keep = within <= budget
    counts = np.bincount(np.repeat(np.arange(n), lengths)[keep], minlength=n)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), idx[keep]
