"""Text encoders: a common interface with batching, progress and a persistent cache."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from .._cache import EmbeddingCache
from .._core._progress import progress_bar
from .._settings import settings

__all__ = ["TextEncoder", "default_cache"]


def default_cache() -> EmbeddingCache:
    """The text-embedding cache in :attr:`genept.settings.cache_dir`.

    Returns
    -------
    :class:`~genept._cache.EmbeddingCache` on ``text_embeddings.sqlite`` there (a
    damaged file is moved aside and rebuilt, with a warning naming it).

    Examples
    --------
    >>> cache = gpt.encoders.default_cache()  # doctest: +SKIP
    >>> cache.count()  # doctest: +SKIP
    """
    return EmbeddingCache(settings.cache_dir / "text_embeddings.sqlite")


class TextEncoder(ABC):
    """A model that turns texts into vectors.

    Subclasses implement :meth:`_encode` (one batch, no cache) and set
    :attr:`cache_id`, :attr:`dim` and :attr:`max_tokens`. :meth:`encode` adds
    de-duplication, length-sorted batching, a progress bar and the persistent cache:
    every finished batch is stored at once, so an interrupted run resumes without
    encoding (or paying for) the same text twice.
    """

    #: identity of the model in the cache (never contains credentials)
    cache_id: str = ""
    #: output dimension, if known before the first call
    dim: int | None = None
    #: the most input tokens the model reads; longer texts are cut by the model
    max_tokens: int | None = None
    #: texts per request / forward pass
    batch_size: int = 64

    @abstractmethod
    def _encode(self, texts: list[str]) -> np.ndarray:
        """Encode one batch (no cache). Returns ``(len(texts), dim)`` float32."""

    def _compute(self) -> contextlib.AbstractContextManager:
        """Context of a run of :meth:`_encode` calls (local models size CPU threads here)."""
        return contextlib.nullcontext()

    def count_tokens(self, texts: Sequence[str]) -> np.ndarray:
        """Number of model tokens of each text (default: a word-based estimate)."""
        return np.array([int(len(t.split()) * 1.3) + 2 for t in texts], dtype=np.int64)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.cache_id!r})"

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        cache: bool | EmbeddingCache = True,
        show_progress: bool | None = None,
        desc: str = "embedding texts",
    ) -> np.ndarray:
        """Embed ``texts``.

        Parameters
        ----------
        texts
            The texts; duplicates are embedded once.
        batch_size
            Texts per batch (default :attr:`batch_size`).
        cache
            Use the persistent cache (``True``: :func:`default_cache`), a given
            :class:`~genept._cache.EmbeddingCache`, or none (``False``). Cached
            vectors are checked when read: NaN/inf, huge or wrong-width rows are
            encoded again.
        show_progress
            Progress bar over batches (default :attr:`genept.settings.progress`).
        desc
            Label of the progress bar.

        Returns
        -------
        ``(len(texts), dim)`` float32 array.
        """
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        if any(not t.strip() for t in texts):
            raise ValueError("cannot embed an empty text; drop or fill the empty entries first")
        bs = int(batch_size or self.batch_size)
        if bs < 1:
            raise ValueError(f"batch_size must be >= 1, got {bs}")
        store = default_cache() if cache is True else (cache or None)
        unique = list(dict.fromkeys(texts))
        vectors: dict[str, np.ndarray] = {}
        if store is not None:
            hits = store.get_many(self.cache_id, unique)  # validated: damaged rows are misses
            # a cached row of another width (another model under this id) is a miss too
            vectors.update(
                {unique[i]: v for i, v in hits.items() if self.dim is None or v.size == self.dim}
            )
        todo = [t for t in unique if t not in vectors]
        # longest first: similar lengths share a batch (less padding), and the
        # slowest batch comes first so the progress bar's estimate is honest
        todo.sort(key=len, reverse=True)
        n_batches = -(-len(todo) // bs)
        with (
            progress_bar(len(todo), desc=desc, unit="text", show=show_progress) as bar,
            self._compute() if todo else contextlib.nullcontext(),
        ):
            for b in range(n_batches):
                batch = todo[b * bs : (b + 1) * bs]
                out = np.asarray(self._encode(batch), dtype=np.float32)
                if out.ndim != 2 or out.shape[0] != len(batch):
                    raise RuntimeError(
                        f"{self!r} returned shape {out.shape} for {len(batch)} texts"
                    )
                if not np.isfinite(out).all():
                    raise RuntimeError(f"{self!r} returned non-finite values")
                if self.dim is None:
                    self.dim = out.shape[1]
                if store is not None:
                    store.put_many(self.cache_id, batch, out)
                vectors.update(zip(batch, out, strict=True))
                bar.update(len(batch))
        dims = {v.shape[0] for v in vectors.values()}
        if len(dims) != 1:
            raise RuntimeError(
                f"cached vectors of {self.cache_id!r} have different widths {sorted(dims)}; "
                "clear the cache entry with genept.encoders.default_cache().clear(model)"
            )
        return np.stack([vectors[t] for t in texts]).astype(np.float32, copy=False)
