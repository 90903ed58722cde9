"""Shared fixtures: an isolated cache folder, offline hub, quiet progress bars, and a
stratified reference/query split that works with pandas 3."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _allow_string_arrays() -> None:
    """pandas >= 3 makes strings (``obs_names`` too) pandas string arrays, which anndata
    0.12 writes only when asked: tests that call ``write_h5ad`` themselves ask here (the
    package's own writes go through ``genept._utils.atomic_write_h5ad``, which asks)."""
    import pandas as pd

    if int(pd.__version__.split(".")[0]) >= 3:
        import anndata

        if hasattr(getattr(anndata, "settings", None), "allow_write_nullable_strings"):
            anndata.settings.allow_write_nullable_strings = True


_allow_string_arrays()

#: real benchmark data beside the checkout (absent on a fresh machine: tests skip)
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Each test writes its caches to its own temporary folder, not ~/.cache."""
    import genept as gpt

    cache = tmp_path / "genept_cache"
    monkeypatch.setattr(gpt.settings, "cache_dir", cache)
    monkeypatch.setattr(gpt.settings, "progress", False)
    yield


@pytest.fixture(scope="session")
def minilm():
    """The packaged all-MiniLM-L6-v2 encoder (loaded once)."""
    from genept.encoders import SentenceTransformerEncoder

    return SentenceTransformerEncoder("all-MiniLM-L6-v2", device="cpu")


def stratified_split(adata, label_key: str, *, test_size: float = 0.2, random_state: int = 0):
    """``(reference, query)`` copies of ``adata``, split stratified by ``obs[label_key]``.

    Splits *positions*, not ``obs_names``: under pandas 3, ``obs_names`` are Arrow-backed
    strings, and ``train_test_split(adata.obs_names, ...)`` returns an array that
    scikit-learn and AnnData cannot index with (issue 10).
    """
    import numpy as np
    from sklearn.model_selection import train_test_split

    y = adata.obs[label_key].astype(str).to_numpy()
    tr, te = train_test_split(
        np.arange(adata.n_obs), test_size=test_size, stratify=y, random_state=random_state
    )
    return adata[np.sort(tr)].copy(), adata[np.sort(te)].copy()


@pytest.fixture(scope="session")
def split_cells():
    """:func:`stratified_split` for tests: ``ref, query = split_cells(adata, "cell_type")``."""
    return stratified_split


class ChatServer:
    """A minimal OpenAI-compatible chat-completions endpoint on 127.0.0.1.

    ``non_json=True``: every answer (chat or embeddings) is an HTML page labelled JSON,
    as a misconfigured proxy sends.
    """

    def __init__(self, respond, usage=(100, 5), non_json=False):
        self.respond = respond  # prompt -> reply text
        self.usage = usage  # (prompt, completion) tokens reported per reply
        self.non_json = non_json
        self.requests: list[dict] = []
        self.auth: list[str] = []
        self.status = 200
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                server.auth.append(self.headers.get("Authorization", ""))
                if server.status != 200:
                    given = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    out = {"error": {"message": f"Incorrect API key provided: {given}."}}
                elif not server.non_json:
                    text = server.respond(body["messages"][-1]["content"])
                    out = {
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": text},
                            }
                        ],
                        "usage": {
                            "prompt_tokens": server.usage[0],
                            "completion_tokens": server.usage[1],
                            "total_tokens": sum(server.usage),
                        },
                    }
                raw = (
                    b"<html>proxy error page</html>"
                    if server.non_json
                    else json.dumps(out).encode()
                )
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def chat_server():
    """Start OpenAI-compatible chat servers: ``chat_server(respond, usage=...)``, closed after the test."""
    started: list[ChatServer] = []

    def start(respond, **kw) -> ChatServer:
        started.append(ChatServer(respond, **kw))
        return started[-1]

    yield start
    for s in started:
        s.close()


class FakeOpenMP:
    """A stand-in OpenMP runtime: the calls ``openmp_unnested`` makes, with GNU libgomp's
    semantics (``nested`` follows the level limit; ``None``: no ``omp_get_nested``)."""

    def __init__(self, levels: int, nested: bool | None = None):
        self.levels = levels
        self.nested = nested
        self.calls: list[int] = []
        self.get_nested_calls = 0

    def omp_get_max_active_levels(self) -> int:
        return self.levels

    def omp_set_max_active_levels(self, n: int) -> None:
        self.calls.append(n)
        self.levels = n
        if self.nested is not None:
            self.nested = n > 1

    def omp_get_nested(self) -> int:
        self.get_nested_calls += 1
        if self.nested is None:
            raise AttributeError("omp_get_nested")
        return int(self.nested)


@pytest.fixture
def fake_openmp():
    """The :class:`FakeOpenMP` class, to build stand-in runtimes."""
    return FakeOpenMP


@pytest.fixture
def nested_openmp(monkeypatch):
    """One stand-in GNU runtime with numba's nesting on, installed as the only one loaded."""
    from genept._core import _device

    lib = FakeOpenMP(255, nested=True)
    monkeypatch.setattr(_device, "_openmp_libraries", lambda: [("libgomp", lib)])
    return lib
