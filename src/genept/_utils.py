"""AnnData plumbing shared by every public function (written once, used everywhere)."""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

__all__ = [
    "atomic_write_h5ad",
    "check_adata",
    "get_matrix",
    "get_var_names",
    "import_optional",
    "is_dask",
    "keyword_only",
    "renamed_arg",
    "write_results",
]

F = TypeVar("F", bound=Callable)


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


def renamed_arg(old: str, new: str, *, since: str = "0.2") -> Callable[[F], F]:
    """Accept the keyword ``old`` as ``new``, with a :class:`FutureWarning`.

    Examples
    --------
    >>> @renamed_arg("seed", "random_state")
    ... def f(*, random_state=0):
    ...     return random_state
    >>> import warnings
    >>> with warnings.catch_warnings(record=True):
    ...     f(seed=3)
    3
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(f"{fn.__name__}() got both {old}= and {new}=; use {new}=")
                warnings.warn(
                    f"{fn.__name__}({old}=...) is deprecated since genept {since}; "
                    f"use {new}=... (scanpy's name)",
                    FutureWarning,
                    stacklevel=2,
                )
                kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def keyword_only(*names: str, since: str = "0.2") -> Callable[[F], F]:
    """Accept the keyword-only parameters ``names`` also positionally, with a :class:`FutureWarning` (for options that became keyword-only).

    Examples
    --------
    >>> @keyword_only("budget")
    ... def f(a, *, budget=0):
    ...     return a + budget
    >>> import warnings
    >>> with warnings.catch_warnings(record=True):
    ...     f(1, 2)
    3
    """

    def decorate(fn: F) -> F:
        n_pos = sum(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            for p in inspect.signature(fn).parameters.values()
        )

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            extra = args[n_pos:]
            if extra:
                if len(extra) > len(names):
                    raise TypeError(
                        f"{fn.__name__}() takes {n_pos} positional arguments "
                        f"but {len(args)} were given"
                    )
                given = names[: len(extra)]
                for name, value in zip(given, extra, strict=True):
                    if name in kwargs:
                        raise TypeError(f"{fn.__name__}() got multiple values for {name!r}")
                    kwargs[name] = value
                warnings.warn(
                    f"passing {', '.join(given)} to {fn.__name__}() by position is deprecated "
                    f"since genept {since}; pass {', '.join(f'{n}=...' for n in given)}",
                    FutureWarning,
                    stacklevel=2,
                )
            return fn(*args[:n_pos], **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def import_optional(module: str, *, extra: str, purpose: str):
    """Import ``module`` or raise an :class:`ImportError` naming the extra to install.

    Examples
    --------
    >>> np_ = import_optional("numpy", extra="all", purpose="this example")
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{purpose} needs the optional package {module.split('.')[0]!r}: "
            f"pip install 'genept[{extra}]'"
        ) from e


def is_text_column(values) -> bool:
    """Whether a column or index holds strings (object, ``str`` or categorical dtype).

    pandas >= 3 stores strings as its ``str`` dtype, not ``object``.
    """
    dtype = getattr(values, "dtype", None)
    return dtype is not None and (
        pd.api.types.is_object_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
        or pd.api.types.is_string_dtype(dtype)
    )


def _string_arrays_writable():
    """With pandas >= 3 (string columns and ``obs_names`` are pandas string arrays), let anndata releases that still refuse them by default write them; a no-op with pandas 2, so files stay readable by old anndata."""
    import contextlib

    import anndata
    import pandas as pd

    settings = getattr(anndata, "settings", None)
    if int(pd.__version__.split(".")[0]) < 3 or not hasattr(
        settings, "allow_write_nullable_strings"
    ):
        return contextlib.nullcontext()
    return settings.override(allow_write_nullable_strings=True)


def atomic_write_h5ad(adata: AnnData, path: str | os.PathLike, **kwargs) -> Path:
    """``adata.write_h5ad(path)`` through a temporary file beside ``path`` and a rename.

    h5py truncates a file before writing it, so an interrupted write (a kill, a full
    disk) would leave a half-written file, and writing onto the file ``adata`` is backed
    by would destroy the input. Here ``path`` holds either its old content or the complete
    new file, never a partial one; the temporary file is removed on failure.

    Examples
    --------
    >>> atomic_write_h5ad(adata, "out.h5ad")  # doctest: +SKIP
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with _string_arrays_writable():
            adata.write_h5ad(tmp, **kwargs)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def gene_mask(adata: AnnData, mask_var, use_raw: bool | None) -> tuple[np.ndarray | None, str]:
    """The gene mask of ``mask_var`` over the genes of the matrix in use, and how it is recorded.

    As :func:`scanpy.pp.pca`: ``None`` takes ``var["highly_variable"]`` when it exists
    (else every gene), ``False`` every gene, a string a boolean ``var`` column, an array a
    boolean mask over ``var``. With ``use_raw`` the mask is matched to ``raw`` by name
    (genes of ``raw`` missing from ``var`` are left out). Returns ``(None, "all genes")``
    for every gene.
    """
    if mask_var is False:
        return None, "all genes"
    name = "mask"
    if mask_var is None:
        if "highly_variable" not in adata.var:
            return None, "all genes"
        mask_var = "highly_variable"
    if isinstance(mask_var, str):
        if mask_var not in adata.var:
            raise KeyError(
                f"mask_var={mask_var!r} is not a column of adata.var; run "
                "sc.pp.highly_variable_genes(adata) or pass mask_var=False for all genes"
            )
        name = mask_var
        col = adata.var[mask_var]
        if col.dtype != bool:
            raise ValueError(f"adata.var[{mask_var!r}] must be boolean, got dtype {col.dtype}")
        mask = col.to_numpy(dtype=bool)
    else:
        mask = np.asarray(mask_var)
        if mask.dtype != bool or mask.shape != (adata.n_vars,):
            raise ValueError(
                f"mask_var must be a var column name or a boolean array of length "
                f"{adata.n_vars} (adata.n_vars), got {mask.dtype} {mask.shape}"
            )
    if not mask.any():
        raise ValueError(f"mask_var ({name}) selects no gene; pass mask_var=False for all genes")
    if use_raw:
        pos = adata.var_names.get_indexer(adata.raw.var_names)
        mask = np.where(pos >= 0, mask[np.maximum(pos, 0)], False)
    return mask, name


def mask_names(names, mask: np.ndarray | None) -> pd.Index:
    """Gene names with the genes outside ``mask`` missing (``None``): never written in a sentence."""
    if mask is None:
        return names
    return pd.Index(np.where(mask, np.asarray(names, dtype=object), None), dtype=object)
