"""OpenAIEncoder against an OpenAI-compatible server started on 127.0.0.1 by the test."""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from genept.encoders import EmbeddingCache, OpenAIEncoder, OpenAIRequestError

KEY = "sk-test-SECRETKEY-0123456789abcdef"
WIDTH = 8


def expected_vector(text: str, dim: int = WIDTH) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


class MockServer:
    """Scripted OpenAI embeddings endpoint; records every request it answers."""

    def __init__(self):
        self.requests: list[list[str]] = []  # inputs of each request (successful or not)
        self.script: list[tuple[int, dict]] = []  # (status, headers) answered before normal ones
        self.fail_after: int | None = None  # successes allowed before failing with 500 forever
        self.sleep_first: float = 0.0  # delay of the first request (timeouts)
        self.successes = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status: int, body: dict, headers: dict | None = None):
                raw = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up
                    pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/embeddings":
                    return self._send(404, {"error": {"message": "not found"}})
                inputs = body["input"]
                with server.lock:
                    server.requests.append(list(inputs))
                    nth = len(server.requests)
                    step = server.script.pop(0) if server.script else None
                    dead = server.fail_after is not None and server.successes >= server.fail_after
                if nth == 1 and server.sleep_first:
                    time.sleep(server.sleep_first)
                if self.headers.get("Authorization") != f"Bearer {KEY}":
                    given = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    # like the real API, the message echoes the (wrong) key
                    msg = f"Incorrect API key provided: {given}."
                    return self._send(
                        401, {"error": {"message": msg, "type": "invalid_request_error"}}
                    )
                if step is not None:
                    status, headers = step
                    return self._send(status, {"error": {"message": f"scripted {status}"}}, headers)
                if dead:
                    return self._send(500, {"error": {"message": "the server is down"}})
                dim = int(body.get("dimensions") or WIDTH)
                b64 = body.get("encoding_format") == "base64"
                data = []
                for i, text in enumerate(inputs):
                    v = expected_vector(text, dim)
                    emb = base64.b64encode(v.tobytes()).decode() if b64 else v.tolist()
                    data.append({"object": "embedding", "index": i, "embedding": emb})
                data.reverse()  # clients must order by `index`, not by position
                with server.lock:
                    server.successes += 1
                n_tok = sum(len(t.split()) for t in inputs)
                return self._send(
                    200,
                    {
                        "object": "list",
                        "data": data,
                        "model": body["model"],
                        "usage": {"prompt_tokens": n_tok, "total_tokens": n_tok},
                    },
                )

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def reset_log(self):
        with self.lock:
            self.requests.clear()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.lower(), raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def server():
    srv = MockServer()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
        srv.thread.join(timeout=10)


@pytest.fixture
def cache(tmp_path):
    return EmbeddingCache(tmp_path / "c.sqlite")


def make(server, **kw):
    kw.setdefault("api_key", KEY)
    kw.setdefault("max_retries", 3)
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("timeout", 10)
    return OpenAIEncoder("mock-embed", base_url=server.url, **kw)


TEXTS = [f"gene{i} " + "word " * (i % 4) for i in range(10)]


def test_batches_order_and_values(server, cache):
    enc = make(server, batch_size=4)
    out = enc.encode(TEXTS, cache=cache, show_progress=False)
    assert [len(r) for r in server.requests] == [4, 4, 2]
    assert out.dtype == np.float32 and out.shape == (10, WIDTH)
    np.testing.assert_array_equal(out, np.stack([expected_vector(t) for t in TEXTS]))
    assert enc.dim == WIDTH
    # a second call is served from the cache
    server.reset_log()
    again = enc.encode(TEXTS[::-1], cache=cache, show_progress=False)
    assert server.requests == []
    np.testing.assert_array_equal(again, out[::-1])


def test_duplicates_requested_once(server, cache):
    texts = ["a b", "c", "a b", "c", "d e f"]
    out = make(server).encode(texts, cache=cache, show_progress=False)
    assert sorted(t for r in server.requests for t in r) == ["a b", "c", "d e f"]
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[4], expected_vector("d e f"))


def test_requests_split_by_tokens(server, cache):
    enc = make(server, batch_size=100, max_request_tokens=25)
    texts = [f"t{i} " + "x " * 8 for i in range(6)]  # ~ 11-12 estimated tokens each
    out = enc.encode(texts, cache=cache, show_progress=False)
    assert len(server.requests) >= 3
    assert sum(len(r) for r in server.requests) == 6
    np.testing.assert_array_equal(out, np.stack([expected_vector(t) for t in texts]))


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retry_then_success(server, cache, status):
    server.script = [(status, {"Retry-After": "0"} if status == 429 else {})]
    out = make(server).encode(["CD3E", "CD8A"], cache=cache, show_progress=False)
    assert len(server.requests) == 2
    np.testing.assert_array_equal(out, np.stack([expected_vector("CD3E"), expected_vector("CD8A")]))


def test_retry_after_is_honoured(server, cache):
    server.script = [(429, {"Retry-After": "0.3"})]
    t0 = time.perf_counter()
    make(server, backoff_base=0.0).encode(["CD3E"], cache=cache, show_progress=False)
    assert time.perf_counter() - t0 >= 0.25
    assert len(server.requests) == 2


def test_gives_up_after_max_retries(server, cache):
    server.script = [(500, {})] * 5
    with pytest.raises(OpenAIRequestError, match=r"HTTP 500 after 3 attempt") as info:
        make(server, max_retries=2).encode(["CD3E"], cache=cache, show_progress=False)
    assert info.value.status_code == 500
    assert len(server.requests) == 3


def test_timeout_is_retried(server, cache):
    server.sleep_first = 1.5
    out = make(server, timeout=0.3).encode(["CD3E"], cache=cache, show_progress=False)
    assert len(server.requests) == 2
    np.testing.assert_array_equal(out[0], expected_vector("CD3E"))


def test_connection_error_is_retried_then_reported(cache):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    enc = OpenAIEncoder(
        "mock-embed",
        api_key=KEY,
        base_url=f"http://127.0.0.1:{port}/v1",
        max_retries=1,
        backoff_base=0.01,
        timeout=5,
    )
    with pytest.raises(OpenAIRequestError, match="connection error after 2 attempt"):
        enc.encode(["CD3E"], cache=cache, show_progress=False)


@pytest.mark.parametrize("status", [400, 404])
def test_client_errors_are_not_retried(server, cache, status):
    server.script = [(status, {})]
    with pytest.raises(OpenAIRequestError, match=f"HTTP {status}") as info:
        make(server).encode(["CD3E"], cache=cache, show_progress=False)
    assert info.value.status_code == status
    assert len(server.requests) == 1


def test_401_clear_error_without_key(server, cache):
    wrong = "sk-test-WRONGKEY-zyxwvut987654"
    enc = OpenAIEncoder("mock-embed", api_key=wrong, base_url=server.url, backoff_base=0.01)
    with pytest.raises(OpenAIRequestError, match="OPENAI_API_KEY") as info:
        enc.encode(["CD3E"], cache=cache, show_progress=False)
    assert len(server.requests) == 1  # no retry
    assert info.value.status_code == 401
    shown = "".join(traceback.format_exception(info.value))
    assert wrong not in shown and "WRONGKEY" not in shown
    assert cache.count() == 0


def test_missing_key_names_env_var(monkeypatch):
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIEncoder("text-embedding-3-large")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    enc = OpenAIEncoder("text-embedding-3-large")
    assert enc.dim == 3072 and enc.max_tokens == 8191


def test_crash_resume(server, cache):
    server.fail_after = 2
    enc = make(server, batch_size=4, max_retries=2)
    with pytest.raises(OpenAIRequestError, match="HTTP 500"):
        enc.encode(TEXTS, cache=cache, show_progress=False)
    done = [t for r in server.requests[:2] for t in r]
    assert len(done) == 8
    assert cache.count(enc.cache_id) == 8
    hits = cache.get_many(enc.cache_id, done)
    assert len(hits) == 8
    # the server is healthy again: only the two missing texts are requested
    server.fail_after = None
    server.reset_log()
    out = enc.encode(TEXTS, cache=cache, show_progress=False)
    assert len(server.requests) == 1
    assert sorted(server.requests[0]) == sorted(set(TEXTS) - set(done))
    np.testing.assert_array_equal(out, np.stack([expected_vector(t) for t in TEXTS]))


def test_key_never_stored_or_shown(server, tmp_path, cache):
    enc = make(server)
    enc.encode(TEXTS, cache=cache, show_progress=False)
    for f in tmp_path.iterdir():  # the database and its -wal/-shm files
        assert KEY.encode() not in f.read_bytes(), f.name
    assert KEY not in repr(enc) and KEY not in enc.cache_id and KEY not in str(vars(enc).keys())
    blob = pickle.dumps(enc)
    assert KEY.encode() not in blob


def test_unpickled_encoder_reads_key_from_env(server, cache, monkeypatch):
    enc = pickle.loads(pickle.dumps(make(server)))
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        enc.encode(["CD3E"], cache=cache, show_progress=False)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    out = enc.encode(["CD3E"], cache=cache, show_progress=False)
    np.testing.assert_array_equal(out[0], expected_vector("CD3E"))


def test_cache_id(server, monkeypatch):
    official = OpenAIEncoder("text-embedding-3-large", api_key=KEY)
    assert official.cache_id == "openai:text-embedding-3-large"
    assert repr(official) == "OpenAIEncoder('openai:text-embedding-3-large')"
    also = OpenAIEncoder(
        "text-embedding-ada-002", api_key=KEY, base_url="https://api.openai.com/v1"
    )
    assert also.cache_id == "openai:text-embedding-ada-002"
    short = OpenAIEncoder("text-embedding-3-large", api_key=KEY, dimensions=256)
    assert short.cache_id == "openai:text-embedding-3-large:d256" and short.dim == 256
    other = OpenAIEncoder(
        "text-embedding-3-large", api_key=KEY, base_url="https://user:pw@proxy.example:8443/v1/"
    )
    assert other.cache_id == "openai:text-embedding-3-large@proxy.example:8443/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    assert OpenAIEncoder("m", api_key=KEY).cache_id == f"openai:m@127.0.0.1:{server.port}/v1"


def test_dimensions_are_sent(server, cache):
    enc = OpenAIEncoder(
        "text-embedding-3-large", api_key=KEY, base_url=server.url, dimensions=4, backoff_base=0.01
    )
    out = enc.encode(["CD3E"], cache=cache, show_progress=False)
    np.testing.assert_array_equal(out[0], expected_vector("CD3E", 4))


def test_wrong_width_is_reported(server, cache):
    enc = OpenAIEncoder("text-embedding-3-small", api_key=KEY, base_url=server.url)
    with pytest.raises(OpenAIRequestError, match="1536"):
        enc.encode(["CD3E"], cache=cache, show_progress=False)
    assert cache.count() == 0


def test_get_encoder_routes_openai_names(server):
    from genept.encoders import get_encoder

    enc = get_encoder("openai:mock-embed", api_key=KEY, base_url=server.url)
    assert isinstance(enc, OpenAIEncoder) and enc.model == "mock-embed"


class CharTokenizer:
    """Stands in for a tiktoken encoding: one token per character."""

    def encode_batch(self, texts):
        return [[ord(c) for c in t] for t in texts]

    def decode(self, ids):
        return "".join(map(chr, ids))


def test_long_texts_cut_with_tokenizer(server, cache):
    enc = make(server)
    enc._tokenizer = CharTokenizer()
    long = "x" * 9000
    assert enc.count_tokens(["abc", long]).tolist() == [3, 9000]
    out = enc.encode([long, "abc"], cache=cache, show_progress=False)
    assert [len(t) for t in server.requests[0]] == [8191, 3]
    np.testing.assert_array_equal(out[0], expected_vector("x" * 8191))
    # cached under the text the caller gave
    assert len(cache.get_many(enc.cache_id, [long])) == 1


def test_count_tokens_without_tiktoken(server):
    enc = make(server)
    enc._tokenizer = False  # as when tiktoken is not installed
    assert enc.count_tokens(["one two three"]).tolist() == [int(3 * 1.3) + 2]
