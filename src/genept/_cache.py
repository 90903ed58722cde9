"""Persistent text-embedding cache.

Vectors are stored in the SQLite key-value store of :mod:`genept._core._store`, keyed by
``(model id, sha256(text))``. Each batch is committed in one transaction, so an
interrupted run keeps every finished batch and a crash never leaves a half-written
entry; a damaged database is moved aside and rebuilt. API keys are never part of the
key. Vectors are validated when read: a non-finite or absurdly large row (a damaged or
tampered entry) is dropped from the cache and reported as a miss, so it is encoded again.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._core._store import KVStore

__all__ = ["EmbeddingCache", "text_key"]

#: largest absolute value accepted in a cached vector (text embeddings are O(1))
MAX_ABS = 1e12


def text_key(text: str) -> str:
    """SHA-256 hex digest of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _valid(vec: np.ndarray) -> bool:
    return vec.size > 0 and bool(np.isfinite(vec).all()) and float(np.abs(vec).max()) <= MAX_ABS


class EmbeddingCache:
    """A SQLite store of float32 text embeddings (public as :class:`genept.encoders.EmbeddingCache`).

    A table ``vectors`` of a :class:`~genept._core._store.KVStore` that is only a cache:
    a damaged file is moved aside and rebuilt. Rows are keyed by the encoder's
    ``cache_id`` and the SHA-256 of the text; the encoders use
    :func:`genept.encoders.default_cache`
    (``settings.cache_dir / "text_embeddings.sqlite"``) unless given another.

    Parameters
    ----------
    path
        The SQLite file (created with its folder when missing).

    Examples
    --------
    >>> cache = EmbeddingCache(tmp_path / "c.sqlite")  # doctest: +SKIP
    >>> cache.put_many("my-model", ["CD3E"], np.ones((1, 4)))  # doctest: +SKIP
    >>> cache.get_many("my-model", ["CD3E", "CD4"])  # doctest: +SKIP
    {0: array([1., 1., 1., 1.], dtype=float32)}
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._store = KVStore(self.path, "vectors", disposable=True)
        self._migrate()

    def _migrate(self) -> None:
        """Copy rows of the table of genept <= 0.x (``emb``) into the store, once."""

        def move(con):
            if con.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='emb'"
            ).fetchone():
                con.execute("INSERT OR IGNORE INTO vectors SELECT model, key, vec FROM emb")
                con.execute("DROP TABLE emb")

        self._store.run(move)

    def get_many(self, model: str, texts: Sequence[str]) -> dict[int, np.ndarray]:
        """Cached vectors of ``texts`` as ``{position: vector}`` (misses are absent).

        Rows that are not a whole float32 vector, hold NaN/inf or values above
        :data:`MAX_ABS` are removed from the cache (with a warning) and count as misses.
        """
        keys = [text_key(t) for t in texts]
        found: dict[str, np.ndarray] = {}
        bad: list[str] = []
        for key, blob in self._store.get_many(model, keys).items():
            if len(blob) % 4:
                bad.append(key)
                continue
            vec = np.frombuffer(blob, dtype=np.float32)
            if _valid(vec):
                found[key] = vec
            else:
                bad.append(key)
        if bad:
            self._store.delete_many(model, bad)
            warnings.warn(
                f"{len(bad)} cached vector(s) of {model!r} in {self.path} were damaged "
                "(non-finite, huge or truncated); they were dropped and will be encoded again",
                UserWarning,
                stacklevel=2,
            )
        return {i: found[k] for i, k in enumerate(keys) if k in found}

    def put_many(self, model: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store ``vectors[i]`` for ``texts[i]`` in one transaction."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ValueError(
                f"expected {len(texts)} vectors, got an array of shape {vectors.shape}"
            )
        if not np.isfinite(vectors).all():
            raise ValueError("refusing to cache non-finite embedding values")
        if vectors.size and float(np.abs(vectors).max()) > MAX_ABS:
            raise ValueError(f"refusing to cache embedding values above {MAX_ABS:g}")
        self._store.put_many(
            model, [(text_key(t), v.tobytes()) for t, v in zip(texts, vectors, strict=True)]
        )

    def count(self, model: str | None = None) -> int:
        """Number of stored vectors (of ``model`` if given)."""
        return self._store.count(model)

    def clear(self, model: str | None = None) -> None:
        """Delete stored vectors (of ``model`` if given)."""
        self._store.clear(model)
