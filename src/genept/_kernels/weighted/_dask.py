"""GenePT-w on dask arrays: one lazy kernel call per row chunk."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from scipy import sparse

from ..._core._blocks import is_backed_sparse
from ._cpu import _cpu_block
from ._plan import _DEFAULT_BLOCK_ROWS, _n_jobs, _normalize_rows, _Plan, _Stats
from ._torch import _embed_torch


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


def _as_dask(X: Any, block_rows: int):
    """In-memory or backed ``X`` as a lazy dask array of row chunks (nothing is read yet).

    Chunks span all genes; sparse input stays sparse (CSR) chunk by chunk.
    """
    import dask.array as da

    if sparse.issparse(X):
        if X.format != "csr":
            X = sparse.csr_matrix(X)  # row slices of CSC/COO would re-scan every column
        meta = sparse.csr_matrix((0, 0), dtype=X.dtype)
    elif is_backed_sparse(X):
        meta = sparse.csr_matrix((0, 0), dtype=getattr(X, "dtype", np.float32))
    else:
        meta = np.empty((0, 0), dtype=getattr(X, "dtype", np.float32))
    return da.from_array(
        X, chunks=(block_rows, int(X.shape[1])), asarray=False, name=False, meta=meta
    )
