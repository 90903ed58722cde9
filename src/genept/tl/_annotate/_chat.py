"""The chat side of LLM annotation: prompts, prices, the reply parser, the reply cache and the chat client (scMPT section 3.3, appendix A.3)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..._core._openai import (
    MalformedAnswer,
    call_with_retry,
    make_client,
    resolve_base_url,
    server_identity,
)
from ..._core._store import KVStore

__all__ = [
    "LLM_ANSWER_PROMPT",
    "LLM_PROMPT",
    "LLM_REASONING_PROMPT",
    "UNPARSED",
    "Chat",
    "ReplyCache",
    "check_template",
    "format_candidates",
    "model_price",
    "parse_answer",
]

#: label written for an LLM reply that names no candidate (or several)
UNPARSED = "<unparsed>"

#: one-call prompt (scMPT section 3.3 / 4.2: the cell sentence plus the list of labels)
LLM_PROMPT = (
    "Given the cell described below from {context}, which of these cell types is it most "
    "likely to be?: {candidates}\n"
    "The cell is described by its cell sentence: its gene names in descending order of "
    "expression. Output ONLY the most likely cell type from the list, exactly as it "
    "appears in the list.\n"
    "Cell sentence: {sentence}"
)

#: first call of the two-stage flow (scMPT appendix A.3): reasoning
LLM_REASONING_PROMPT = (
    "Given the cell described below from {context} is one of these cells, which is more "
    "likely?: {candidates} Let's think step by step, but concisely. Think carefully. If "
    "there are no clear marker genes that you are confident would indicate what cell type "
    "this is (remembering this is {context}), please just go with the first option in the "
    "list.\n{sentence}"
)

#: second call of the two-stage flow (scMPT appendix A.3): the label from the reasoning
LLM_ANSWER_PROMPT = (
    "Given the following reasoning from an expert biologist, output ONLY the most likely "
    "class from the following list exactly as it appears. If their explanation isn't "
    "convincing, then please just go with the first option: {candidates}\n{reasoning}"
)

#: list prices in USD per million (input, output) tokens, for the cost estimate only;
#: pass ``price_per_million`` for other models or current prices
_PRICES_PER_MILLION: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-3.5-turbo": (0.50, 1.50),
}
_EST_ANSWER_TOKENS = 20
_EST_REASONING_TOKENS = 400


def model_price(model: str, price: tuple[float, float] | None) -> tuple[float, float] | None:
    if price is not None:
        return float(price[0]), float(price[1])
    if model in _PRICES_PER_MILLION:
        return _PRICES_PER_MILLION[model]
    for name in sorted(_PRICES_PER_MILLION, key=len, reverse=True):  # dated snapshots
        if model.startswith(name + "-"):
            return _PRICES_PER_MILLION[name]
    return None


def _norm(text: str) -> str:
    return " ".join(str(text).split()).casefold()


_STRIP = "\"'`*“”‘’ "


def parse_answer(reply: str, candidates: Sequence[str]) -> str:
    """The candidate a reply names, or :data:`UNPARSED`.

    Accepted: the reply equals a candidate up to case and whitespace (also inside
    quotes/backticks/``**`` or with one final period), or exactly one candidate is
    mentioned in it (as a whole phrase; a candidate contained in a longer mentioned
    one does not count). Anything else -- no candidate, several -- is not guessed.
    """
    if not isinstance(reply, str):
        return UNPARSED
    norm = {_norm(c): str(c) for c in candidates}
    r = _norm(reply)
    core = r.strip(_STRIP)
    if core.endswith("."):
        core = core[:-1].strip(_STRIP)
    if core in norm:
        return norm[core]
    if r in norm:
        return norm[r]
    spans: list[tuple[int, int, str]] = []
    for nc, c in norm.items():
        if not nc:
            continue
        pat = re.compile(r"(?<![0-9a-z])" + re.escape(nc) + r"(?![0-9a-z])")
        spans += [(m.start(), m.end(), c) for m in pat.finditer(r)]
    mentioned = {
        c
        for s, e, c in spans
        if not any(s2 <= s and e <= e2 and (e2 - s2) > (e - s) for s2, e2, _ in spans)
    }
    return mentioned.pop() if len(mentioned) == 1 else UNPARSED


def format_candidates(cands: Sequence[str]) -> str:
    return "[" + ", ".join(f"'{c}'" for c in cands) + "]"


def check_template(template: str, fields: set[str], name: str) -> None:
    dummy = {f: f"<{f}>" for f in ("candidates", "sentence", "context", "reasoning")}
    try:
        template.format(**dummy)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(
            f"{name} may only use the fields {{candidates}}, {{sentence}}, {{context}}, "
            f"{{reasoning}} (literal braces doubled): {e!r}"
        ) from None
    missing = [f for f in fields if "{" + f + "}" not in template]
    if missing:
        raise ValueError(f"{name} must contain {', '.join('{' + f + '}' for f in missing)}")


class ReplyCache:
    """Chat replies in the SQLite key-value store, keyed by a hash of (model, server identity, messages, options).

    The server identity (:func:`genept._core._openai.server_identity`: host, port and
    path, no credentials) is part of the key, so two servers serving one model name
    never share replies; the API key is part of nothing stored.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._store = KVStore(self.path, "chat_replies", disposable=True)
        self._store.run(self._migrate)

    @staticmethod
    def _migrate(con) -> None:
        """Move the replies of the earlier table (``replies``: key, model, reply) here, once.

        Their keys lack the server, so only official-API replies are found again.
        """
        cols = [r[1] for r in con.execute("PRAGMA table_info(replies)")]
        if cols == ["key", "model", "reply"]:
            con.execute(
                "INSERT OR IGNORE INTO chat_replies SELECT model, key, CAST(reply AS BLOB) "
                "FROM replies"
            )
            con.execute("DROP TABLE replies")

    @staticmethod
    def key(
        model: str, messages: list[dict], options: Mapping[str, Any], server: str | None = None
    ) -> str:
        ident: dict[str, Any] = {"model": model, "messages": messages, "options": dict(options)}
        if server is not None:  # official API: the keys of earlier versions stay valid
            ident["server"] = server
        blob = json.dumps(ident, sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def get(self, model: str, key: str) -> str | None:
        v = self._store.get(model, key)
        return None if v is None else v.decode("utf-8")

    def put(self, model: str, key: str, reply: str) -> None:
        self._store.put_many(model, [(key, reply.encode("utf-8"))])


def _reply_text(resp: Any) -> str:
    if not hasattr(resp, "choices"):
        raise MalformedAnswer(f"expected a chat completion, got {type(resp).__name__}")
    return (resp.choices[0].message.content or "") if resp.choices else ""


class Chat:
    """Chat completions with the reply cache, token usage and :mod:`genept._core._openai`'s retries and redaction."""

    def __init__(
        self, *, model, api_key, base_url, temperature, max_tokens, timeout, max_retries, cache
    ):
        self.model = model
        self._api_key = api_key
        self.base_url = resolve_base_url(base_url)
        self.server = server_identity(self.base_url)
        self.options: dict[str, Any] = {"temperature": temperature}
        if max_tokens is not None:
            self.options["max_tokens"] = int(max_tokens)
        self.timeout, self.max_retries = float(timeout), int(max_retries)
        self.cache = cache
        self._client = None
        self.n_requests = self.n_cache_hits = 0
        self.prompt_tokens = self.completion_tokens = 0

    def __getstate__(self):  # never pickle the key
        return {**self.__dict__, "_api_key": None, "_client": None}

    def ask(self, prompt: str) -> tuple[str, bool]:
        """Reply to one user message; ``(text, from_cache)``."""
        messages = [{"role": "user", "content": prompt}]
        key = ReplyCache.key(self.model, messages, self.options, self.server)
        if self.cache is not None:
            hit = self.cache.get(self.model, key)
            if hit is not None:
                self.n_cache_hits += 1
                return hit, True
        if self._client is None:
            self._client = make_client(self._api_key, self.base_url, self.timeout)
        client = self._client
        where = f"the chat API at {self.server}" if self.server else "the OpenAI chat API"
        resp_box: list[Any] = []

        def parse(resp: Any) -> str:
            text = _reply_text(resp)
            resp_box.append(resp)
            return text

        text = call_with_retry(
            lambda: client.chat.completions.create(
                model=self.model, messages=messages, **self.options
            ),
            parse,
            where=f"{where} (model {self.model!r})",
            model=self.model,
            max_retries=self.max_retries,
            secret=client.api_key,
            resume_note="replies received so far are cached; rerunning resumes",
        )
        self.n_requests += 1
        usage = getattr(resp_box[-1], "usage", None)
        if usage is not None:
            self.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
            self.completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)
        if self.cache is not None:
            self.cache.put(self.model, key, text)
        return text, False


def est_tokens(text: str) -> int:
    """A cautious token estimate (~4 characters per token)."""
    return len(text) // 4 + 8
