"""Result keys and ``uns`` parameters: one rule for every function that writes results.

Where results go (:class:`ResultKeys`)
    A function called with ``key_added="X_genept_w"`` writes the matrix to
    ``obsm["X_genept_w"]`` (or ``varm``) and everything else under the key without
    the ``X_`` prefix (scanpy's convention for ``X_pca`` → ``uns["pca"]``):
    ``uns["genept_w"]``, ``obs["genept_w_empty"]``. Annotators write
    ``obs[key]``, ``obs[key + "_confidence"]``, ``obsm[key + "_proba"]``.
Flags
    Rows that got no result (no expressed gene with an embedding, an empty cell
    sentence, no gene in the model's vocabulary) are flagged in one column named
    ``<prefix>_empty`` (:data:`EMPTY_FLAG`), never ``_no_genes`` or another name.
``uns[...]["params"]`` (:func:`sanitize_params`)
    Only values that survive ``write_h5ad`` / ``read_h5ad`` unchanged: ``None`` values are
    left out (read them back with ``params.get(name)``; older anndata versions drop
    ``None`` on writing, so keeping it would make a written file differ from memory),
    numpy scalars become Python scalars, tuples and sets become lists, paths become
    strings, and nested dicts follow the same rule.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["EMPTY_FLAG", "ResultKeys", "flag_key", "recorded_params", "sanitize_params", "uns_key"]

#: suffix of the boolean ``obs``/``var`` column flagging rows without a result
EMPTY_FLAG = "empty"


def uns_key(key_added: str) -> str:
    """The ``uns`` / ``obs`` prefix of ``key_added``: ``"X_genept_w"`` → ``"genept_w"``.

    Examples
    --------
    >>> uns_key("X_genept_w"), uns_key("genept_scmpt")
    ('genept_w', 'genept_scmpt')
    """
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"key_added must be a non-empty string, got {key_added!r}")
    return key_added.removeprefix("X_") or key_added


def recorded_params(adata, key: str) -> dict[str, Any]:
    """The ``params`` a call recorded for ``key``: ``adata.uns[uns_key(key)]["params"]``.

    A copy; ``{}`` when there is none (no entry, or not a mapping).

    Examples
    --------
    >>> from anndata import AnnData
    >>> a = AnnData(uns={"genept_w": {"params": {"method": "w"}}})
    >>> recorded_params(a, "X_genept_w"), recorded_params(a, "X_pca")
    ({'method': 'w'}, {})
    """
    entry = adata.uns.get(uns_key(key))
    params = entry.get("params") if isinstance(entry, Mapping) else None
    return dict(params) if isinstance(params, Mapping) else {}


def flag_key(key_added: str, flag: str = EMPTY_FLAG) -> str:
    """Column flagging rows without a result: ``"X_genept_w"`` → ``"genept_w_empty"``.

    Examples
    --------
    >>> flag_key("X_genept_s")
    'genept_s_empty'
    """
    return f"{uns_key(key_added)}_{flag}"


@dataclass(frozen=True)
class ResultKeys:
    """Every key a function writes for one ``key_added``.

    Examples
    --------
    >>> k = ResultKeys("X_genept_w")
    >>> k.matrix, k.uns, k.empty
    ('X_genept_w', 'genept_w', 'genept_w_empty')
    >>> ResultKeys("genept_knn").confidence
    'genept_knn_confidence'
    """

    key_added: str

    def __post_init__(self) -> None:
        uns_key(self.key_added)  # validates

    @property
    def matrix(self) -> str:
        """``obsm`` / ``varm`` key of the result matrix (``key_added`` itself)."""
        return self.key_added

    @property
    def uns(self) -> str:
        """``uns`` key of the parameters and summaries."""
        return uns_key(self.key_added)

    @property
    def empty(self) -> str:
        """``obs`` / ``var`` column flagging rows without a result."""
        return flag_key(self.key_added)

    @property
    def labels(self) -> str:
        """``obs`` column of an annotator's labels."""
        return self.uns

    @property
    def confidence(self) -> str:
        """``obs`` column of an annotator's confidences."""
        return f"{self.uns}_confidence"

    @property
    def proba(self) -> str:
        """``obsm`` key of an annotator's class probabilities."""
        return f"{self.uns}_proba"


def _clean(value: Any) -> Any:
    if isinstance(value, Mapping):
        return sanitize_params(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, tuple | set | frozenset | list):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else list(value)
        return [_clean(v) for v in items if v is not None]
    if isinstance(value, str | bool | int | float | np.ndarray):
        return value
    return str(value)  # an encoder, a device: its readable name


def sanitize_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with the rule above applied (``None`` left out, numpy → Python…).

    Examples
    --------
    >>> sanitize_params({"seed": None, "n": np.int64(3), "reps": ("a", "b")})
    {'n': 3, 'reps': ['a', 'b']}
    """
    return {str(k): _clean(v) for k, v in params.items() if v is not None}
