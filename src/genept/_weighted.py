"""Numerical core of GenePT-w: expression-weighted sum of gene embeddings.

``weighted_embedding(X, E)`` computes ``X @ E`` for a cells x genes expression matrix
and a genes x d embedding matrix, streaming over row blocks of ``X`` whatever its
container (numpy, scipy sparse, dask, h5py / anndata backed), then normalises rows.

CPU kernels (chosen per row block)
----------------------------------
* **sparse**: each sub-block of ``_SUB_ROWS`` rows is compacted (in cache) to a CSR
  over the genes that have an embedding, then processed gene chunk by gene chunk: a
  chunk's slab of ``E`` (``_SLAB_BYTES``, L2-resident) is shared by all rows of the
  sub-block, and each row adds its non-zeros of that chunk into an accumulator the size
  of one output row that stays in L1. Per non-zero the kernel reads one embedding row
  from L2 and writes nothing, where scipy's CSR @ dense streams that row from memory
  (and an earlier column-wise version of ours read and wrote an output row in L2).
  Numba, ``nogil``, sub-blocks run on ``n_jobs`` threads. Each output element is summed
  over genes in increasing order in float32, the order of scipy's CSR kernel on sorted
  indices, so results are bitwise equal to ``scipy X @ E`` (float32) on canonical CSR.
* **dense**: the block is densified to the used genes only and multiplied with BLAS
  (float32 GEMM).

The rule: dense GEMM when the block's density over the used genes is at least
``_dense_threshold(d)``: 15 % for d < 1024, 22 % for larger d (measured break-even on
a 2-core AMD EPYC: GEMM ~40 GFLOP/s, sparse kernel ~8-15 GFLOP/s of useful work).
scRNA-seq (2-10 % density) therefore takes the sparse kernel; dense numpy input and
small dense panels take the GEMM.

GPU kernel: see :func:`_embed_torch`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
from numba import njit
from scipy import sparse

from ._core._device import resolve_device
from ._kernels.weighted._plan import (
    _DEFAULT_BLOCK_ROWS,
    _SUB_ROWS,
    Normalize,
    Precision,
    _as_block,
    _default_block_rows,
    _make_plan,
    _n_jobs,
    _normalize_rows,
    _Plan,
    _progress,
    _raise_if_bad,
    _row_blocks,
    _Stats,
    _sub_ranges,
)
from ._kernels.weighted._torch import _embed_torch
from ._settings import settings
from ._utils import is_dask

__all__ = ["weighted_embedding"]

_SLAB_BYTES = 3 * 2**18  # gene chunk of E shared by a sub-block's rows: 768 KiB (~L2)


def _dense_threshold(d: int) -> float:
    """Density (over used genes) from which densify + GEMM beats the sparse kernel.

    Measured on 2 cores (AMD EPYC, AVX2, OpenBLAS) with both kernels forced on the same
    4096-row blocks: sparse/dense time ratio ~0.3 at 5 %, ~0.5-0.65 at 10 %, ~0.8-1.5 at
    20 %, >1.3 at 30 %, >2 at 50 % density; the break-even is near 15 % for d <= 384
    and near 22 % for d = 1536 (the sparse kernel's tiles amortise better there).
    """
    return 0.15 if d < 1024 else 0.22


# --------------------------------------------------------------------------- kernels


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


# --------------------------------------------------------------------------- plan


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
    subs = _sub_ranges(n, _SUB_ROWS)

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


def _sparse_kernel(block, plan: _Plan, out, pool, subs) -> None:
    indptr, indices, data = block.indptr, block.indices, block.data
    Eu = plan.E_used
    chunk = max(16, _SLAB_BYTES // (4 * plan.d))

    def work(rng):
        a, b = rng
        ip, ci, cv = _compact_csr(indptr[a : b + 1], indices, data, plan.colmap)
        ptr = np.empty(b - a, np.int64)
        acc = np.empty(plan.d, np.float32)
        _spmm_gene_chunks(ip, ci, cv, Eu, out[a:b], chunk, ptr, acc)

    _pmap(pool, work, subs)


def weighted_embedding(
    X: Any,
    E: Any,
    *,
    normalize: Normalize = "l2",
    n_genes_total: int | None = None,
    device: str = "auto",
    precision: Precision = "fp32",
    block_rows: int | None = None,
    n_jobs: int | None = None,
    check: bool = True,
    out: Literal["numpy", "dask"] = "numpy",
    show_progress: bool | None = None,
) -> tuple[Any, Any]:
    """GenePT-w cell embeddings: ``X @ E`` streamed over row blocks, then normalised.

    Parameters
    ----------
    X
        Cells x genes non-negative normalised expression (e.g. ``normalize_total`` +
        ``log1p``): numpy, scipy sparse (CSR/CSC, matrix or array), dask array (dense or
        scipy-sparse chunks), h5py dataset or anndata backed sparse dataset (read in row
        chunks, never loaded whole).
    E
        Genes x d gene embeddings, aligned with the columns of ``X``; genes without an
        embedding are zero rows (they are dropped from the computation).
    normalize
        ``"l2"``: unit-norm rows (GenePT-w; a cell with no expressed embedded gene is a
        zero row, never NaN). ``"notebook"``: ``X @ E / n_genes_total`` as in the
        official GenePT notebook. ``"none"``: raw ``X @ E``.
    n_genes_total
        Divisor of ``"notebook"``; defaults to ``X.shape[1]``.
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available).
    precision
        GPU GEMM precision: ``"fp32"`` (default), ``"tf32"`` or ``"bf16"`` (inputs
        rounded, fp32 accumulation). The CPU path is always fp32.
    block_rows
        Rows per streamed block (default 4096 for sparse; ~256 MiB for dense). Peak
        extra memory is proportional to it, independent of the number of cells.
    n_jobs
        CPU threads (default: all available cores).
    check
        Raise :class:`ValueError` on NaN/inf or negative values of ``X``, checked in the
        same streaming pass.
    out
        ``"numpy"`` or, for dask ``X``, ``"dask"`` (lazy; checks run at compute time).
    show_progress
        Progress bar over row blocks; default :attr:`genept.settings.progress`.

    Returns
    -------
    emb
        Cells x d float32 embeddings (dask array with ``out="dask"``).
    weight_sum
        Float64 per cell: its total expression over genes with an embedding (zero means
        the cell's embedding is zero). Lazy with ``out="dask"``.

    Notes
    -----
    The CPU result equals scipy's float32 ``X @ E`` to within float32 rounding (bitwise
    on canonical CSR input); against a float64 reference the error is
    ``<= ~n_nnz * 2**-24 * (|X| @ |E|)`` per entry. The fp32 GPU path agrees within
    ``rtol ~1e-5``.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import sparse
    >>> X = sparse.random(5, 20, density=0.3, format="csr", dtype=np.float32, random_state=0)
    >>> E = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
    >>> emb, w = weighted_embedding(X, E, device="cpu")
    >>> emb.shape, w.dtype
    ((5, 8), dtype('float64'))
    """
    if normalize not in ("l2", "notebook", "none"):
        raise ValueError(f"normalize must be 'l2', 'notebook' or 'none', got {normalize!r}")
    if precision not in ("fp32", "tf32", "bf16"):
        raise ValueError(f"precision must be 'fp32', 'tf32' or 'bf16', got {precision!r}")
    if out not in ("numpy", "dask"):
        raise ValueError(f"out must be 'numpy' or 'dask', got {out!r}")
    if len(getattr(X, "shape", ())) != 2:
        raise ValueError(f"X must be a 2-D cells x genes matrix, got {type(X).__name__}")
    plan = _make_plan(E)
    g = int(X.shape[1])
    if g != plan.n_genes:
        raise ValueError(
            f"X has {g} genes (columns) but E has {plan.n_genes} rows; align E to X's columns"
        )
    n_total = g if n_genes_total is None else int(n_genes_total)
    if normalize == "notebook" and n_total <= 0:
        raise ValueError(f"n_genes_total must be positive, got {n_total}")
    if show_progress is None:
        show_progress = settings.progress
    dev = resolve_device(device)

    if is_dask(X):
        return _embed_dask(
            X,
            plan,
            normalize=normalize,
            n_total=n_total,
            device=dev,
            precision=precision,
            block_rows=block_rows,
            n_jobs=n_jobs,
            check=check,
            out=out,
        )
    if out == "dask":
        import dask.array as da

        emb, ws = weighted_embedding(
            X,
            E,
            normalize=normalize,
            n_genes_total=n_genes_total,
            device=device,
            precision=precision,
            block_rows=block_rows,
            n_jobs=n_jobs,
            check=check,
            show_progress=show_progress,
        )
        return da.from_array(emb), da.from_array(ws)

    if block_rows is None:
        block_rows = _default_block_rows(X, g)
    block_rows = max(1, int(block_rows))
    if dev.startswith("cuda"):
        return _embed_torch(
            X,
            plan,
            normalize=normalize,
            n_total=n_total,
            device=dev,
            precision=precision,
            block_rows=block_rows,
            check=check,
            show_progress=show_progress,
        )
    return _embed_cpu(
        X,
        plan,
        normalize=normalize,
        n_total=n_total,
        block_rows=block_rows,
        n_jobs=_n_jobs(n_jobs),
        check=check,
        show_progress=show_progress,
    )


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
    kernel_log: list | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    n = X.shape[0]
    emb = np.empty((n, plan.d), np.float32)
    wsum = np.empty(n, np.float64)
    stats = _Stats()
    pool = ThreadPoolExecutor(n_jobs) if n_jobs > 1 else None
    try:
        with _progress(n, show_progress, "GenePT-w") as bar:
            for a, b, blk in _row_blocks(X, block_rows):
                kind = _cpu_block(
                    blk, plan, emb[a:b], wsum[a:b], stats, check=check, n_jobs=n_jobs, pool=pool
                )
                if kernel_log is not None:
                    kernel_log.append(kind)
                _normalize_rows(emb[a:b], normalize, n_total)
                bar.update(b - a)
    finally:
        if pool is not None:
            pool.shutdown()
    return emb, wsum


# --------------------------------------------------------------------------- dask


def _dask_chunk(block, plan: _Plan, normalize, n_total, n_jobs, check, device, precision):
    """One dask chunk -> float32 (rows, d + 2): embedding, then weight sums as float64 bits."""
    rows = block.shape[0]
    packed = np.empty((rows, plan.d + 2), np.float32)
    if device.startswith("cuda"):
        emb, ws = _embed_torch(
            block,
            plan,
            normalize=normalize,
            n_total=n_total,
            device=device,
            precision=precision,
            block_rows=max(1, min(rows, _DEFAULT_BLOCK_ROWS)),
            check=check,
            show_progress=False,
        )
        packed[:, : plan.d] = emb
    else:
        emb = np.empty((rows, plan.d), np.float32)
        ws = np.empty(rows, np.float64)
        stats = _Stats()
        pool = ThreadPoolExecutor(n_jobs) if n_jobs > 1 else None
        try:
            _cpu_block(block, plan, emb, ws, stats, check=check, n_jobs=n_jobs, pool=pool)
        finally:
            if pool is not None:
                pool.shutdown()
        _normalize_rows(emb, normalize, n_total)
        packed[:, : plan.d] = emb
    packed[:, plan.d :] = ws.reshape(rows, 1).view(np.float32).reshape(rows, 2)
    return packed


def _unpack_wsum(b):
    return np.ascontiguousarray(b).view(np.float64).reshape(-1)


def _embed_dask(X, plan, *, normalize, n_total, device, precision, block_rows, n_jobs, check, out):
    import dask
    import dask.array as da

    if len(X.chunks[1]) != 1:
        X = X.rechunk({1: -1})  # a row chunk must span all genes
    if block_rows is not None:
        X = X.rechunk({0: block_rows})
    # one thread per task by default: dask already runs chunks in parallel
    nj = 1 if n_jobs is None else _n_jobs(n_jobs)
    plan_d = dask.delayed(plan, pure=True)
    packed = da.map_blocks(
        _dask_chunk,
        X,
        plan_d,
        normalize,
        n_total,
        nj,
        check,
        device,
        precision,
        chunks=(X.chunks[0], (plan.d + 2,)),
        dtype=np.float32,
        meta=np.empty((0, 0), np.float32),
    )
    emb = packed[:, : plan.d]
    wsum = packed[:, plan.d :].map_blocks(
        _unpack_wsum, drop_axis=1, dtype=np.float64, meta=np.empty((0,), np.float64)
    )
    if out == "dask":
        return emb, wsum
    emb_np, wsum_np = dask.compute(emb, wsum)
    return np.ascontiguousarray(emb_np, dtype=np.float32), np.asarray(wsum_np, dtype=np.float64)
