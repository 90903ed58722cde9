"""GenePT-s cell sentences: gene symbols ranked by descending expression, zeros omitted.

The numerics work on the CSR arrays of row blocks (never on one dense row at a time in
Python): compiled kernels sort each cell's non-zero entries by a packed
``(descending value, tie priority)`` key, cut every cell to ``n_genes`` and to the
encoder's token budget, optionally shuffle, and write all sentences of a block into one
byte buffer that is decoded once.

Public pieces
-------------
:func:`cell_sentences`
    AnnData front end: ``adata.obs['genept_sentence']``.
:func:`build_sentences`
    Matrix in, list of sentences out (used by :func:`genept.tl.embed_cells`).
:func:`rank_genes`, :func:`truncate_to_budget`, :func:`token_budget`, :func:`sentence_words`
    The pure steps, testable without AnnData.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from itertools import pairwise
from typing import Any

import numba
import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg
from scipy import sparse
from tqdm.auto import tqdm

from .._settings import settings
from .._utils import check_adata, get_matrix, get_var_names, is_dask, write_results

__all__ = [
    "PAPER_PREFIX",
    "build_sentences",
    "cell_sentences",
    "hash_gene_name",
    "rank_genes",
    "sentence_words",
    "token_budget",
    "truncate_to_budget",
]

#: the prefix of the cell sentences in the scMPT paper (section 3.1)
PAPER_PREFIX = "A cell with genes ranked by expression: "

#: non-zero entries per row block when ``block_rows`` is not given (bounds memory)
_BLOCK_NNZ = 1 << 24
#: elements of a dense row block when ``block_rows`` is not given
_BLOCK_DENSE = 1 << 24


# --------------------------------------------------------------------------------------
# compiled kernels
# --------------------------------------------------------------------------------------

# The ranking sorts packed integer keys. Values become ``vals``, a uint32 per entry that
# orders like the value (the bits of a non-negative float32, or the dense rank of the
# value in its block) with 0 for zero; ``vbits`` is its width. A gene's tie priority
# takes ``pbits`` bits. ``((vmax - v) << pbits) | priority`` sorted ascending gives
# descending value, then ascending priority.


@numba.njit(parallel=True, cache=True, nogil=True)
def _row_nonzeros(indptr, vals, vbits):  # pragma: no cover - jit
    vmax = (np.uint64(1) << np.uint64(vbits)) - np.uint64(1)
    n = indptr.shape[0] - 1
    out = np.zeros(n, np.int64)
    for r in numba.prange(n):
        c = 0
        for j in range(indptr[r], indptr[r + 1]):
            if np.uint64(vals[j]) & vmax != 0:
                c += 1
        out[r] = c
    return out


@numba.njit(parallel=True, cache=True, nogil=True)
def _pack_keys(
    indptr, indices, vals, vbits, priority, pbits, nz_indptr, rmask, keys
):  # pragma: no cover - jit
    """Keys ``(row & rmask, value desc, priority)`` of the non-zero entries, row-major."""
    vmax = (np.uint64(1) << np.uint64(vbits)) - np.uint64(1)
    rshift = np.uint64(vbits + pbits)
    pb = np.uint64(pbits)
    for r in numba.prange(indptr.shape[0] - 1):
        o = nz_indptr[r]
        head = (np.uint64(r) & np.uint64(rmask)) << rshift
        for j in range(indptr[r], indptr[r + 1]):
            v = np.uint64(vals[j]) & vmax  # & vmax: -0.0 is zero
            if v != 0:
                keys[o] = head | ((vmax - v) << pb) | np.uint64(priority[indices[j]])
                o += 1


@numba.njit(parallel=True, cache=True, nogil=True)
def _unpack_genes(keys, nz_indptr, pbits, gene_of, out_indptr, out_idx):  # pragma: no cover - jit
    """The first ``out_indptr[r+1] - out_indptr[r]`` genes of each sorted row segment."""
    mask = (np.uint64(1) << np.uint64(pbits)) - np.uint64(1)
    for r in numba.prange(out_indptr.shape[0] - 1):
        s = nz_indptr[r]
        o = out_indptr[r]
        for t in range(out_indptr[r + 1] - o):
            out_idx[o + t] = gene_of[np.int64(keys[s + t] & mask)]


@numba.njit(inline="always")
def _sift_down(heap, i, n):  # pragma: no cover - jit
    """Restore the max-heap below ``i`` (``heap[:n]``)."""
    x = heap[i]
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and heap[c + 1] > heap[c]:
            c += 1
        if heap[c] <= x:
            break
        heap[i] = heap[c]
        i = c
    heap[i] = x


@numba.njit(parallel=True, cache=True, nogil=True)
def _top_k(
    indptr, indices, vals, vbits, priority, pbits, gene_of, out_indptr, out_idx
):  # pragma: no cover - jit
    """Each row's ``k`` smallest keys with a bounded max-heap: one pass, ``O(nnz + k log k)``.

    Used when the cut ``k`` is much shorter than the rows (``n_genes``, token budget).
    """
    vmax = (np.uint64(1) << np.uint64(vbits)) - np.uint64(1)
    pb = np.uint64(pbits)
    mask = (np.uint64(1) << pb) - np.uint64(1)
    for r in numba.prange(indptr.shape[0] - 1):
        o = out_indptr[r]
        k = out_indptr[r + 1] - o
        if k == 0:
            continue
        heap = np.empty(k, np.uint64)
        c = 0
        # once the heap is full, a value below the worst kept one cannot enter: test the
        # value alone (no key, no priority look-up) for most entries
        floor = np.uint64(1)
        for j in range(indptr[r], indptr[r + 1]):
            v = np.uint64(vals[j]) & vmax
            if v < floor:  # zero, or (heap full) below the worst kept value
                continue
            key = ((vmax - v) << pb) | np.uint64(priority[indices[j]])
            if c < k:
                heap[c] = key
                c += 1
                if c == k:
                    for i in range(k // 2 - 1, -1, -1):
                        _sift_down(heap, i, k)
                    floor = vmax - (heap[0] >> pb)
            elif key < heap[0]:
                heap[0] = key
                _sift_down(heap, 0, k)
                floor = vmax - (heap[0] >> pb)
        heap = np.sort(heap)
        for t in range(k):
            out_idx[o + t] = gene_of[np.int64(heap[t] & mask)]


@numba.njit(inline="always")
def _splitmix64(x):  # pragma: no cover - jit
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@numba.njit(parallel=True, cache=True, nogil=True)
def _shuffle_rows(indptr, idx, seed, row_offset):  # pragma: no cover - jit
    """Permute each row's entries in place, Fisher-Yates with draws hashed from
    ``(seed, global row, j)``.

    The permutation of a cell depends on the seed and the cell's row number only, not on
    the block size or the number of threads.
    """
    for r in numba.prange(indptr.shape[0] - 1):
        s = indptr[r]
        e = indptr[r + 1]
        m = e - s
        if m < 2:
            continue
        base = _splitmix64(np.uint64(seed) ^ _splitmix64(np.uint64(row_offset + r)))
        for j in range(m - 1, 0, -1):  # Fisher-Yates
            i = s + np.int64(_splitmix64(base + np.uint64(j)) % np.uint64(j + 1))
            tmp = idx[s + j]
            idx[s + j] = idx[i]
            idx[i] = tmp


#: bytes of a gene name copied in one fixed-size move (longer names: byte by byte)
_SLOT = 16


@numba.njit(parallel=True, cache=True, nogil=True)
def _row_bytes(indptr, idx, name_len, prefix_len):  # pragma: no cover - jit
    """Bytes of each row's sentence: prefix, names, one space between names."""
    n = indptr.shape[0] - 1
    out = np.zeros(n, np.int64)
    for r in numba.prange(n):
        s = indptr[r]
        e = indptr[r + 1]
        if e == s:
            continue
        c = prefix_len + (e - s - 1)
        for t in range(s, e):
            c += name_len[idx[t]]
        out[r] = c
    return out


@numba.njit(parallel=True, cache=True, nogil=True)
def _render(
    indptr, idx, slots, name_len, name_buf, name_off, prefix, out_off, out
):  # pragma: no cover - jit
    """Write ``prefix + " ".join(names)`` of every row into ``out`` at ``out_off``.

    Names of at most ``_SLOT`` bytes are copied as one fixed-size move from ``slots``
    (the bytes past the name are overwritten by what follows in the same row) while the
    move ends inside the row; otherwise byte by byte, so no row writes into the next.
    """
    p = prefix.shape[0]
    width = slots.shape[1]
    for r in numba.prange(indptr.shape[0] - 1):
        s = indptr[r]
        e = indptr[r + 1]
        if e == s:
            continue
        w = out_off[r]
        end = out_off[r + 1]
        for j in range(p):
            out[w + j] = prefix[j]
        w += p
        for t in range(s, e):
            g = idx[t]
            n_b = name_len[g]
            if n_b <= width and w + width <= end:
                for j in range(width):
                    out[w + j] = slots[g, j]
            else:
                a = name_off[g]
                for j in range(n_b):
                    out[w + j] = name_buf[a + j]
            w += n_b
            if t + 1 < e:
                out[w] = 32  # " "
                w += 1


# --------------------------------------------------------------------------------------
# row blocks of any container
# --------------------------------------------------------------------------------------


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


def _iter_row_blocks(X, block_rows: int | None) -> Iterator[tuple[int, int, sparse.csr_matrix]]:
    """``(start, stop, CSR block)`` over rows of numpy, scipy, dask or backed matrices."""
    n_obs = X.shape[0]
    if is_dask(X):
        if block_rows is None:  # the array's own row chunks: one compute per chunk
            bounds = np.concatenate([[0], np.cumsum(X.chunks[0])]).astype(int)
        else:
            bounds = np.r_[np.arange(0, n_obs, block_rows), n_obs]
        for a, b in pairwise(bounds.tolist()):
            if b > a:
                yield int(a), int(b), _to_csr(X[a:b].compute())
        return
    if sparse.issparse(X) and X.format != "csr":
        X = sparse.csr_matrix(X)  # row slices of CSC/COO would re-scan every column
    step = block_rows or _auto_block_rows(X)
    for a in range(0, n_obs, step):
        b = min(n_obs, a + step)
        yield a, b, _to_csr(X[a:b])


def _check_values(data: np.ndarray) -> None:
    if data.size == 0:
        return
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise ValueError(f"expression values must be real numbers, got dtype {data.dtype}")
    if np.issubdtype(data.dtype, np.floating) and np.isnan(data).any():
        raise ValueError(
            "the expression matrix contains NaN; cell sentences rank genes by expression, so "
            "fill or drop the NaN values first (e.g. np.nan_to_num) or pass another `layer`"
        )
    lo = data.min()
    if lo < 0:
        raise ValueError(
            f"the expression matrix has negative values (min {lo:g}); cell sentences rank "
            "non-negative expression (counts or normalize_total + log1p). Pass unscaled data: "
            "`layer=` with counts, `use_raw=True`, or run the ranking before `sc.pp.scale`"
        )


# --------------------------------------------------------------------------------------
# pure numerics
# --------------------------------------------------------------------------------------


def _tie_priority(n_vars: int, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``(priority, gene_of)``: tie priority of each gene and the gene of each priority."""
    if seed is None:
        ar = np.arange(n_vars, dtype=np.int64)
        return ar, ar
    priority = np.random.default_rng(seed).permutation(n_vars).astype(np.int64)
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
) -> tuple[np.ndarray, np.ndarray]:
    """Rank one CSR row block: ``(indptr, int32 gene indices)``."""
    pbits = max(1, int(csr.shape[1] - 1).bit_length())
    vals, vbits = _value_keys(csr.data)
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


def rank_genes(
    X,
    *,
    n_genes: int | None = None,
    seed: int | None = 0,
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
    seed
        How equal values are ordered. ``None``: by gene index, ascending. An integer:
        by a random priority of the genes, ``np.random.default_rng(seed).permutation(n_vars)``
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
    >>> indptr, idx = rank_genes(np.array([[0, 2, 1, 2], [0, 0, 0, 0]]), seed=None)
    >>> indptr.tolist(), idx.tolist()
    ([0, 3, 3], [1, 3, 2])
    """
    n_genes = _check_n_genes(n_genes)
    if len(X.shape) != 2:
        raise ValueError(f"expected a 2-d cells x genes matrix, got shape {X.shape}")
    priority, gene_of = _tie_priority(int(X.shape[1]), seed)
    ptrs, idxs = [np.zeros(1, dtype=np.int64)], []
    offset = 0
    for _, _, csr in _iter_row_blocks(X, block_rows):
        p, i = _rank_block(csr, priority, gene_of, n_genes)
        ptrs.append(p[1:] + offset)
        idxs.append(i)
        offset += int(p[-1])
    idx = np.concatenate(idxs) if idxs else np.zeros(0, dtype=np.int32)
    return np.concatenate(ptrs), idx.astype(np.int32, copy=False)


def truncate_to_budget(
    indptr: np.ndarray,
    idx: np.ndarray,
    gene_token_counts: np.ndarray,
    budget: int,
    *,
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
    >>> truncate_to_budget(np.array([0, 3]), np.array([0, 1, 2]), np.array([2, 3, 1]), 5)
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


# --------------------------------------------------------------------------------------
# words, tokens and text
# --------------------------------------------------------------------------------------


def hash_gene_name(name: str) -> str:
    """The scMPT gene-name ablation: the first 10 hex digits of SHA-256 of the name."""
    return hashlib.sha256(str(name).encode("utf-8")).hexdigest()[:10]


def sentence_words(gene_names: Sequence[str], *, hash_names: bool = False) -> np.ndarray:
    """The word written for each gene: its symbol, or its hash when ``hash_names``."""
    names = np.asarray(pd.Index(gene_names).astype(str), dtype=object)
    if hash_names:
        names = np.array([hash_gene_name(n) for n in names], dtype=object)
    return names


def token_budget(
    encoder, words: Sequence[str], *, prefix: str = "", max_tokens: int | None = None
) -> tuple[np.ndarray, int | None]:
    """Tokens of each word in a sentence, and the tokens left to the words.

    Each word is counted in context (``"a " + word`` minus ``"a"``), so that it costs
    what it costs inside a sentence; for BERT WordPiece tokenizers this equals the
    word's own tokens and ``tokens(prefix + " ".join(words))`` is exactly
    ``tokens(prefix) + sum(word tokens)``, special tokens included in the first term.
    Unique words are tokenized once.

    Parameters
    ----------
    encoder
        A :class:`~genept.encoders.TextEncoder` (its ``count_tokens`` and ``max_tokens``).
    words
        The word of each gene (see :func:`sentence_words`).
    prefix
        Text written before the genes.
    max_tokens
        Token limit (default: ``encoder.max_tokens``).

    Returns
    -------
    ``(token_counts, budget)``; ``budget`` is ``None`` when the encoder has no limit.
    """
    limit = max_tokens if max_tokens is not None else getattr(encoder, "max_tokens", None)
    words = np.asarray(words, dtype=object)
    uniq, inverse = np.unique(words.astype(str), return_inverse=True)
    if uniq.size:
        in_ctx = encoder.count_tokens(["a " + w for w in uniq.tolist()])
        base = int(encoder.count_tokens(["a"])[0])
        counts = np.maximum(np.asarray(in_ctx, dtype=np.int64) - base, 0)[inverse.ravel()]
    else:
        counts = np.zeros(0, dtype=np.int64)
    if limit is None:
        return counts, None
    # the prefix's tokens with the special tokens ([CLS] ... [SEP]); an empty prefix
    # costs just the special tokens
    head = int(encoder.count_tokens([prefix.strip()])[0])
    budget = int(limit) - head
    if budget < 0:
        raise ValueError(
            f"the prefix {prefix!r} takes {head} tokens, more than max_tokens={limit}; "
            "shorten the prefix or raise max_tokens"
        )
    return counts, budget


class _Names:
    """Gene words as UTF-8 bytes, laid out for :func:`_render`."""

    def __init__(self, words: np.ndarray):
        enc = [w.encode("utf-8") for w in words.tolist()]
        self.length = np.fromiter((len(b) for b in enc), dtype=np.int64, count=len(enc))
        self.offset = np.concatenate([[0], np.cumsum(self.length)]).astype(np.int64)
        self.buf = np.frombuffer(b"".join(enc), dtype=np.uint8) if enc else np.zeros(0, np.uint8)
        fixed = np.zeros((len(enc), _SLOT), dtype=np.uint8)
        for g, b in enumerate(enc):
            fixed[g, : min(len(b), _SLOT)] = np.frombuffer(b[:_SLOT], dtype=np.uint8)
        self.slots = fixed
        self.ascii = all(w.isascii() for w in words.tolist())

    def render(self, indptr: np.ndarray, idx: np.ndarray, prefix: str) -> list[str]:
        """The sentence of each row of the ragged ``(indptr, idx)``."""
        pre = np.frombuffer(prefix.encode("utf-8"), dtype=np.uint8)
        if indptr.shape[0] <= 1:
            return []
        row_bytes = _row_bytes(indptr, idx, self.length, pre.size)
        out_off = np.concatenate([[0], np.cumsum(row_bytes)]).astype(np.int64)
        out = np.empty(int(out_off[-1]), dtype=np.uint8)
        if out.size:
            _render(indptr, idx, self.slots, self.length, self.buf, self.offset, pre, out_off, out)
        view = memoryview(out)
        bounds = out_off.tolist()
        codec = "ascii" if self.ascii and prefix.isascii() else "utf-8"
        return [str(view[a:b], codec) for a, b in pairwise(bounds)]


def build_sentences(
    X,
    gene_names: Sequence[str],
    *,
    n_genes: int | None = None,
    prefix: str = "",
    token_counts: np.ndarray | None = None,
    budget: int | None = None,
    hash_names: bool = False,
    shuffle: bool = False,
    seed: int | None = 0,
    block_rows: int | None = None,
    show_progress: bool | None = None,
) -> list[str]:
    """Cell sentences of a matrix, block by block.

    Per row block: rank (:func:`rank_genes`), cut to ``n_genes`` and to the token
    ``budget`` (:func:`truncate_to_budget`), shuffle if asked, write the text.

    Parameters
    ----------
    X
        Cells x genes, non-negative (numpy, scipy sparse, dask, backed).
    gene_names
        Symbol of each column of ``X``.
    n_genes
        At most this many leading genes per cell.
    prefix
        Text before the genes of each non-empty cell, e.g. :data:`PAPER_PREFIX`.
    token_counts, budget
        Tokens of each gene's *word* (hashed when ``hash_names``) and the tokens
        available to the words (see :func:`token_budget`); both or neither.
    hash_names
        Write ``sha256(name)[:10]`` instead of each gene name (scMPT ablation).
    shuffle
        Randomly permute the kept genes of each cell (scMPT ablation), after the cut,
        so a shuffled sentence holds the same genes as the ranked one.
    seed
        Tie order (see :func:`rank_genes`) and the shuffle. The shuffle of a cell depends
        only on ``seed`` and the cell's row; with ``seed=None`` it is not reproducible.
    block_rows
        Rows per block (default: about 16M non-zeros or dense entries).
    show_progress
        Progress bar over blocks (default ``genept.settings.progress``).

    Returns
    -------
    One sentence per row of ``X``; a cell without expressed genes gives ``""``.
    """
    n_genes = _check_n_genes(n_genes)
    if (token_counts is None) != (budget is None):
        raise ValueError("give both `token_counts` and `budget`, or neither")
    n_obs, n_vars = (int(s) for s in X.shape)
    words = sentence_words(gene_names, hash_names=hash_names)
    if words.shape[0] != n_vars:
        raise ValueError(f"{words.shape[0]} gene names for {n_vars} columns of X")
    cut = n_genes
    if token_counts is not None:
        token_counts = np.asarray(token_counts, dtype=np.int64)
        if token_counts.shape != (n_vars,):
            raise ValueError(f"token_counts must have one entry per gene ({n_vars})")
        # no cell keeps more genes than the cheapest genes fill: rank no further
        fit = int(np.searchsorted(np.cumsum(np.sort(token_counts)), budget, side="right"))
        cut = max(1, min(cut or fit, fit))
    text = _Names(words)
    priority, gene_of = _tie_priority(n_vars, seed)
    shuffle_seed = (
        (int(seed) & 0xFFFFFFFFFFFFFFFF)
        if seed is not None
        else int(np.random.default_rng().integers(2**63))
    )
    progress = settings.progress if show_progress is None else show_progress
    out: list[str] = []
    with tqdm(total=n_obs, desc="cell sentences", unit="cell", disable=not progress) as bar:
        for a, b, csr in _iter_row_blocks(X, block_rows):
            indptr, idx = _rank_block(csr, priority, gene_of, cut)
            if token_counts is not None:
                indptr, idx = truncate_to_budget(indptr, idx, token_counts, budget)
            if shuffle and idx.size:
                idx = np.array(idx, copy=True)
                _shuffle_rows(indptr, idx, np.uint64(shuffle_seed), np.int64(a))
            out.extend(text.render(indptr, idx, prefix))
            bar.update(b - a)
    return out


# --------------------------------------------------------------------------------------
# AnnData front end
# --------------------------------------------------------------------------------------


def cell_sentences(
    adata: AnnData,
    *,
    layer: str | None = None,
    use_raw: bool | None = None,
    n_genes: int | None = None,
    gene_symbols: str | None = None,
    prefix: str = "",
    max_tokens: int | None = None,
    encoder: Any = None,
    hash_names: bool = False,
    shuffle: bool = False,
    seed: int | None = 0,
    block_rows: int | None = None,
    key_added: str = "genept_sentence",
    show_progress: bool | None = None,
    copy: bool = False,
    inplace: bool = True,
) -> AnnData | pd.Series | None:
    """GenePT-s cell sentences: gene symbols by descending expression, zeros omitted.

    As in GenePT (Chen & Zou, section 3.1) and scMPT (section 3.1), each cell becomes the
    text of its expressed genes' symbols, most expressed first, separated by spaces,
    optionally after a ``prefix`` and cut to what a text encoder reads. Rank normalised
    data (``sc.pp.normalize_total`` + ``sc.pp.log1p``) or counts, not scaled data.

    Parameters
    ----------
    adata
        Annotated data matrix (numpy, scipy sparse, dask or backed ``X``).
    layer
        Rank ``adata.layers[layer]`` instead of ``X``.
    use_raw
        Rank ``adata.raw.X`` (and take the gene names from ``adata.raw.var``).
    n_genes
        Keep at most this many leading genes per cell.
    gene_symbols
        Column of ``var`` with the gene symbols, if ``var_names`` are not symbols.
    prefix
        Text before the genes, e.g. ``gpt.pp.PAPER_PREFIX`` =
        ``"A cell with genes ranked by expression: "`` (scMPT). Written as given.
    max_tokens
        Cut each sentence to this many tokens of the encoder's tokenizer (special tokens
        and the prefix included). Default: ``encoder.max_tokens`` when an encoder is
        given, no cut otherwise. Given alone, the default encoder's tokenizer counts.
    encoder
        Text encoder (a name or :class:`~genept.encoders.TextEncoder`, see
        :func:`genept.encoders.get_encoder`) whose tokenizer and limit set the cut: no
        sentence holds genes the model would cut anyway.
    hash_names
        Ablation (scMPT 3.2): replace each gene name by the first 10 hex digits of its
        SHA-256 hash.
    shuffle
        Ablation (scMPT 3.2): randomly permute the genes within each cell (the same genes
        as without shuffling: the cut happens first).
    seed
        Order of equally expressed genes, and the shuffle. ``None``: ties by gene
        order in ``var`` (and an unseeded shuffle); an integer: ties by a seeded random
        permutation of the genes, the same for every cell (see :func:`rank_genes`).
    block_rows
        Rows processed at once (bounds memory; default about 16M non-zeros per block).
    key_added
        ``obs`` column of the sentences and ``uns`` key of the parameters.
    show_progress
        Progress bar (default ``genept.settings.progress``).
    copy
        Return a modified copy instead of writing to ``adata``.
    inplace
        Write to ``adata``; ``False`` returns the sentences and writes nothing.

    Returns
    -------
    With ``inplace=False`` a :class:`pandas.Series` of sentences indexed by
    ``obs_names``. Otherwise ``None`` (or a copy with ``copy=True``), setting

    ``adata.obs[key_added]``
        The sentence of each cell (``""`` for a cell without expressed genes).
    ``adata.uns[key_added]['params']``
        The options used, the tokenizer and the token budget.

    Examples
    --------
    >>> import scanpy as sc, genept as gpt
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> gpt.pp.cell_sentences(adata, use_raw=True, n_genes=5)
    >>> adata.obs["genept_sentence"].iloc[0]  # doctest: +SKIP
    'MALAT1 TMSB4X B2M RPL13 FTL'
    >>> s = gpt.pp.cell_sentences(  # doctest: +SKIP
    ...     adata, use_raw=True, prefix=gpt.pp.PAPER_PREFIX, encoder="all-MiniLM-L6-v2",
    ...     inplace=False)
    """
    check_adata(adata)
    if copy and not inplace:
        raise ValueError("copy=True writes to a copy, inplace=False writes nothing: pick one")
    if max_tokens is not None and (isinstance(max_tokens, bool) or int(max_tokens) < 1):
        raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    n_genes = _check_n_genes(n_genes)
    start = logg.info("building cell sentences")
    X = get_matrix(adata, layer=layer, use_raw=use_raw)
    names = get_var_names(adata, gene_symbols=gene_symbols, use_raw=use_raw)
    if X.shape[1] == 0:
        raise ValueError("adata has no genes (n_vars == 0)")
    token_counts = budget = None
    enc = None
    if encoder is not None or max_tokens is not None:
        from ..encoders import get_encoder

        enc = get_encoder(encoder)
        words = sentence_words(names, hash_names=hash_names)
        token_counts, budget = token_budget(enc, words, prefix=prefix, max_tokens=max_tokens)
        if budget is not None:
            logg.info(f"    token budget for genes: {budget} ({enc!r})")
    sentences = build_sentences(
        X,
        names,
        n_genes=n_genes,
        prefix=prefix,
        token_counts=token_counts,
        budget=budget,
        hash_names=hash_names,
        shuffle=shuffle,
        seed=seed,
        block_rows=block_rows,
        show_progress=show_progress,
    )
    series = pd.Series(sentences, index=adata.obs_names.copy(), dtype=object, name=key_added)
    if not inplace:
        logg.info("    finished", time=start)
        return series
    params: dict[str, Any] = {
        "n_genes": n_genes,
        "layer": layer,
        "use_raw": bool(use_raw) if use_raw is not None else None,
        "gene_symbols": gene_symbols,
        "prefix": prefix,
        "max_tokens": None if budget is None else int(max_tokens or enc.max_tokens),
        "token_budget": budget,
        "encoder": None if enc is None else str(getattr(enc, "model_name", None) or enc.cache_id),
        "hash_names": bool(hash_names),
        "shuffle": bool(shuffle),
        "seed": None if seed is None else int(seed),
        "n_empty": int(sum(1 for s in sentences if not s)),
    }
    params = {k: v for k, v in params.items() if v is not None}  # h5ad cannot store None
    return write_results(
        adata,
        [("obs", key_added, series.to_numpy()), ("uns", key_added, {"params": params})],
        copy=copy,
        log=lambda msg: logg.info("    finished", time=start, deep=msg),
    )
