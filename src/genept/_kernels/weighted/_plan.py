"""GenePT-w plan: ``E`` prepared once, checks, row blocks and small shared helpers.

Imported by every GenePT-w kernel (CPU numba, dask adapter, torch pipeline).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import sparse

from ..._core._blocks import default_block_rows, iter_row_blocks
from ..._core._device import resolve_n_jobs
from ..._core._progress import progress_bar

Normalize = Literal["l2", "notebook", "none"]
Precision = Literal["fp32", "tf32", "bf16"]

_SUB_ROWS = 256  # rows per sparse sub-block (one task of the thread pool)
_DEFAULT_BLOCK_ROWS = 4096


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


def check_gene_embeddings(E: Any, name: str = "E", hint: str = "") -> np.ndarray:
    """``E`` as a C-contiguous float32 genes x d matrix, or a clear :class:`ValueError`.

    Refuses sparse, complex, non-2-D, zero-width (``d == 0``) and non-finite matrices.
    ``hint`` is appended to the messages (e.g. the command that rebuilds ``E``).
    """
    hint = f"; {hint}" if hint else ""
    if sparse.issparse(E):
        raise ValueError(f"{name} is a sparse matrix; gene embeddings must be dense{hint}")
    E = np.asarray(E)
    if E.ndim != 2:
        raise ValueError(f"{name} must be a 2-D genes x d matrix, got shape {E.shape}{hint}")
    if E.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {E.dtype}{hint}")
    if E.shape[1] == 0:
        raise ValueError(
            f"{name} has shape {E.shape}: zero-width gene embeddings (d == 0) give empty "
            f"cell embeddings{hint}"
        )
    E = np.ascontiguousarray(E, dtype=np.float32)
    n_bad = int((~np.isfinite(E).all(axis=1)).sum())
    if n_bad:
        raise ValueError(
            f"{name} has NaN or infinite values in {n_bad} gene rows (after float32 "
            f"conversion); genes without an embedding must be zero rows{hint}"
        )
    return E


def _make_plan(E: Any, *, checked: bool = False) -> _Plan:
    """The plan of ``E`` (validated by :func:`check_gene_embeddings` unless ``checked``)."""
    if not checked:
        E = check_gene_embeddings(E)
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


def _n_jobs(n_jobs: int | None) -> int:
    """CPU threads (``None``: :attr:`genept.settings.n_jobs`, default all cores)."""
    return resolve_n_jobs(n_jobs)


def _default_block_rows(X: Any, n_genes: int) -> int:
    return default_block_rows(X)


def _row_blocks(X: Any, block_rows: int) -> Iterator[tuple[int, int, Any]]:
    """Row blocks of X as (start, stop, block); reads only that slice from disk."""
    return iter_row_blocks(X, block_rows)


def _progress(total: int, show: bool, desc: str):
    return progress_bar(total, desc=desc, unit="row", show=show)
