"""The OpenAI embeddings API (``text-embedding-ada-002``, ``text-embedding-3-large``…).

Requests go through the official :mod:`openai` client with its own retries turned off:
retries here use exponential backoff with jitter, honour ``Retry-After`` and never
repeat a request that cannot succeed (400, 401, 403, 404). The API key is read from
the argument or ``$OPENAI_API_KEY`` and is never written to the cache id, the repr,
logs, error messages or any file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._core._openai import (
    MalformedAnswer,
    OpenAIRequestError,
    call_with_retry,
    make_client,
    redact,
    resolve_base_url,
    server_identity,
)
from ._base import TextEncoder

__all__ = ["OpenAIEncoder", "OpenAIRequestError"]

#: the API accepts at most this many inputs per request
_MAX_INPUTS = 2048
#: input-token limit of every OpenAI embedding model (8192 minus the end token)
_MAX_TOKENS = 8191


def _openai_models() -> dict[str, int]:
    from . import OPENAI_MODELS

    return OPENAI_MODELS


class OpenAIEncoder(TextEncoder):
    """Texts embedded by the OpenAI embeddings API (or an OpenAI-compatible server).

    Parameters
    ----------
    model
        The embedding model, e.g. ``"text-embedding-3-large"`` (GenePT's v2 embeddings)
        or ``"text-embedding-ada-002"`` (GenePT's original ones).
    api_key
        The API key; default ``$OPENAI_API_KEY``. It is kept only inside the client,
        never in the cache, the repr or messages (and not when the encoder is pickled:
        an unpickled encoder reads ``$OPENAI_API_KEY`` again).
    base_url
        Another OpenAI-compatible server (default ``$OPENAI_BASE_URL`` or the official
        API). Its host becomes part of :attr:`cache_id`, since another server may serve
        another model under the same name.
    batch_size
        Texts per batch (each finished batch is cached). A batch is further split into
        requests of at most 2048 inputs and ``max_request_tokens`` tokens.
    max_retries
        Retries of a request after rate limits (429), server errors (5xx), timeouts and
        connection errors, with exponential backoff and jitter.
    timeout
        Seconds to wait for one answer.
    dimensions
        Shorten the vectors to this width (``text-embedding-3-*`` only).
    max_request_tokens
        Cap on the (estimated) tokens of one request; the API allows 300,000.
    backoff_base, backoff_max
        First and largest wait between retries, in seconds (a ``Retry-After`` sent by
        the server is honoured up to ``backoff_max``).

    Examples
    --------
    >>> enc = OpenAIEncoder("text-embedding-3-large")  # doctest: +SKIP
    >>> enc.encode(["CD3E: T-cell surface glycoprotein CD3 epsilon chain"]).shape  # doctest: +SKIP
    (1, 3072)
    """

    max_tokens = _MAX_TOKENS

    def __init__(
        self,
        model: str = "text-embedding-3-large",
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        batch_size: int = 256,
        max_retries: int = 6,
        timeout: float = 60,
        dimensions: int | None = None,
        max_request_tokens: int = 250_000,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
    ):
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a non-empty model name, got {model!r}")
        if not 1 <= int(batch_size):
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if dimensions is not None and int(dimensions) < 1:
            raise ValueError(f"dimensions must be a positive integer, got {dimensions}")
        if int(max_retries) < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.model = model
        self.batch_size = int(batch_size)
        self.max_retries = int(max_retries)
        self.timeout = float(timeout)
        self.dimensions = None if dimensions is None else int(dimensions)
        self.max_request_tokens = int(max_request_tokens)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.base_url = resolve_base_url(base_url)
        self.dim = self.dimensions or _openai_models().get(model)
        self.cache_id = self._make_cache_id()
        self._tokenizer: Any = None  # None: not tried yet; False: unavailable
        self._client = self._make_client(api_key)

    # -- identity ---------------------------------------------------------------------

    def _host(self) -> str | None:
        """``host[:port][/path]`` of a non-official server (no credentials), else ``None``."""
        return server_identity(self.base_url)

    def _make_cache_id(self) -> str:
        ident = f"openai:{self.model}"
        if self.dimensions is not None:
            ident += f":d{self.dimensions}"
        host = self._host()
        if host is not None:
            ident += f"@{host}"
        return ident

    # -- client -----------------------------------------------------------------------

    def _make_client(self, api_key: str | None):
        return make_client(api_key, self.base_url, self.timeout)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_client"] = None  # holds the key
        state["_tokenizer"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    @property
    def client(self):
        """The :class:`openai.OpenAI` client (made again from the environment after unpickling)."""
        if self._client is None:
            self._client = self._make_client(None)
        return self._client

    def _redact(self, text: str) -> str:
        return redact(text, getattr(self._client, "api_key", None))

    # -- tokens -----------------------------------------------------------------------

    def _get_tokenizer(self):
        if self._tokenizer is None:
            try:
                import tiktoken

                try:
                    self._tokenizer = tiktoken.encoding_for_model(self.model)
                except KeyError:
                    self._tokenizer = tiktoken.get_encoding("cl100k_base")
            except Exception:  # not installed, or its data cannot be fetched
                self._tokenizer = False
        return self._tokenizer or None

    def count_tokens(self, texts: Sequence[str]) -> np.ndarray:
        """Tokens of each text: exact with :mod:`tiktoken` if installed, else an estimate."""
        tok = self._get_tokenizer()
        if tok is None:
            return super().count_tokens(texts)
        return np.array([len(t) for t in tok.encode_batch(list(texts))], dtype=np.int64)

    def _prepare(self, texts: list[str]) -> tuple[list[str], np.ndarray]:
        """Texts cut to :attr:`max_tokens` (with tiktoken) and a cautious token count each."""
        tok = self._get_tokenizer()
        if tok is None:
            # word estimate, or 1 token per 2 characters for symbol-heavy text (cell sentences)
            est = np.maximum(super().count_tokens(texts), [len(t) // 2 + 1 for t in texts])
            return texts, est.astype(np.int64)
        ids = tok.encode_batch(texts)
        out, counts, n_cut = [], [], 0
        for text, t in zip(texts, ids, strict=True):
            if len(t) > _MAX_TOKENS:
                text, t = tok.decode(t[:_MAX_TOKENS]), t[:_MAX_TOKENS]
                n_cut += 1
            out.append(text)
            counts.append(len(t))
        if n_cut:
            from scanpy import logging as logg

            logg.warning(
                f"{n_cut} text(s) are longer than {_MAX_TOKENS} tokens; {self.model} reads "
                "only their first tokens"
            )
        return out, np.asarray(counts, dtype=np.int64)

    def _requests(self, counts: np.ndarray) -> list[tuple[int, int]]:
        """Split positions ``0..n`` into ``[start, stop)`` chunks within the API's caps."""
        chunks, start, total = [], 0, 0
        for i, c in enumerate(counts.tolist()):
            if i > start and (i - start >= _MAX_INPUTS or total + c > self.max_request_tokens):
                chunks.append((start, i))
                start, total = i, 0
            total += c
        chunks.append((start, len(counts)))
        return chunks

    # -- requests ---------------------------------------------------------------------

    def _encode(self, texts: list[str]) -> np.ndarray:
        prepared, counts = self._prepare(texts)
        parts = [self._request(prepared[a:b]) for a, b in self._requests(counts)]
        return np.concatenate(parts, axis=0)

    def _request(self, texts: list[str]) -> np.ndarray:
        kwargs: dict[str, Any] = {"model": self.model, "input": texts}
        if self.dimensions is not None:
            kwargs["dimensions"] = self.dimensions
        where = f"the embeddings API at {self._host()}" if self._host() else "the OpenAI API"
        client = self.client  # a missing key fails here, not inside the retries
        return call_with_retry(
            lambda: client.embeddings.create(**kwargs),
            lambda resp: self._parse(resp, len(texts), where),
            where=where,
            model=self.model,
            max_retries=self.max_retries,
            secret=getattr(self._client, "api_key", None),
            backoff_base=self.backoff_base,
            backoff_max=self.backoff_max,
            fatal_hint=self._fatal_hint,
            resume_note="finished batches are cached, so rerunning resumes where this stopped",
        )

    def _fatal_hint(self, status: int, msg: str) -> str | None:
        if status == 400 and ("maximum context length" in msg or "too long" in msg.lower()):
            return (
                f"a text is longer than {self.model}'s {_MAX_TOKENS} tokens; install tiktoken "
                "(pip install tiktoken) so genept cuts long texts, or shorten them"
            )
        return None

    def _parse(self, resp: Any, n: int, where: str) -> np.ndarray:
        if not hasattr(resp, "data"):
            raise MalformedAnswer(f"expected an embeddings list, got {type(resp).__name__}")
        data = list(resp.data or [])
        index = [int(d.index) for d in data]
        if sorted(index) != list(range(n)):
            raise OpenAIRequestError(
                f"{where} returned {len(data)} embeddings with indices {sorted(index)[:10]}… "
                f"for {n} inputs; expected one per input"
            )
        order = np.argsort(index)
        rows = [np.asarray(data[i].embedding, dtype=np.float32).reshape(-1) for i in order]
        widths = {r.shape[0] for r in rows}
        if len(widths) != 1:
            raise OpenAIRequestError(f"{where} returned embeddings of widths {sorted(widths)}")
        width = widths.pop()
        if self.dim is not None and width != self.dim:
            raise OpenAIRequestError(
                f"{where} returned {width}-d embeddings, but {self.model}"
                f"{f' with dimensions={self.dimensions}' if self.dimensions else ''} gives "
                f"{self.dim}-d ones; is base_url serving another model?"
            )
        return np.stack(rows)
