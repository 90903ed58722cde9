"""Numba kernels of the cell sentences: ranking, shuffling and writing the text."""

from __future__ import annotations

import numba
import numpy as np

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
    """Permute each row's entries in place, Fisher-Yates with draws hashed from ``(seed, global row, j)``.

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


@numba.njit(cache=True, nogil=True)
def _window_bounds(indptr, idx, costs, budget, max_windows):  # pragma: no cover - jit
    """Greedy split of each row's genes into consecutive windows of at most ``budget`` tokens.

    Returns ``(start, stop, row, rank)`` of every window: positions into ``idx`` (whose
    order is unchanged), the row of the window and its rank within the row. Genes after
    a row's ``max_windows``-th window are dropped; a gene costlier than ``budget`` gets a
    window of its own.
    """
    n = indptr.shape[0] - 1
    cap = idx.shape[0] + 1
    start = np.empty(cap, np.int64)
    stop = np.empty(cap, np.int64)
    row = np.empty(cap, np.int64)
    rank = np.empty(cap, np.int64)
    w = 0
    for r in range(n):
        a = indptr[r]
        b = indptr[r + 1]
        if a == b:
            continue
        used = 0
        k = 0
        s0 = a
        for j in range(a, b):
            c = costs[idx[j]]
            if used + c > budget and j > s0:
                start[w] = s0
                stop[w] = j
                row[w] = r
                rank[w] = k
                w += 1
                k += 1
                s0 = j
                used = 0
                if k == max_windows:
                    break
            used += c
        if k < max_windows:
            start[w] = s0
            stop[w] = b
            row[w] = r
            rank[w] = k
            w += 1
    return start[:w], stop[:w], row[:w], rank[:w]
