"""``weighted_embedding``: the public GenePT-w kernel (validation once, then dispatch).

Array-level kernels are public (:func:`genept.tl.weighted_embedding`, the
:mod:`genept.pp` sentence steps): they validate their arguments once, then call the
private drivers (:func:`_run` here), which AnnData front ends call directly after their
own validation.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from ..._core._blocks import check_block_rows
from ..._core._device import resolve_device, resolve_n_jobs
from ..._core._docs import doc_device, doc_params
from ..._settings import settings
from ..._utils import is_dask
from ._cpu import _embed_cpu
from ._dask import _as_dask, _embed_dask
from ._plan import Normalize, Precision, _default_block_rows, _make_plan, _n_jobs, _Plan
from ._torch import _embed_torch

__all__ = ["check_options", "check_values_dtype", "weighted_embedding"]


def check_options(
    *, normalize: str, precision: str, out: str, block_rows: Any, n_jobs: Any = None
) -> int | None:
    """Validate GenePT-w options once; returns ``block_rows`` (``None`` or positive)."""
    if normalize not in ("l2", "notebook", "none"):
        raise ValueError(f"normalize must be 'l2', 'notebook' or 'none', got {normalize!r}")
    if precision not in ("fp32", "tf32", "bf16"):
        raise ValueError(f"precision must be 'fp32', 'tf32' or 'bf16', got {precision!r}")
    if out not in ("numpy", "dask"):
        raise ValueError(f"out must be 'numpy' or 'dask', got {out!r}")
    if n_jobs is not None:
        resolve_n_jobs(n_jobs)
    return check_block_rows(block_rows)


def check_values_dtype(X: Any, name: str = "X") -> None:
    """Refuse a matrix whose dtype is not real numbers (complex, strings, objects)."""
    dtype = getattr(X, "dtype", None)
    if dtype is None:
        return
    try:
        dtype = np.dtype(dtype)
    except TypeError:  # e.g. a torch dtype (GPU-resident input)
        if "complex" in str(dtype):
            raise ValueError(f"{name} must hold real numbers, got dtype {dtype}") from None
        return
    if dtype.kind not in "biuf":
        raise ValueError(
            f"{name} must hold real numbers, got dtype {dtype}"
            + ("; take the real part or magnitude first" if dtype.kind == "c" else "")
        )


@doc_params(doc_device=doc_device)
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
    {doc_device}
    precision
        GPU GEMM precision: ``"fp32"`` (default), ``"tf32"`` or ``"bf16"`` (inputs
        rounded, fp32 accumulation). The CPU path is always fp32.
    block_rows
        Rows per streamed block (default 4096 for sparse; ~256 MiB for dense). Peak
        extra memory is proportional to it, independent of the number of cells.
    n_jobs
        CPU threads (default :attr:`genept.settings.n_jobs`: all available cores; for
        dask ``X`` one per task, dask running the chunks in parallel).
    check
        Raise :class:`ValueError` on NaN/inf or negative values of ``X``, checked in the
        same streaming pass.
    out
        ``"numpy"`` or ``"dask"``: a lazy dask array for any ``X`` (in-memory and backed
        ``X`` are wrapped in row chunks of ``block_rows``); nothing is computed until the
        result is, the kernel then runs once per row chunk, and the value checks run
        at compute time.
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
    >>> import numpy as np, genept as gpt
    >>> from scipy import sparse
    >>> X = sparse.random(5, 20, density=0.3, format="csr", dtype=np.float32, random_state=0)
    >>> E = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
    >>> emb, w = gpt.tl.weighted_embedding(X, E, device="cpu")
    >>> emb.shape, w.dtype
    ((5, 8), dtype('float64'))
    """
    block_rows = check_options(
        normalize=normalize, precision=precision, out=out, block_rows=block_rows, n_jobs=n_jobs
    )
    if len(getattr(X, "shape", ())) != 2:
        raise ValueError(f"X must be a 2-D cells x genes matrix, got {type(X).__name__}")
    check_values_dtype(X)
    plan = _make_plan(E)
    g = int(X.shape[1])
    if g != plan.n_genes:
        raise ValueError(
            f"X has {g} genes (columns) but E has {plan.n_genes} rows; align E to X's columns"
        )
    n_total = g if n_genes_total is None else int(n_genes_total)
    if normalize == "notebook" and n_total <= 0:
        raise ValueError(f"n_genes_total must be positive, got {n_total}")
    return _run(
        X,
        plan,
        normalize=normalize,
        n_total=n_total,
        device=resolve_device(device),
        precision=precision,
        block_rows=block_rows,
        n_jobs=n_jobs,
        check=check,
        out=out,
        show_progress=settings.progress if show_progress is None else show_progress,
    )


def _run(
    X: Any,
    plan: _Plan,
    *,
    normalize: str,
    n_total: int,
    device: str,
    precision: str,
    block_rows: int | None,
    n_jobs: int | None,
    check: bool,
    out: str,
    show_progress: bool,
) -> tuple[Any, Any]:
    """GenePT-w on validated arguments (``device`` resolved, ``plan`` built)."""
    if out == "dask" and not is_dask(X):
        X = _as_dask(X, block_rows or _default_block_rows(X, plan.n_genes))
    common = {"normalize": normalize, "n_total": n_total, "check": check}
    if is_dask(X):
        return _embed_dask(
            X, plan, **common, device=device, precision=precision, block_rows=block_rows,
            n_jobs=n_jobs, out=out,
        )  # fmt: skip
    common.update(block_rows=block_rows or _default_block_rows(X, plan.n_genes),
                  show_progress=show_progress)  # fmt: skip
    if device.startswith("cuda"):
        return _embed_torch(X, plan, **common, device=device, precision=precision)
    return _embed_cpu(X, plan, **common, n_jobs=_n_jobs(n_jobs))
