"""Numba kernels of GenePT-w on the CPU (see :mod:`._cpu` for how they are used)."""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic


@njit(nogil=True, cache=True, boundscheck=False)
def _scan_csr(indptr, indices, data, colmap, wsum):  # pragma: no cover - numba
    """One pass over a CSR (sub-)block: weight sums over used genes, min, non-finite count.

    ``indptr`` is the block's own (``indptr[0]`` may be non-zero). Returns
    ``(min_value, n_nonfinite, nnz_used)``. Branch-free on the used/unused test (one
    in ten genes lacks an embedding: a branch there mispredicts).
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
            u = colmap[indices[k]] >= 0
            s += v if u else 0.0
            nnz_used += u
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
def _compact_scan_csr(indptr, indices, data, colmap, wsum):  # pragma: no cover - numba
    """:func:`_compact_csr` and :func:`_scan_csr` in one pass over the (sub-)block.

    Returns ``(ip, ci, cv, min_value, n_nonfinite, nnz_used)``; weight sums into ``wsum``.
    Branch-free on the used/unused test: every entry is written, the write position
    advances only for used genes.
    """
    n = indptr.size - 1
    lo = indptr[0]
    total = indptr[n] - lo
    ip = np.empty(n + 1, np.int64)
    ci = np.empty(total, np.int32)
    cv = np.empty(total, np.float32)
    vmin = np.inf
    n_bad = 0
    m = 0
    ip[0] = 0
    for r in range(n):
        s = 0.0
        for k in range(indptr[r], indptr[r + 1]):
            v = data[k]
            c = colmap[indices[k]]
            u = c >= 0
            ci[m] = c
            cv[m] = v
            m += u
            if not np.isfinite(v):
                n_bad += 1
                continue
            if v < vmin:
                vmin = v
            s += v if u else 0.0
        ip[r + 1] = m
        wsum[r] = s
    return ip, ci, cv, vmin, n_bad, m


@njit(nogil=True, cache=True, boundscheck=False)
def _compact_csr(indptr, indices, data, colmap):  # pragma: no cover - numba
    """CSR (sub-)block -> CSR over the used genes only (columns renumbered, order kept)."""
    ip, ci, cv, _, _, _ = _compact_scan_csr(
        indptr, indices, data, colmap, np.empty(indptr.size - 1)
    )
    return ip, ci, cv


def _axpy_segment(width):
    """Intrinsic ``out[r, j:j+width] += sum_k cv[k] * Eu[ci[k], j:j+width]``, k in [k0, k1).

    The ``width`` accumulators live in registers for the whole loop (an LLVM vector of
    ``width`` float32: 4 AVX-512 or 8 AVX2 registers for 64), so a non-zero costs one load
    of its embedding segment, a multiply and an add; the output segment is read once
    before and written once after. Multiply then add, in the order of ``k``, never fused:
    each element gets exactly the float32 operations of scipy's CSR @ dense loop.
    """

    @intrinsic
    def axpy(typingctx, ci, cv, Eu, out, r, j, k0, k1):
        for a, ndim in ((ci, 1), (cv, 1), (Eu, 2), (out, 2)):
            if not (isinstance(a, types.Array) and a.layout == "C" and a.ndim == ndim):
                return None  # C-contiguous only: the pointer arithmetic relies on it
        if not isinstance(ci.dtype, types.Integer) or {cv.dtype, Eu.dtype, out.dtype} != {
            types.float32
        }:
            return None
        sig = types.void(ci, cv, Eu, out, r, j, k0, k1)

        def codegen(context, builder, signature, args):
            tys = signature.args
            ci_a, cv_a, e_a, o_a = (
                context.make_array(t)(context, builder, value=v)
                for t, v in zip(tys[:4], args[:4], strict=True)
            )
            r, j, k0, k1 = (
                context.cast(builder, v, t, types.int64)
                for t, v in zip(tys[4:], args[4:], strict=True)
            )
            i64 = ir.IntType(64)
            vty = ir.VectorType(ir.FloatType(), width)
            e_d = builder.extract_value(e_a.shape, 1)
            o_d = builder.extract_value(o_a.shape, 1)
            optr = builder.bitcast(
                builder.gep(o_a.data, [builder.add(builder.mul(r, o_d), j)]), vty.as_pointer()
            )
            acc0 = builder.load(optr, align=4)
            entry = builder.block
            head = builder.append_basic_block("axpy.head")
            body = builder.append_basic_block("axpy.body")
            done = builder.append_basic_block("axpy.done")
            builder.branch(head)
            builder.position_at_end(head)
            k = builder.phi(i64)
            acc = builder.phi(vty)
            k.add_incoming(k0, entry)
            acc.add_incoming(acc0, entry)
            builder.cbranch(builder.icmp_signed("<", k, k1), body, done)
            builder.position_at_end(body)
            c = context.cast(
                builder, builder.load(builder.gep(ci_a.data, [k])), tys[0].dtype, types.int64
            )
            v = builder.load(builder.gep(cv_a.data, [k]))
            eptr = builder.gep(e_a.data, [builder.add(builder.mul(c, e_d), j)])
            e = builder.load(builder.bitcast(eptr, vty.as_pointer()), align=4)
            vs = builder.insert_element(ir.Constant(vty, ir.Undefined), v, ir.Constant(i64, 0))
            zeros = ir.Constant(ir.VectorType(ir.IntType(32), width), [0] * width)
            vs = builder.shuffle_vector(vs, ir.Constant(vty, ir.Undefined), zeros)
            acc.add_incoming(builder.fadd(acc, builder.fmul(vs, e)), body)
            k.add_incoming(builder.add(k, ir.Constant(i64, 1)), body)
            builder.branch(head)
            builder.position_at_end(done)
            builder.store(acc, optr, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return axpy


_axpy64 = _axpy_segment(64)
_axpy32 = _axpy_segment(32)
_axpy16 = _axpy_segment(16)
_axpy8 = _axpy_segment(8)


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _row_chunk(ci, cv, Eu, out, r, k0, k1):  # pragma: no cover - numba
    """``out[r] += cv[k0:k1] @ Eu[ci[k0:k1]]``, 64 columns at a time in registers."""
    d = Eu.shape[1]
    j = 0
    while j + 64 <= d:
        _axpy64(ci, cv, Eu, out, r, j, k0, k1)
        j += 64
    if j + 32 <= d:
        _axpy32(ci, cv, Eu, out, r, j, k0, k1)
        j += 32
    if j + 16 <= d:
        _axpy16(ci, cv, Eu, out, r, j, k0, k1)
        j += 16
    if j + 8 <= d:
        _axpy8(ci, cv, Eu, out, r, j, k0, k1)
        j += 8
    if j < d:
        o = out[r]
        for k in range(k0, k1):
            e = Eu[ci[k]]
            v = cv[k]
            for jj in range(j, d):
                o[jj] += v * e[jj]


@njit(nogil=True, cache=True, boundscheck=False)
def _spmm_gene_chunks(ip, ci, cv, Eu, out, chunk, ptr):  # pragma: no cover - numba
    """out = X_sub @ Eu for a compacted CSR sub-block, gene chunk by gene chunk.

    ``ptr`` (rows) is scratch. For each chunk of ``chunk`` genes (its slab of ``Eu``
    stays in L2) and each row, the row's non-zeros in the chunk are added 64 output
    columns at a time with the accumulators in registers (:func:`_axpy_segment`).
    Duplicates add up. Unsorted rows are also right: a chunk stops at a row's first
    column beyond it, later chunks take the rest (only the summation order differs).
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
        last = g1 >= n_used
        for r in range(n):
            k0 = ptr[r]
            k1 = k0
            kend = ip[r + 1]
            if last:
                k1 = kend
            else:
                while k1 < kend and ci[k1] < g1:
                    k1 += 1
            if k1 > k0:
                _row_chunk(ci, cv, Eu, out, r, k0, k1)
                ptr[r] = k1


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
