"""Representations and labels of AnnData objects, as every annotator and model reads them.

* :func:`label_strings` -- one canonical string per label value, so that a float
  reference column (``1.0``) and an int query column (``1``) name the same class, and
  missing labels (NaN, ``None``, ``""``, ``"nan"``) are missing, never a class.
* :func:`reference_labels` / :func:`query_labels` -- the label column of a reference /
  query, checked.
* :func:`get_rep` / :func:`paired_reps` -- ``obsm`` matrices, dense finite float32, with
  widths checked between query and reference.
* :func:`empty_rows` -- cells whose representation is all zeros (GenePT-w's empty cells):
  no annotator labels them.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._utils import is_dask
from ._maps import check_gene_maps, recorded_gene_maps

__all__ = [
    "MISSING_LABELS",
    "as_key_list",
    "check_key_added",
    "check_query",
    "empty_rows",
    "get_rep",
    "label_strings",
    "paired_reps",
    "query_labels",
    "reference_labels",
]

#: label texts that mean "no label" (compared after stripping and case-folding)
MISSING_LABELS = frozenset({"", "nan", "none", "<na>", "null"})


def _one_label(v) -> str | None:
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, bool | np.bool_):
        return str(bool(v))
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, numbers.Real):
        f = float(v)
        if not np.isfinite(f):
            return None
        return str(int(f)) if f.is_integer() else repr(f)
    s = str(v).strip()
    return None if s.casefold() in MISSING_LABELS else s


def label_strings(values: Sequence | np.ndarray | pd.Series) -> np.ndarray:
    """Labels as canonical strings (object array), missing ones as ``None``.

    Integral numbers print without a decimal part (``1.0`` and ``1`` are ``"1"``);
    NaN, ``None``, ``""`` and ``"nan"``/``"None"``/``"<NA>"`` are missing.

    Examples
    --------
    >>> label_strings([1.0, 2, "T cell ", "nan", None]).tolist()
    ['1', '2', 'T cell', None, None]
    """
    values = values.to_numpy(dtype=object) if isinstance(values, pd.Series) else values
    return np.array([_one_label(v) for v in np.asarray(values, dtype=object)], dtype=object)


def as_key_list(use_rep: str | Sequence[str], what: str = "use_rep") -> list[str]:
    """``use_rep`` as a non-empty list of distinct ``obsm`` keys."""
    keys = [use_rep] if isinstance(use_rep, str) else list(use_rep)
    if not keys or not all(isinstance(k, str) for k in keys):
        raise ValueError(
            f"`{what}` must be an obsm key or a non-empty list of keys, got {use_rep!r}"
        )
    if len(set(keys)) != len(keys):
        raise ValueError(f"`{what}` lists a key twice: {keys}")
    return keys


def check_query(adata: AnnData, name: str = "adata") -> None:
    """Refuse an empty query with a message that says so."""
    if adata.n_obs == 0:
        raise ValueError(f"`{name}` has no cells (n_obs=0); nothing to annotate")


def check_key_added(key_added: str, label_key: str | None) -> None:
    """Refuse ``key_added == label_key``: the prediction would overwrite the truth."""
    from ._keys import ResultKeys

    if label_key is not None and label_key in (key_added, ResultKeys(key_added).labels):
        raise ValueError(
            f"key_added={key_added!r} equals label_key: the predictions would overwrite "
            f"the labels in obs[{label_key!r}]; pass another key_added (e.g. "
            f"{label_key + '_pred'!r})"
        )


def reference_labels(reference: AnnData, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels of the reference as canonical strings and the mask of labelled cells.

    Missing labels (NaN, ``""``, ``"nan"``...) are dropped with a warning; fewer than two
    classes is an error.
    """
    if label_key not in reference.obs:
        raise KeyError(
            f"label_key={label_key!r} is not a column of reference.obs "
            f"(columns: {list(reference.obs.columns)})"
        )
    lab = label_strings(reference.obs[label_key])
    keep = np.array([v is not None for v in lab], dtype=bool)
    if not keep.any():
        raise ValueError(
            f"reference.obs[{label_key!r}] has no labels (all missing: NaN, '' or 'nan')"
        )
    if not keep.all():
        warnings.warn(
            f"{int((~keep).sum())} reference cells have no {label_key!r} label (NaN, '' or "
            "'nan'); they are left out of training",
            UserWarning,
            stacklevel=3,
        )
    y = lab[keep].astype(str)
    classes = np.unique(y)
    if classes.size < 2:
        raise ValueError(
            f"reference.obs[{label_key!r}] has a single class ({classes[0]!r}); "
            "annotation needs at least two"
        )
    return y, keep


def query_labels(adata: AnnData, label_key: str | None) -> np.ndarray | None:
    """Canonical true labels of the query (``None`` entries missing), or ``None``."""
    if label_key is None or label_key not in adata.obs:
        return None
    return label_strings(adata.obs[label_key])


def get_rep(adata: AnnData, key: str, name: str = "adata") -> np.ndarray:
    """``adata.obsm[key]`` as a dense, finite float32 array."""
    if key not in adata.obsm:
        raise KeyError(
            f"{key!r} is not in {name}.obsm (available: {list(adata.obsm.keys())}); "
            "compute it first (e.g. gpt.tl.embed_cells, sc.pp.pca) or pass another key"
        )
    x = adata.obsm[key]
    if isinstance(x, pd.DataFrame):
        x = x.to_numpy()
    if is_dask(x):
        x = x.compute()
    if sparse.issparse(x):
        x = x.toarray()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"{name}.obsm[{key!r}] must be 2-D with columns, got shape {x.shape}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{name}.obsm[{key!r}] has non-finite values in {int(bad.sum())} cells "
            f"(first: {list(adata.obs_names[bad][:3])}); drop or fix them first"
        )
    return x


def paired_reps(
    adata: AnnData, reference: AnnData, keys: Sequence[str], *, gene_maps: bool = True
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The representations ``keys`` of query and reference, widths checked.

    With ``gene_maps``, warns for a GenePT embedding that query and reference read
    through different gene maps (see :func:`genept._core._maps.check_gene_maps`).
    """
    if gene_maps:
        check_gene_maps(
            recorded_gene_maps(adata, keys),
            recorded_gene_maps(reference, keys),
            "of `adata` and `reference`",
        )
    q, r = [], []
    for key in keys:
        xr = get_rep(reference, key, "reference")
        xq = get_rep(adata, key, "adata")
        if xq.shape[1] != xr.shape[1]:
            raise ValueError(
                f"obsm[{key!r}] has {xq.shape[1]} columns in `adata` but {xr.shape[1]} in "
                "`reference`; both must come from the same encoder (and the same PCA)"
            )
        q.append(xq)
        r.append(xr)
    return q, r


def empty_rows(xs: Sequence[np.ndarray]) -> np.ndarray:
    """Cells whose row is all zeros in any of ``xs`` (an empty cell: no gene embedded).

    ``embed_cells`` writes such rows for cells without any embedded gene (flagged in
    ``obs['genept_w_empty']`` / ``['genept_s_empty']``). A representation of a single
    column is never taken as empty (0 is an ordinary value there).
    """
    out = np.zeros(xs[0].shape[0], dtype=bool)
    for x in xs:
        if x.shape[1] >= 2:
            out |= ~x.any(axis=1)
    return out
