"""GenePT-w on the CPU: row blocks through numba kernels or BLAS.

``weighted_embedding(X, E)`` computes ``X @ E`` for a cells x genes expression matrix
and a genes x d embedding matrix, streaming over row blocks of ``X`` whatever its
container (numpy, scipy sparse, dask, h5py / anndata backed), then normalises rows.

CPU kernels (chosen per row block)
----------------------------------
* **sparse**: each sub-block of ``_SPARSE_ROWS`` rows is compacted (in cache) to a CSR
  over the genes that have an embedding, then processed gene chunk by gene chunk: a
  chunk of ``_gene_chunk(d)`` genes of ``E`` (128 genes: 192 KiB at d=384, 768 KiB at
  d=1536) stays in L2 for all rows of the sub-block, and each row adds its non-zeros of
  that chunk to its output row 64 columns at a time, the 64 accumulators held in vector
  registers across the non-zeros (:func:`._numba._axpy_segment`): per non-zero one load
  of a 256-byte embedding segment from L2, a multiply and an add; the output row is read
  and written once per chunk. The kernel is bound by L2 bandwidth (about 24-28 of the
  32 bytes per cycle an AMD EPYC core reads from L2), where scipy's CSR @ dense streams
  each embedding row from memory and our previous kernel also loaded and stored an L1
  accumulator per non-zero (1.7-2.1x slower). Numba, ``nogil``, sub-blocks run on
  ``n_jobs`` threads. Each output element is summed over genes in increasing order in
  float32, multiply then add (never fused), the operations of scipy's CSR kernel on
  sorted indices, so results are bitwise equal to ``scipy X @ E`` (float32) on
  canonical CSR.
* **dense**: the block is densified to the used genes only and multiplied with BLAS
  (float32 GEMM).

The rule: dense GEMM when the block's density over the used genes is at least
``_dense_threshold(d)``: 15 % for d < 1024, 22 % for larger d (measured break-even on
a 2-core AMD EPYC: GEMM ~40 GFLOP/s, sparse kernel ~8-15 GFLOP/s of useful work).
scRNA-seq (2-10 % density) therefore takes the sparse kernel; dense numpy input and
small dense panels take the GEMM.

GPU pipeline: see :mod:`._torch`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
from scipy import sparse

from ._numba import (
    _compact_scan_csr,
    _densify_used,
    _scan_csr,
    _scan_dense,
    _spmm_gene_chunks,
)
from ._plan import (
    _SUB_ROWS,
    _as_block,
    _normalize_rows,
    _Plan,
    _progress,
    _raise_if_bad,
    _row_blocks,
    _Stats,
    _sub_ranges,
)

_SLAB_BYTES = 3 * 2**18  # at most this much of E per gene chunk: 768 KiB (~L2)
_SPARSE_ROWS = 512  # rows per sparse sub-block (one task of the thread pool)


def _gene_chunk(d: int) -> int:
    """Genes per chunk of the sparse kernel.

    128 (192 KiB of ``E`` at d=384, 768 KiB at d=1536: measured best of 48-512 on 2
    cores with 512-row sub-blocks, whose output rows share L2 with the chunk), more for
    small d (192 KiB), fewer above d=1536 (768 KiB).
    """
    return min(max(128, 192 * 1024 // (4 * d)), max(16, _SLAB_BYTES // (4 * d)))


def _dense_threshold(d: int) -> float:
    """Density (over used genes) from which densify + GEMM beats the sparse kernel.

    Measured on 2 cores (AMD EPYC, AVX2, OpenBLAS) with both kernels forced on the same
    4096-row blocks: sparse/dense time ratio ~0.3 at 5 %, ~0.5-0.65 at 10 %, ~0.8-1.5 at
    20 %, >1.3 at 30 %, >2 at 50 % density; the break-even is near 15 % for d <= 384
    and near 22 % for d = 1536 (the sparse kernel's tiles amortise better there).
    """
    return 0.15 if d < 1024 else 0.22


def _pmap(pool: ThreadPoolExecutor | None, fn, items):
    if pool is None or len(items) <= 1:
        return [fn(it) for it in items]
    return list(pool.map(fn, items))


def _blas_gemm(A: np.ndarray, B: np.ndarray, n_jobs: int) -> np.ndarray:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return A @ B
    with threadpool_limits(limits=n_jobs, user_api="blas"):
        return A @ B


def _choose_kernel(res, stats: _Stats, *, check: bool, n: int, plan: _Plan, force) -> str:
    """Fold the scans' ``(min, n_bad, nnz_used)`` into ``stats``, check, pick the kernel."""
    for vmin, n_bad, _ in res:
        stats.update(vmin, n_bad)
    if check:
        _raise_if_bad(stats)
    density = sum(r[2] for r in res) / (n * plan.n_used)
    return force or ("dense" if density >= _dense_threshold(plan.d) else "sparse")


def _cpu_block(
    block: Any,
    plan: _Plan,
    out: np.ndarray,
    wsum: np.ndarray,
    stats: _Stats,
    *,
    check: bool,
    n_jobs: int,
    pool: ThreadPoolExecutor | None,
    force: Literal["sparse", "dense"] | None = None,
) -> str:
    """Raw ``block @ E`` into ``out`` (rows x d float32), weight sums into ``wsum``.

    Returns the kernel used (``"sparse"`` or ``"dense"``).
    """
    n = out.shape[0]
    if n == 0:
        return "none"
    if plan.n_used == 0:
        # still scan for the checks
        block = _as_block(block)
        if sparse.issparse(block):
            vmin, n_bad, _ = _scan_csr(block.indptr, block.indices, block.data, plan.colmap, wsum)
        else:
            vmin, n_bad, _ = _scan_dense(block, plan.used_mask, wsum)
        stats.update(vmin, n_bad)
        if check:
            _raise_if_bad(stats)
        out[:] = 0
        return "none"
    block = _as_block(block)
    subs = _sub_ranges(n, _SPARSE_ROWS)

    if not sparse.issparse(block):
        # dense block: scan, then GEMM or CSR + sparse kernel
        def scan_dense(rng):
            a, b = rng
            return _scan_dense(block[a:b], plan.used_mask, wsum[a:b])

        res = _pmap(pool, scan_dense, _sub_ranges(n, max(1, -(-n // max(n_jobs, 1)))))
        kind = _choose_kernel(res, stats, check=check, n=n, plan=plan, force=force)
        if kind == "dense":
            A = block if plan.n_used == plan.n_genes else block[:, plan.used]
            out[:] = _blas_gemm(np.asarray(A, dtype=np.float32), plan.E_used, n_jobs)
            return "dense"
        block = sparse.csr_matrix(block)
        _sparse_kernel(block, plan, out, pool, subs)
        return "sparse"

    indptr, indices, data = block.indptr, block.indices, block.data
    nnz_all = int(indptr[n]) - int(indptr[0])
    if force == "sparse" or (
        force is None and nnz_all < _dense_threshold(plan.d) * n * plan.n_used
    ):
        # sparse for sure (even if every non-zero were on a used gene): scan while compacting
        res = _sparse_kernel(block, plan, out, pool, subs, wsum=wsum)
        return _choose_kernel(res, stats, check=check, n=n, plan=plan, force="sparse")

    def scan(rng):
        a, b = rng
        return _scan_csr(indptr[a : b + 1], indices, data, plan.colmap, wsum[a:b])

    res = _pmap(pool, scan, _sub_ranges(n, max(_SUB_ROWS, -(-n // max(n_jobs, 1)))))
    kind = _choose_kernel(res, stats, check=check, n=n, plan=plan, force=force)
    if kind == "dense":
        dense = np.empty((n, plan.n_used), np.float32)

        def densify(rng):
            a, b = rng
            _densify_used(indptr[a : b + 1], indices, data, plan.colmap, dense[a:b])

        _pmap(pool, densify, subs)
        out[:] = _blas_gemm(dense, plan.E_used, n_jobs)
        return "dense"
    _sparse_kernel(block, plan, out, pool, subs)
    return "sparse"


def _sparse_kernel(block, plan: _Plan, out, pool, subs, wsum=None) -> list:
    """The sparse kernel over sub-blocks ``subs``.

    With ``wsum``, also the scan (weight sums into ``wsum``; each sub-block's
    ``(min, n_bad, nnz_used)`` returned), saving a pass over the block.
    """
    indptr, indices, data = block.indptr, block.indices, block.data
    Eu = plan.E_used
    chunk = _gene_chunk(plan.d)

    def work(rng):
        a, b = rng
        ws = wsum[a:b] if wsum is not None else np.empty(b - a)
        ip, ci, cv, *res = _compact_scan_csr(indptr[a : b + 1], indices, data, plan.colmap, ws)
        _spmm_gene_chunks(ip, ci, cv, Eu, out[a:b], chunk, np.empty(b - a, np.int64))
        return res

    return _pmap(pool, work, subs)


def _embed_cpu(
    X,
    plan: _Plan,
    *,
    normalize,
    n_total,
    block_rows,
    n_jobs,
    check,
    show_progress,
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and weight sums of ``X``, row block by row block, on ``n_jobs`` threads.

    Each block goes through :func:`_cpu_block` (looked up at call time: tests spy on it
    to see which kernel ran).
    """
    n = X.shape[0]
    emb = np.empty((n, plan.d), np.float32)
    wsum = np.empty(n, np.float64)
    stats = _Stats()
    pool = ThreadPoolExecutor(n_jobs) if n_jobs > 1 else None
    try:
        with _progress(n, show_progress, "GenePT-w") as bar:
            for a, b, blk in _row_blocks(X, block_rows):
                _cpu_block(
                    blk, plan, emb[a:b], wsum[a:b], stats, check=check, n_jobs=n_jobs, pool=pool
                )
                _normalize_rows(emb[a:b], normalize, n_total)
                bar.update(b - a)
    finally:
        if pool is not None:
            pool.shutdown()
    return emb, wsum
