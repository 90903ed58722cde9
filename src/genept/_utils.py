"""AnnData plumbing shared by every public function (written once, used everywhere)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

__all__ = [
    "check_adata",
    "get_matrix",
    "get_var_names",
    "is_dask",
    "write_results",
]


def is_dask(x: Any) -> bool:
    """Whether ``x`` is a dask array."""
    return type(x).__module__.startswith("dask.")


def check_adata(adata: Any, name: str = "adata") -> AnnData:
    """Raise a clear error unless ``adata`` is an AnnData."""
    if not isinstance(adata, AnnData):
        raise TypeError(f"`{name}` must be an AnnData, got {type(adata).__name__}")
    return adata


def get_matrix(adata: AnnData, *, layer: str | None = None, use_raw: bool | None = None):
    """The expression matrix to use, following scanpy's ``layer``/``use_raw`` rules.

    ``use_raw=None`` means: ``adata.X`` (scanpy's current default). Returns the
    matrix as stored (numpy, scipy sparse, dask, or an h5py-backed dataset).
    """
    if layer is not None and use_raw:
        raise ValueError("give either `layer` or `use_raw=True`, not both")
    if use_raw:
        if adata.raw is None:
            raise ValueError("use_raw=True but `adata.raw` is None; pass use_raw=False or a layer")
        return adata.raw.X
    if layer is not None:
        if layer not in adata.layers:
            raise KeyError(
                f"layer {layer!r} not in adata.layers (available: {list(adata.layers.keys())})"
            )
        return adata.layers[layer]
    return adata.X


def get_var_names(
    adata: AnnData, *, gene_symbols: str | None = None, use_raw: bool | None = None
) -> pd.Index:
    """Gene names: ``var_names`` or the column ``gene_symbols`` of ``var`` (or ``raw.var``)."""
    var = adata.raw.var if use_raw else adata.var
    if gene_symbols is None:
        return pd.Index(var.index.astype(str))
    if gene_symbols not in var.columns:
        raise KeyError(
            f"gene_symbols={gene_symbols!r} is not a column of {'adata.raw.var' if use_raw else 'adata.var'} "
            f"(columns: {list(var.columns)})"
        )
    return pd.Index(var[gene_symbols].astype(str).to_numpy())


def write_results(
    adata: AnnData,
    writes: list[tuple[str, str, Any]],
    *,
    copy: bool = False,
    log: Callable[[str], None] | None = None,
) -> AnnData | None:
    """Write all results at once, after every computation succeeded.

    ``writes`` holds ``(attr, key, value)`` with ``attr`` in ``obs``, ``var``,
    ``obsm``, ``varm``, ``uns``. Nothing is written until this is called, so a failed
    computation never leaves ``adata`` half-written. With ``copy=True`` a modified copy
    is returned and ``adata`` stays untouched.
    """
    if copy:  # a backed AnnData copies only to a file; load it into memory instead
        target = adata.to_memory() if adata.isbacked else adata.copy()
    else:
        target = adata
    done = []
    undo: list[tuple[Any, str, bool, Any]] = []
    try:
        for attr, key, value in writes:
            store = getattr(target, attr)
            had = key in store
            undo.append((store, key, had, store[key] if had else None))
            store[key] = value
            done.append(f"{attr}[{key!r}]")
    except BaseException:
        # a rejected value (wrong shape, index…) must not leave earlier writes behind
        for store, key, had, old in reversed(undo):
            try:
                if had:
                    store[key] = old
                elif key in store:
                    del store[key]
            except Exception:  # pragma: no cover - best effort
                pass
        raise
    if log is not None and done:
        log("    added\n" + "\n".join(f"    {d}" for d in done))
    return target if copy else None


def as_float_block(block) -> np.ndarray | sparse.csr_matrix:
    """A chunk of an expression matrix as CSR or a C-contiguous numpy array."""
    if sparse.issparse(block):
        return sparse.csr_matrix(block)
    return np.ascontiguousarray(np.asarray(block))
