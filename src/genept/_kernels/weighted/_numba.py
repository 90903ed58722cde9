"""Numba kernels of GenePT-w on the CPU (see :mod:`._cpu` for how they are used)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True, boundscheck=False)
def _scan_csr(indptr, indices, data, colmap, wsum):  # pragma: no cover - numba
    """One pass over a CSR (sub-)block: weight sums over used genes, min, non-finite count.

    ``indptr`` is the block's own (``indptr[0]`` may be non-zero). Returns
    ``(min_value, n_nonfinite, nnz_used)``.
    """
    n = indptr.size - 1
    vmin = np.inf
    n_bad = 0
    nnz_used = 0
    for r in range(n):
        s = 0.0
        for k in range(indptr[r], indptr[r + 1]):
            v = data[k]
            if not np.isfinite(v):
                n_bad += 1
                continue
            if v < vmin:
                vmin = v
            if colmap[indices[k]] >= 0:
                s += v
                nnz_used += 1
        wsum[r] = s
    return vmin, n_bad, nnz_used


@njit(nogil=True, cache=True, boundscheck=False)
def _scan_dense(block, used_mask, wsum):  # pragma: no cover - numba
    """Same as :func:`_scan_csr` for a dense C-contiguous block."""
    n, g = block.shape
    vmin = np.inf
    n_bad = 0
    nnz_used = 0
    for r in range(n):
        s = 0.0
        row = block[r]
        for c in range(g):
            v = row[c]
            if not np.isfinite(v):
                n_bad += 1
                continue
            if v < vmin:
                vmin = v
            if used_mask[c] and v != 0:
                s += v
                nnz_used += 1
        wsum[r] = s
    return vmin, n_bad, nnz_used


@njit(nogil=True, cache=True, boundscheck=False)
def _compact_csr(indptr, indices, data, colmap):  # pragma: no cover - numba
    """CSR (sub-)block -> CSR over the used genes only (columns renumbered, order kept)."""
    n = indptr.size - 1
    lo = indptr[0]
    total = indptr[n] - lo
    ip = np.empty(n + 1, np.int64)
    ci = np.empty(total, np.int32)
    cv = np.empty(total, np.float32)
    m = 0
    ip[0] = 0
    for r in range(n):
        for k in range(indptr[r], indptr[r + 1]):
            c = colmap[indices[k]]
            if c >= 0:
                ci[m] = c
                cv[m] = data[k]
                m += 1
        ip[r + 1] = m
    return ip, ci, cv


@njit(nogil=True, cache=True, boundscheck=False)
def _spmm_gene_chunks(ip, ci, cv, Eu, out, chunk, ptr, acc):  # pragma: no cover - numba
    """out = X_sub @ Eu for a compacted CSR sub-block, gene chunk by gene chunk.

    ``ptr`` (rows) and ``acc`` (d) are scratch. Duplicates add up. Unsorted rows are
    also right: a chunk stops at a row's first column beyond it, later chunks take the
    rest, and the last chunk takes all that is left (only the summation order differs).
    """
    n = ip.size - 1
    n_used = Eu.shape[0]
    d = Eu.shape[1]
    for r in range(n):
        ptr[r] = ip[r]
        for j in range(d):
            out[r, j] = 0.0
    for g0 in range(0, n_used, chunk):
        g1 = g0 + chunk
        for r in range(n):
            k = ptr[r]
            kend = ip[r + 1]
            if k >= kend or ci[k] >= g1:
                continue
            o = out[r]
            for j in range(d):
                acc[j] = o[j]
            while k < kend and ci[k] < g1:
                e = Eu[ci[k]]
                v = cv[k]
                for j in range(d):
                    acc[j] += v * e[j]
                k += 1
            ptr[r] = k
            for j in range(d):
                o[j] = acc[j]


@njit(nogil=True, cache=True, boundscheck=False)
def _densify_used(indptr, indices, data, colmap, dense):  # pragma: no cover - numba
    """Scatter a CSR (sub-)block into ``dense`` (rows x used genes); duplicates add up."""
    n = indptr.size - 1
    dense[:] = 0.0
    for r in range(n):
        row = dense[r]
        for k in range(indptr[r], indptr[r + 1]):
            c = colmap[indices[k]]
            if c >= 0:
                row[c] += data[k]
