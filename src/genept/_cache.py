"""Persistent text-embedding cache.

Vectors are stored in SQLite keyed by ``(model id, sha256(text))``. Each batch is
committed in one transaction, so an interrupted run keeps every finished batch and a
crash never leaves a half-written entry. API keys are never part of the key.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["EmbeddingCache", "text_key"]


def text_key(text: str) -> str:
    """SHA-256 hex digest of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """A SQLite store of float32 text embeddings.

    Parameters
    ----------
    path
        Database file; its folder is created.
    """

    _SCHEMA = (
        "CREATE TABLE IF NOT EXISTS emb ("
        " model TEXT NOT NULL, key TEXT NOT NULL, dim INTEGER NOT NULL, vec BLOB NOT NULL,"
        " PRIMARY KEY (model, key))"
    )

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as con:
            con.execute(self._SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60)
        con.execute("PRAGMA journal_mode=WAL")
        return con

    def get_many(self, model: str, texts: Sequence[str]) -> dict[int, np.ndarray]:
        """Cached vectors of ``texts`` as ``{position: vector}`` (misses are absent)."""
        keys = [text_key(t) for t in texts]
        found: dict[str, np.ndarray] = {}
        with self._lock, self._connect() as con:
            for start in range(0, len(keys), 500):
                chunk = list(dict.fromkeys(keys[start : start + 500]))
                q = ",".join("?" * len(chunk))
                rows = con.execute(
                    f"SELECT key, dim, vec FROM emb WHERE model = ? AND key IN ({q})",
                    [model, *chunk],
                )
                for key, dim, blob in rows:
                    vec = np.frombuffer(blob, dtype=np.float32)
                    if vec.shape[0] == dim:  # ignore anything malformed
                        found[key] = vec
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
        rows = [
            (model, text_key(t), int(v.shape[0]), v.tobytes())
            for t, v in zip(texts, vectors, strict=True)
        ]
        with self._lock, self._connect() as con:
            con.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?, ?, ?)", rows)

    def count(self, model: str | None = None) -> int:
        """Number of stored vectors (of ``model`` if given)."""
        with self._lock, self._connect() as con:
            if model is None:
                return con.execute("SELECT COUNT(*) FROM emb").fetchone()[0]
            return con.execute("SELECT COUNT(*) FROM emb WHERE model = ?", [model]).fetchone()[0]

    def clear(self, model: str | None = None) -> None:
        """Delete stored vectors (of ``model`` if given)."""
        with self._lock, self._connect() as con:
            if model is None:
                con.execute("DELETE FROM emb")
            else:
                con.execute("DELETE FROM emb WHERE model = ?", [model])
