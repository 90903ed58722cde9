"""One home for talking to OpenAI(-compatible) servers: key, server identity, redaction, retry.

Used by :class:`genept.encoders.OpenAIEncoder` (embeddings) and
:func:`genept.tl.annotate_llm` (chat completions).

* The API key comes from the argument or ``$OPENAI_API_KEY``; it lives only inside the
  :class:`openai.OpenAI` client and is never stored, logged or put in a cache key.
* :func:`server_identity` names the server (``host[:port][/path]``, ``None`` for the
  official API) for cache keys: another server may serve another model under one name.
* :func:`redact` removes the key (and any ``sk-...`` token) from every message.
* :func:`call_with_retry` retries rate limits (408/409/429), server errors (5xx),
  timeouts, connection errors and answers that are not the expected JSON, with
  exponential backoff and jitter, honouring ``Retry-After``; it never repeats a request
  that cannot succeed (400, 401, 403, 404).
"""

from __future__ import annotations

import email.utils
import json
import math
import os
import random
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

__all__ = [
    "OpenAIRequestError",
    "call_with_retry",
    "get_api_key",
    "make_client",
    "redact",
    "resolve_base_url",
    "retry_after",
    "server_identity",
]

T = TypeVar("T")

#: host of the official API: other hosts get their own cache entries
OFFICIAL_HOST = "api.openai.com"
#: status codes worth retrying (the same the official client retries)
RETRY_STATUS = {408, 409, 429}
#: the one pattern of secrets in messages: keys as the API echoes them ("sk-abc***xyz")
_KEY_PATTERN = re.compile(r"\bsk-[A-Za-z0-9_\-*]{4,}")


class OpenAIRequestError(RuntimeError):
    """A request to an OpenAI(-compatible) server failed for good.

    Attributes
    ----------
    status_code
        The HTTP status of the last answer (``None`` for connection errors, timeouts and
        answers that were not the expected JSON).
    """

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


class MalformedAnswer(ValueError):
    """Raised by a ``parse`` callback of :func:`call_with_retry`: retry the request."""


def get_api_key(api_key: str | None = None) -> str:
    """The key given, else ``$OPENAI_API_KEY``; a clear error when there is none."""
    key = api_key or os.environ.get("OPENAI_API_KEY")
    if not key:
        raise ValueError(
            "no OpenAI API key: set the environment variable OPENAI_API_KEY or pass "
            "api_key=... (a local server without authentication accepts any value, e.g. "
            "api_key='none')"
        )
    return key


def resolve_base_url(base_url: str | None = None) -> str | None:
    """``base_url``, else ``$OPENAI_BASE_URL``, else ``None`` (the official API)."""
    return base_url or os.environ.get("OPENAI_BASE_URL") or None


def server_identity(base_url: str | None) -> str | None:
    """``host[:port][/path]`` of a non-official server (no credentials, no scheme), else ``None``.

    Examples
    --------
    >>> server_identity("http://user:pw@LocalHost:8000/v1/")
    'localhost:8000/v1'
    >>> server_identity("https://api.openai.com/v1") is None
    True
    """
    if not base_url:
        return None
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    if host == OFFICIAL_HOST or not host:
        return None
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path.rstrip('/')}"


def _openai():
    """The ``openai`` module, or an ImportError naming the extra to install."""
    from .._utils import import_optional

    return import_optional("openai", extra="openai", purpose="OpenAI models and servers")


def redact(text: str, secret: str | None = None) -> str:
    """``text`` without ``secret`` and without anything that looks like an API key."""
    if secret:
        text = text.replace(secret, "***")
    return _KEY_PATTERN.sub("sk-***", text)


def make_client(api_key: str | None, base_url: str | None, timeout: float):
    """An :class:`openai.OpenAI` client with its own retries off (see :func:`call_with_retry`).

    Without the optional ``openai`` package: an :class:`ImportError` naming
    ``pip install 'genept[openai]'``.
    """
    openai = _openai()

    return openai.OpenAI(
        api_key=get_api_key(api_key), base_url=base_url, max_retries=0, timeout=timeout
    )


def retry_after(response: Any) -> float | None:
    """Seconds asked for by ``Retry-After`` / ``retry-after-ms`` headers, if any."""
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000
            if math.isfinite(value):
                return value
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if ra is None:
        return None
    try:
        value = float(ra)
        return value if math.isfinite(value) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff(attempt: int, error: Exception | None, base: float, cap: float) -> float:
    """Seconds before retry ``attempt`` (0-based): ``Retry-After``, else jittered 2**attempt."""
    ra = retry_after(getattr(error, "response", None))
    if ra is not None:
        return min(max(ra, 0.0), cap)
    return min(cap, base * 2.0**attempt) * (0.5 + 0.5 * random.random())


def _status_hint(status: int, msg: str, model: str) -> str:
    if status == 401:
        return "the API key was rejected: check OPENAI_API_KEY (or the api_key argument)"
    if status == 403:
        return "the API key may not use this model or endpoint: check OPENAI_API_KEY's project"
    if status == 404:
        return f"model {model!r} or the endpoint was not found: check the model name and base_url"
    return "the request was refused and retrying will not help"


def call_with_retry(
    call: Callable[[], Any],
    parse: Callable[[Any], T],
    *,
    where: str,
    model: str,
    max_retries: int,
    secret: str | None = None,
    backoff_base: float = 1.0,
    backoff_max: float = 60.0,
    fatal_hint: Callable[[int, str], str | None] | None = None,
    resume_note: str = "",
) -> T:
    """``parse(call())``, retried as the module says; :class:`OpenAIRequestError` when it gives up.

    ``parse`` raises :class:`MalformedAnswer` for an answer of the wrong shape (retried
    like a server error). ``fatal_hint(status, message)`` may give a better hint for a
    refused request. Messages are redacted of ``secret`` and of key-like tokens.
    """
    openai = _openai()

    attempt = 0
    while True:
        status: int | None = None
        try:
            return parse(call())
        except openai.APIStatusError as e:
            status = int(e.status_code)
            if status not in RETRY_STATUS and status < 500:
                msg = redact(getattr(e, "message", "") or str(e), secret)
                hint = (fatal_hint(status, msg) if fatal_hint else None) or _status_hint(
                    status, msg, model
                )
                raise OpenAIRequestError(
                    f"{where} answered HTTP {status}: {hint} ({msg})", status
                ) from None
            error: Exception = e
            what = f"HTTP {status}"
        except openai.APIConnectionError as e:  # includes APITimeoutError
            error = e
            what = "a timeout" if isinstance(e, openai.APITimeoutError) else "a connection error"
        except (MalformedAnswer, json.JSONDecodeError, AttributeError, TypeError) as e:
            # e.g. a proxy answering 200 with an HTML page: the client raises JSONDecodeError
            # or returns the text; either way the answer was not what the API sends
            error = e
            what = f"an answer that is not the API's JSON ({type(e).__name__})"
        if attempt >= max_retries:
            msg = redact(getattr(error, "message", "") or str(error), secret)
            raise OpenAIRequestError(
                f"{where} failed with {what} after {attempt + 1} attempt(s) ({msg[:300]})"
                + (f"; {resume_note}" if resume_note else ""),
                status,
            ) from None
        wait = backoff(attempt, error, backoff_base, backoff_max)
        from scanpy import logging as logg

        logg.info(f"{where} answered {what}; retry {attempt + 1}/{max_retries} in {wait:.2g} s")
        time.sleep(wait)
        attempt += 1
