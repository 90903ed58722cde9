"""One SQLite key-value store for every on-disk cache (text embeddings, LLM replies).

Rows are ``(namespace, key) -> value`` (a BLOB). The database runs in WAL mode so
readers never block the writer; every call is one transaction (committed or rolled
back as a whole), so a killed process never leaves a half-written entry, and several
processes may write at once (SQLite serialises them; ``timeout`` waits for the lock).

A damaged database (not SQLite, a malformed page, a foreign schema) is named in the
error. A store that is only a cache (``disposable=True``) is instead moved aside to
``<name>.corrupt-<time>`` with a warning naming the moved file, and rebuilt empty.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["KVStore", "StoreError"]

T = TypeVar("T")

#: words of sqlite3 messages that mean the file itself is damaged
_DAMAGE = ("not a database", "malformed", "corrupt", "encrypted", "no such table", "no such column")
#: rows per ``IN (...)`` query (SQLite's default variable limit is 999)
_CHUNK = 500


class StoreError(RuntimeError):
    """A cache database cannot be used; the message names the file and the fix."""


class KVStore:
    """A SQLite table of ``(namespace, key) -> value`` rows.

    Parameters
    ----------
    path
        Database file; its folder is created.
    table
        Table name (one file may hold several stores).
    disposable
        The store is only a cache: a damaged file is moved aside and rebuilt (with a
        warning) instead of raising :class:`StoreError`.
    timeout
        Seconds a writer waits for another process's lock.

    Examples
    --------
    >>> s = KVStore(tmp_path / "c.sqlite", "demo")  # doctest: +SKIP
    >>> s.put_many("ns", [("k", b"v")]); s.get_many("ns", ["k"])  # doctest: +SKIP
    {'k': b'v'}
    """

    def __init__(
        self, path: str | Path, table: str, *, disposable: bool = True, timeout: float = 60
    ):
        if not table.isidentifier():
            raise ValueError(f"table must be an identifier, got {table!r}")
        self.path = Path(path)
        self.table = table
        self.disposable = disposable
        self.timeout = float(timeout)
        self._lock = threading.Lock()
        if self.path.is_dir():
            raise StoreError(f"the cache database {self.path} is a folder; pass a file path")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(
                f"cannot create the folder of the cache database {self.path}: {e}; "
                "point genept.settings.cache_dir at a writable folder"
            ) from None
        self.run(self._create)

    # -- plumbing ------------------------------------------------------------------------
    def _create(self, con: sqlite3.Connection) -> None:
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} (ns TEXT NOT NULL, key TEXT NOT NULL, "
            "value BLOB NOT NULL, PRIMARY KEY (ns, key))"
        )

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=self.timeout)
        try:
            # WAL is a property of the file: switch once (the switch itself does not wait
            # on SQLite's busy handler, so concurrent first openers retry in ``run``)
            if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                con.execute("PRAGMA journal_mode=WAL")
        except BaseException:
            con.close()
            raise
        return con

    def _once(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` in one transaction, retried while another process holds the lock.

        SQLite's busy handler does not cover every lock (the WAL switch, a read
        transaction upgraded to a write), so "locked"/"busy" errors are retried here with
        a growing pause until ``timeout`` seconds have passed.
        """
        deadline = time.monotonic() + self.timeout
        pause = 0.005
        while True:
            try:
                with self._lock:
                    con = self._connect()
                    try:
                        with con:
                            return fn(con)
                    finally:
                        con.close()
            except sqlite3.OperationalError as e:
                msg = str(e).lower()
                if ("locked" not in msg and "busy" not in msg) or time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.25)

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` in one transaction; damage handled as the class says."""
        for attempt in (0, 1):
            try:
                return self._once(fn)
            except sqlite3.DatabaseError as e:
                msg = str(e).lower()
                damaged = any(w in msg for w in _DAMAGE)
                if not damaged:
                    raise StoreError(
                        f"the cache database {self.path} failed: {e}"
                        + ("; another process holds it, try again" if "locked" in msg else "")
                    ) from None
                if not self.disposable or attempt:
                    raise StoreError(
                        f"the cache database {self.path} is damaged ({e}); move it aside "
                        "(or delete it) and run again to rebuild it"
                    ) from None
                self._move_aside(e)
                if fn is not self._create:
                    self.run(self._create)
        raise AssertionError("unreachable")  # pragma: no cover

    def _move_aside(self, error: Exception) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        try:
            self.path.replace(target)
        except FileNotFoundError:  # another process moved it first
            pass
        for suffix in ("-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        warnings.warn(
            f"the cache database {self.path} was damaged ({error}); moved it to {target} "
            "and started an empty cache (delete the moved file when you no longer need it)",
            UserWarning,
            stacklevel=4,
        )

    # -- key-value API -------------------------------------------------------------------
    def get_many(self, ns: str, keys: Sequence[str]) -> dict[str, bytes]:
        """Stored values of ``keys`` in namespace ``ns`` (misses are absent)."""
        unique = list(dict.fromkeys(keys))

        def read(con: sqlite3.Connection) -> dict[str, bytes]:
            out: dict[str, bytes] = {}
            for s in range(0, len(unique), _CHUNK):
                chunk = unique[s : s + _CHUNK]
                q = ",".join("?" * len(chunk))
                rows = con.execute(
                    f"SELECT key, value FROM {self.table} WHERE ns = ? AND key IN ({q})",
                    [ns, *chunk],
                )
                out.update((k, bytes(v)) for k, v in rows)
            return out

        return self.run(read) if unique else {}

    def get(self, ns: str, key: str) -> bytes | None:
        """The value of one key, or ``None``."""
        return self.get_many(ns, [key]).get(key)

    def put_many(self, ns: str, items: Iterable[tuple[str, bytes]]) -> None:
        """Store ``(key, value)`` pairs in one transaction (replacing old values)."""
        rows = [(ns, str(k), memoryview(v)) for k, v in items]
        if rows:
            self.run(
                lambda con: con.executemany(
                    f"INSERT OR REPLACE INTO {self.table} VALUES (?, ?, ?)", rows
                )
            )

    def delete_many(self, ns: str, keys: Sequence[str]) -> None:
        """Remove ``keys`` of ``ns`` (absent keys are ignored)."""
        rows = [(ns, k) for k in keys]
        if rows:
            self.run(
                lambda con: con.executemany(
                    f"DELETE FROM {self.table} WHERE ns = ? AND key = ?", rows
                )
            )

    def count(self, ns: str | None = None) -> int:
        """Number of rows (of ``ns`` if given)."""
        if ns is None:
            return self.run(lambda c: c.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0])
        return self.run(
            lambda c: c.execute(f"SELECT COUNT(*) FROM {self.table} WHERE ns = ?", [ns]).fetchone()[
                0
            ]
        )

    def clear(self, ns: str | None = None) -> None:
        """Delete every row (of ``ns`` if given)."""
        if ns is None:
            self.run(lambda c: c.execute(f"DELETE FROM {self.table}"))
        else:
            self.run(lambda c: c.execute(f"DELETE FROM {self.table} WHERE ns = ?", [ns]))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run one statement in a transaction; its rows."""
        return self.run(lambda c: c.execute(sql, params).fetchall())
