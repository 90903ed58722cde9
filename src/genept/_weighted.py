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

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numba import njit
from scipy import sparse

from ._settings import settings
from ._utils import is_dask

__all__ = ["weighted_embedding"]

Normalize = Literal["l2", "notebook", "none"]
Precision = Literal["fp32", "tf32", "bf16"]

_SUB_ROWS = 256  # rows per sparse sub-block (one task of the thread pool)
_SLAB_BYTES = 3 * 2**18  # gene chunk of E shared by a sub-block's rows: 768 KiB (~L2)
_DEFAULT_BLOCK_ROWS = 4096
_DENSE_BLOCK_BYTES = 256 * 2**20  # default row block of a dense X: about this many bytes


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


@dataclass
class _Plan:
    """Everything about ``E`` that the kernels need, prepared once."""

    E: np.ndarray  # (g, d) float32
    used: np.ndarray  # int64 indices of genes with a non-zero embedding row
    colmap: np.ndarray  # (g,) int32, -1 for unused genes
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _E_used: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_genes(self) -> int:
        return self.E.shape[0]

    @property
    def d(self) -> int:
        return self.E.shape[1]

    @property
    def n_used(self) -> int:
        return self.used.size

    @property
    def used_mask(self) -> np.ndarray:
        return self.colmap >= 0

    @property
    def E_used(self) -> np.ndarray:
        with self._lock:
            if self._E_used is None:
                self._E_used = (
                    self.E
                    if self.n_used == self.n_genes
                    else np.ascontiguousarray(self.E[self.used])
                )
            return self._E_used

    def __getstate__(self):  # ship only E across processes; caches rebuild lazily
        return {"E": self.E, "used": self.used, "colmap": self.colmap}

    def __setstate__(self, state):
        self.__init__(**state)


def _make_plan(E: Any) -> _Plan:
    E = np.asarray(E)
    if E.ndim != 2:
        raise ValueError(f"E must be a 2-D genes x d matrix, got shape {E.shape}")
    E = np.ascontiguousarray(E, dtype=np.float32)
    if not np.isfinite(E).all():
        raise ValueError(
            "E has NaN or infinite values; genes without an embedding must be zero rows"
        )
    used = np.flatnonzero(np.any(E != 0, axis=1))
    colmap = np.full(E.shape[0], -1, np.int32)
    colmap[used] = np.arange(used.size, dtype=np.int32)
    return _Plan(E=E, used=used, colmap=colmap)


# --------------------------------------------------------------------------- CPU block


@dataclass
class _Stats:
    vmin: float = np.inf
    n_bad: int = 0

    def update(self, vmin: float, n_bad: int) -> None:
        self.vmin = min(self.vmin, float(vmin))
        self.n_bad += int(n_bad)


def _raise_if_bad(stats: _Stats) -> None:
    if stats.n_bad:
        raise ValueError(
            f"X has {stats.n_bad} NaN or infinite values: GenePT-w needs finite non-negative "
            "normalised expression; clean the matrix or pass another `layer=`"
        )
    if stats.vmin < 0:
        raise ValueError(
            f"X has negative values (min {stats.vmin:.4g}): GenePT-w needs non-negative "
            "normalised expression; did you pass scaled data? use layer=... or use_raw=True"
        )


def _sub_ranges(n: int, step: int) -> list[tuple[int, int]]:
    return [(a, min(a + step, n)) for a in range(0, n, step)]


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


def _as_block(block: Any):
    """A row block as canonical float32 CSR (int32/int64 indices) or C-contiguous float32."""
    if sparse.issparse(block):
        if block.format != "csr":
            block = sparse.csr_matrix(block)
        elif not isinstance(block, sparse.csr_matrix):
            block = sparse.csr_matrix(block)
        if block.data.dtype != np.float32:
            block = block.astype(np.float32)
        return block
    if hasattr(block, "toarray") and not isinstance(block, np.ndarray):  # e.g. np.matrix-like
        block = block.toarray()
    return np.ascontiguousarray(np.asarray(block), dtype=np.float32)


def _normalize_rows(emb: np.ndarray, normalize: Normalize, n_total: int) -> None:
    """In place, float32 output; zero rows stay zero (never NaN)."""
    if normalize == "l2":
        norms = np.sqrt(np.einsum("ij,ij->i", emb, emb, dtype=np.float64))
        nz = norms > 0
        emb[nz] /= norms[nz, None].astype(np.float32)
    elif normalize == "notebook":
        emb /= np.float32(n_total)
    elif normalize != "none":
        raise ValueError(f"normalize must be 'l2', 'notebook' or 'none', got {normalize!r}")


# --------------------------------------------------------------------------- sources


def _n_jobs(n_jobs: int | None) -> int:
    if n_jobs is None or n_jobs == 0:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover
            return os.cpu_count() or 1
    if n_jobs < 0:
        return max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    return n_jobs


def _default_block_rows(X: Any, n_genes: int) -> int:
    if sparse.issparse(X) or _is_backed_sparse(X):
        return _DEFAULT_BLOCK_ROWS
    return int(max(_SUB_ROWS, min(65536, _DENSE_BLOCK_BYTES // max(1, 4 * n_genes))))


def _is_backed_sparse(X: Any) -> bool:
    mod = type(X).__module__
    return mod.startswith("anndata") and hasattr(X, "format") and hasattr(X, "shape")


def _row_blocks(X: Any, block_rows: int) -> Iterator[tuple[int, int, Any]]:
    """Row blocks of X as (start, stop, block); reads only that slice from disk."""
    n = X.shape[0]
    if sparse.issparse(X) and X.format != "csr":
        X = sparse.csr_matrix(X)  # CSC etc.: one conversion, then O(1) row slices
    if sparse.issparse(X):
        indptr, indices, data = X.indptr, X.indices, X.data
        for a in range(0, n, block_rows):
            b = min(a + block_rows, n)
            lo, hi = indptr[a], indptr[b]
            # zero-copy CSR view of the rows
            blk = sparse.csr_matrix(
                (data[lo:hi], indices[lo:hi], indptr[a : b + 1] - lo), shape=(b - a, X.shape[1])
            )
            yield a, b, blk
        return
    for a in range(0, n, block_rows):
        b = min(a + block_rows, n)
        yield a, b, X[a:b]


# --------------------------------------------------------------------------- public


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
    dev = _resolve_device(device)

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


def _resolve_device(device: str) -> str:
    if device == "cpu":
        return "cpu"
    if device == "auto":
        try:
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:  # pragma: no cover
            return "cpu"
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device={device!r} but torch.cuda.is_available() is False; use 'cpu'"
            )
        return device
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")


def _progress(total: int, show: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not show, desc=desc, unit="rows")


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


# --------------------------------------------------------------------------- torch / CUDA

_GPU_CUSPARSE_BELOW = 0.01  # density (over used genes) under which cuSPARSE SpMM is used
_GPU_PINNED_OUT_BYTES = 4 * 2**30  # outputs up to this size are pinned: D2H goes straight in
_STAGE_SPLIT_BYTES = 8 * 2**20  # host staging copies are split across threads above this


def _par_copy(
    dst: np.ndarray, src: np.ndarray, pool: ThreadPoolExecutor | None, workers: int
) -> None:
    """``dst[:] = src`` split across ``pool`` (numpy releases the GIL for plain copies)."""
    n = src.shape[0]
    parts = 1 if pool is None else min(workers, max(1, src.nbytes // _STAGE_SPLIT_BYTES))
    if parts <= 1:
        dst[:] = src
        return

    def cp(rng):
        a, b = rng
        dst[a:b] = src[a:b]

    list(pool.map(cp, _sub_ranges(n, -(-n // parts))))


class _Slot:
    """Host staging buffers of one in-flight block (pinned on CUDA), grown on demand."""

    def __init__(self, pin: bool):
        self.pin = pin
        self.bufs: dict[str, Any] = {}
        self.h2d_done = None  # CUDA event: the input buffers may be overwritten after it
        self.d2h_done = None  # CUDA event: the output buffers hold the results after it
        self.pending = None  # (start, stop, emb buffer, weight-sum buffer) not yet copied

    def host(self, name: str, n: int, dtype):
        import torch

        t = self.bufs.get(name)
        if t is None or t.numel() < n or t.dtype != dtype:  # grow by 1.25x: fewer re-pins
            t = torch.empty(max(int(n * 1.25), 1), dtype=dtype, pin_memory=self.pin)
            self.bufs[name] = t
        return t[:n]


_TORCH_INDEX = {np.dtype(np.int32): "int32", np.dtype(np.int64): "int64"}


_GPU_LOCK = threading.Lock()  # one GPU run at a time (dask threads; global matmul flags)


def _set_fp32_matmul(precision: str):
    """Set torch's fp32 matmul mode for ``precision``; returns a function restoring it."""
    import torch

    try:
        prev = torch.get_float32_matmul_precision()
    except RuntimeError:  # legacy and new flags were mixed by the caller
        prev = None
    torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")

    def restore():
        torch.set_float32_matmul_precision(prev or "highest")

    return restore


def _embed_torch(
    X, plan: _Plan, *, normalize, n_total, device, precision, block_rows, check, show_progress
) -> tuple[np.ndarray, np.ndarray]:
    """GPU path (torch; also runs on a torch CPU device, which is how CI tests its logic).

    A stager thread reads the next row block (from memory, disk or dask), converts it to
    CSR and copies indptr / indices (kept int32) / data into a slot of pinned host
    buffers, the copy split across threads, while the GPU works on the current block.
    Each slot goes to the GPU on a copy stream; the compute stream waits for it (event),
    densifies the block over the used genes (one ``index_add_`` scatter; columns padded
    to a multiple of 16 for aligned tensor-core GEMMs) and multiplies it by the resident
    ``E_used``: fp32 IEEE, TF32 or bf16 (fp32 output where cuBLAS offers it). Below
    ``_GPU_CUSPARSE_BELOW`` density the stager drops unembedded genes and remaps columns
    on the host (cheap at that density) and cuSPARSE SpMM (fp32) is used. Normalised
    rows go back on a third stream into the slot's pinned output buffers and are copied
    into the numpy result when the slot comes round again. GPU memory is bounded by a
    few blocks whatever the number of cells. Checks (min, non-finite) accumulate on the
    device and are read at the end.
    """
    import torch

    dev = torch.device(device)
    with _GPU_LOCK if dev.type == "cuda" else contextlib.nullcontext():
        return _embed_torch_run(
            X, plan, dev, normalize, n_total, precision, block_rows, check, show_progress
        )


def _embed_torch_run(X, plan, dev, normalize, n_total, precision, block_rows, check, show_progress):
    import torch

    cuda = dev.type == "cuda"
    n, d = X.shape[0], plan.d
    n_used = plan.n_used
    emb_out = np.empty((n, d), np.float32)
    ws_out = np.empty(n, np.float64)
    if n == 0:
        return emb_out, ws_out
    mm_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    # E_used resident; unused genes map to the zero row n_used; K padded to 16 columns
    K = -(-(n_used + 1) // 16) * 16
    E_dev = torch.zeros((K, d), dtype=torch.float32, device=dev)
    if n_used:
        E_dev[:n_used].copy_(torch.from_numpy(plan.E_used))
    E_mm = E_dev if mm_dtype == torch.float32 else E_dev.to(mm_dtype)
    colmap = plan.colmap.astype(np.int64)
    colmap[colmap < 0] = n_used
    colmap_dev = torch.from_numpy(colmap).to(dev)
    vmin_dev = torch.full((), float("inf"), dtype=torch.float32, device=dev)
    nbad_dev = torch.zeros((), dtype=torch.int64, device=dev)

    copy_stream = torch.cuda.Stream(dev) if cuda else None
    d2h_stream = torch.cuda.Stream(dev) if cuda else None
    comp_stream = torch.cuda.current_stream(dev) if cuda else None
    slots = [_Slot(pin=cuda), _Slot(pin=cuda)]
    copy_workers = min(8, _n_jobs(None))
    copy_pool = ThreadPoolExecutor(copy_workers) if cuda and copy_workers > 1 else None
    stager = ThreadPoolExecutor(1)
    blocks = _row_blocks(X, block_rows)

    def stage(slot: _Slot):
        """Next block into the slot's host buffers; None at the end."""
        item = next(blocks, None)
        if item is None:
            return None
        a, b, blk = item
        blk = _as_block(blk)
        if not sparse.issparse(blk):
            blk = sparse.csr_matrix(blk)
        rows = b - a
        use_sparse = precision == "fp32" and blk.nnz < _GPU_CUSPARSE_BELOW * rows * max(n_used, 1)
        indptr, indices, data = blk.indptr, blk.indices, blk.data
        if use_sparse and blk.nnz:
            # cuSPARSE wants sorted, unique columns: drop unembedded genes, remap on the host
            if not blk.has_sorted_indices:
                blk = blk.sorted_indices()
                indptr, indices, data = blk.indptr, blk.indices, blk.data
            c = plan.colmap[indices]
            keep = c >= 0
            # unembedded genes still count for the checks: keep their bad values visible
            bad = ~np.isfinite(data) | (data < 0)
            keep |= bad
            c = np.where(keep & (c < 0), n_used, c)
            kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
            indptr = kept_before[indptr - indptr[0]]
            indices, data = c[keep].astype(np.int32), data[keep]
        if slot.h2d_done is not None:
            slot.h2d_done.synchronize()  # the slot's previous upload has left its buffers
        idx_dtype = getattr(torch, _TORCH_INDEX.get(np.dtype(indices.dtype), "int64"))
        h = (
            slot.host("indptr", rows + 1, torch.int64),
            slot.host("indices", indices.size, idx_dtype),
            slot.host("data", data.size, torch.float32),
        )
        for t, src in zip(h, (indptr, indices, data), strict=True):
            _par_copy(t.numpy(), src, copy_pool, copy_workers)
        return a, b, h, use_sparse and blk.nnz > 0

    def compute(d_indptr, d_idx, d_data, rows, use_sparse):
        nonlocal vmin_dev, nbad_dev
        nnz = d_idx.numel()
        counts = d_indptr[1:] - d_indptr[:-1]
        row_ids = torch.repeat_interleave(torch.arange(rows, device=dev), counts, output_size=nnz)
        cols = d_idx.long() if use_sparse else colmap_dev[d_idx.long()]
        finite = torch.isfinite(d_data)
        if nnz:
            nbad_dev = nbad_dev + (~finite).sum()
            vmin_dev = torch.minimum(vmin_dev, torch.where(finite, d_data, torch.inf).min())
        vals = torch.where(finite, d_data, 0.0)
        usedv = torch.where(cols < n_used, vals.double(), 0.0)
        ws = torch.zeros(rows, dtype=torch.float64, device=dev).index_add_(0, row_ids, usedv)
        if nnz == 0:
            emb = torch.zeros((rows, d), dtype=torch.float32, device=dev)
        elif use_sparse:
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.filterwarnings("ignore", "Sparse CSR tensor support", UserWarning)
                A = torch.sparse_csr_tensor(
                    d_indptr, cols, vals, size=(rows, K), check_invariants=False
                )
            emb = torch.sparse.mm(A, E_dev)
        else:
            dense = torch.zeros((rows, K), dtype=torch.float32, device=dev)
            dense.view(-1).index_add_(0, row_ids * K + cols, vals)
            A = dense if mm_dtype == torch.float32 else dense.to(mm_dtype)
            emb = None
            if cuda and mm_dtype != torch.float32:
                try:  # bf16 inputs, fp32 output (cuBLAS keeps the fp32 accumulator)
                    emb = torch.mm(A, E_mm, out_dtype=torch.float32)
                except (TypeError, RuntimeError):  # pragma: no cover - older torch
                    emb = None
            if emb is None:
                emb = (A @ E_mm).float()
        if normalize == "l2":
            norms = torch.linalg.vector_norm(emb.double(), dim=1, keepdim=True)
            emb = torch.where(norms > 0, emb / norms.clamp_min(1e-300).float(), emb)
        elif normalize == "notebook":
            emb = emb / float(n_total)
        return emb, ws

    def finish(slot: _Slot):
        """The slot's last results, once their D2H copy is done, into the numpy output."""
        if slot.pending is None:
            return
        a, b, h_emb, h_ws = slot.pending
        slot.pending = None
        slot.d2h_done.synchronize()
        _par_copy(emb_out[a:b], h_emb.numpy(), copy_pool, copy_workers)
        ws_out[a:b] = h_ws.numpy()

    restore = _set_fp32_matmul(precision) if cuda else None
    try:
        with _progress(n, show_progress, f"GenePT-w ({dev.type})") as bar:
            i = 0
            fut = stager.submit(stage, slots[0])
            while (item := fut.result()) is not None:
                a, b, h, use_sparse = item
                rows = b - a
                slot = slots[i % 2]
                finish(slot)  # block i - 2's results leave the slot's output buffers
                if cuda:
                    with torch.cuda.stream(copy_stream):
                        dev_in = [t.to(dev, non_blocking=True) for t in h]
                        slot.h2d_done = torch.cuda.Event()
                        slot.h2d_done.record(copy_stream)
                    fut = stager.submit(stage, slots[(i + 1) % 2])  # overlaps from here
                    comp_stream.wait_event(slot.h2d_done)
                    for t in dev_in:
                        t.record_stream(comp_stream)
                else:  # torch CPU: the stager fills the other slot meanwhile
                    dev_in = list(h)
                    fut = stager.submit(stage, slots[(i + 1) % 2])
                emb, ws = compute(*dev_in, rows, use_sparse)
                if cuda:
                    done = torch.cuda.Event()
                    done.record(comp_stream)
                    with torch.cuda.stream(d2h_stream):
                        d2h_stream.wait_event(done)
                        h_emb = slot.host("emb", rows * d, torch.float32).view(rows, d)
                        h_ws = slot.host("ws", rows, torch.float64)
                        h_emb.copy_(emb, non_blocking=True)
                        h_ws.copy_(ws, non_blocking=True)
                        emb.record_stream(d2h_stream)
                        ws.record_stream(d2h_stream)
                        slot.d2h_done = torch.cuda.Event()
                        slot.d2h_done.record(d2h_stream)
                    slot.pending = (a, b, h_emb, h_ws)
                else:
                    emb_out[a:b] = emb.numpy()
                    ws_out[a:b] = ws.numpy()
                bar.update(rows)
                i += 1
            for slot in slots:
                finish(slot)
        if cuda:
            torch.cuda.synchronize(dev)
        stats = _Stats(vmin=float(vmin_dev.item()), n_bad=int(nbad_dev.item()))
        if check:
            _raise_if_bad(stats)
    finally:
        stager.shutdown(wait=True, cancel_futures=True)
        if cuda:
            torch.cuda.synchronize(dev)  # no copy may still target a slot being freed
        if copy_pool is not None:
            copy_pool.shutdown()
        if restore is not None:
            restore()
    return emb_out, ws_out
