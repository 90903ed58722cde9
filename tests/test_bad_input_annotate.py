"""Bad input for annotation, caches and the OpenAI plumbing (issue 14: items 4, 6, 9, 10,
12, 13, 15, 19). Each test failed on the code before the fix."""

from __future__ import annotations

import json
import sqlite3
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

import genept as gpt
from genept._cache import EmbeddingCache
from genept.encoders import TextEncoder
from genept.models import ScMPTModel
from genept.tl import (
    annotate_knn,
    annotate_knn_ensemble,
    annotate_llm,
    annotate_mlp,
    annotate_scmpt,
    classification_metrics,
)
from genept.tl._annotate import proba_frame

KEY = "sk-test-SECRET-bad-input-0123456789"


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    progress, gpt.settings.progress = gpt.settings.progress, False
    yield
    torch.set_num_threads(n)
    gpt.settings.progress = progress


def blobs(n_per=20, labels=("a", "b", "c"), seed=0, d=4) -> ad.AnnData:
    """Well separated classes in obsm["X_e"] and obsm["X_f"]."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.asarray(labels, dtype=object), n_per)
    centers = {lab: rng.normal(scale=6, size=d) for lab in labels}
    x = np.stack([centers[v] for v in y]) + rng.normal(size=(y.size, d))
    a = ad.AnnData(
        np.zeros((y.size, 1), np.float32),
        obs=pd.DataFrame({"cell_type": y}, index=[f"c{seed}_{i}" for i in range(y.size)]),
    )
    a.obsm["X_e"] = x.astype(np.float32)
    a.obsm["X_f"] = (x[:, ::-1] * 2).astype(np.float32)
    return a


SMALL = dict(hidden=8, epochs_grid=(5,), lr_grid=(1e-2,), n_seeds=1, device="cpu")


# ----------------------------------------------------------------------------- item 6
@pytest.mark.parametrize("method", ["knn", "ensemble", "mlp", "scmpt"])
def test_empty_cells_get_no_label(method):
    ref, query = blobs(seed=0), blobs(n_per=3, seed=0)
    query.obsm["X_e"][0] = 0  # an empty GenePT-w cell
    query.obsm["X_f"][0] = 0
    if method == "knn":
        annotate_knn(query, ref, use_rep="X_e", key_added="k")
    elif method == "ensemble":
        annotate_knn_ensemble(query, ref, use_rep=["X_e", "X_f"], key_added="k")
    elif method == "mlp":
        annotate_mlp(query, ref, use_rep="X_e", epochs=5, device="cpu", key_added="k")
    else:
        annotate_scmpt(query, ref, reps=["X_e", "X_f"], key_added="k", **SMALL)
    assert pd.isna(query.obs["k"].iloc[0])
    assert query.obs["k_confidence"].iloc[0] == 0
    assert np.isnan(query.obsm["k_proba"][0]).all()
    assert query.obs["k"].iloc[1:].notna().all()
    assert (query.obs["k_confidence"].iloc[1:] > 0).all()


def test_empty_reference_cells_are_left_out():
    ref, query = blobs(seed=0), blobs(n_per=2, seed=0)
    ref.obsm["X_e"][:5] = 0
    with pytest.warns(UserWarning, match="5 reference cells have an all-zero"):
        annotate_knn(query, ref, use_rep="X_e")
    assert query.uns["genept_knn"]["params"]["n_reference"] == ref.n_obs - 5


def test_llm_cells_without_sentence_get_confidence_0(tmp_path, monkeypatch):
    monkeypatch.setattr(gpt.settings, "cache_dir", tmp_path)
    a = ad.AnnData(
        np.zeros((2, 1)), obs=pd.DataFrame({"genept_sentence": ["", np.nan]}, index=["x", "y"])
    )
    with pytest.warns(UserWarning, match="no sentence"):
        annotate_llm(a, candidates=["B cell", "T cell"], api_key=KEY)
    assert a.obs["genept_llm"].isna().all()
    np.testing.assert_array_equal(a.obs["genept_llm_confidence"], [0, 0])


# ----------------------------------------------------------------------------- item 9
def test_float_reference_labels_match_int_query_labels():
    ref = blobs(labels=(1.0, 2.0, 3.0), seed=1)
    ref.obs["cell_type"] = ref.obs["cell_type"].astype(float)
    query = blobs(n_per=4, labels=(1, 2, 3), seed=1)
    query.obs["cell_type"] = query.obs["cell_type"].astype(int)
    annotate_knn(query, ref, use_rep="X_e")
    assert query.uns["genept_knn"]["classes"] == ["1", "2", "3"]
    by_hand = (query.obs["genept_knn"].astype(str) == query.obs["cell_type"].astype(str)).mean()
    assert query.uns["genept_knn"]["metrics"]["accuracy"] == pytest.approx(by_hand)
    assert by_hand > 0.8
    assert classification_metrics([1.0, 2.0], [1, 2])["accuracy"] == 1.0


def test_disjoint_label_vocabularies_warn():
    ref, query = blobs(seed=2), blobs(n_per=3, labels=("x", "y", "z"), seed=2)
    with pytest.warns(UserWarning, match="name the cell types alike"):
        annotate_knn(query, ref, use_rep="X_e")


# ----------------------------------------------------------------------------- item 12
def test_key_added_equal_to_label_key_is_refused():
    ref, query = blobs(seed=3), blobs(n_per=3, seed=3)
    before = query.obs["cell_type"].copy()
    with pytest.raises(ValueError, match="overwrite"):
        annotate_knn(query, ref, use_rep="X_e", key_added="cell_type")
    with pytest.raises(ValueError, match="overwrite"):
        annotate_scmpt(query, ref, reps=["X_e", "X_f"], key_added="cell_type", **SMALL)
    pd.testing.assert_series_equal(query.obs["cell_type"], before)


@pytest.mark.parametrize("missing", ["", "nan", "NaN", "  "])
def test_empty_and_nan_strings_are_missing_labels(missing):
    ref, query = blobs(seed=4), blobs(n_per=3, seed=4)
    ref.obs["cell_type"] = ref.obs["cell_type"].astype(object)
    ref.obs.iloc[:4, 0] = missing
    with pytest.warns(UserWarning, match="4 reference cells have no 'cell_type' label"):
        annotate_knn(query, ref, use_rep="X_e")
    assert query.uns["genept_knn"]["classes"] == ["a", "b", "c"]


# ----------------------------------------------------------------------------- item 15
def test_empty_query_is_refused_clearly():
    ref = blobs(seed=5)
    with pytest.raises(ValueError, match="no cells"):
        annotate_knn(ref[:0].copy(), ref, use_rep="X_e")
    with pytest.raises(ValueError, match="`reference` has no cells"):
        annotate_knn(ref, ref[:0].copy(), use_rep="X_e")
    with pytest.raises(ValueError, match="no cells"):
        annotate_scmpt(ref[:0].copy(), ref, reps=["X_e", "X_f"], **SMALL)


def test_scmpt_save_to_a_file_fails_before_training(tmp_path, monkeypatch):
    ref, query = blobs(seed=6), blobs(n_per=2, seed=6)
    target = tmp_path / "model"
    target.write_text("not a folder")
    calls = []
    monkeypatch.setattr(ScMPTModel, "fit", classmethod(lambda *a, **k: calls.append(1)))
    with pytest.raises(FileExistsError, match="existing file"):
        annotate_scmpt(query, ref, reps=["X_e", "X_f"], save=target, **SMALL)
    assert calls == []
    assert target.read_text() == "not a folder"


@pytest.fixture
def saved_model(tmp_path):
    m = ScMPTModel.fit(blobs(seed=7), reps=["X_e", "X_f"], **SMALL)
    return m.save(tmp_path / "m")


def test_truncated_weights_name_the_file(saved_model):
    w = saved_model / "weights.pt"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"weights\.pt.*truncated or damaged"):
        ScMPTModel.load(saved_model)


def test_broken_config_names_the_file(saved_model):
    (saved_model / "config.json").write_text('{"format": "genept-scmpt", ')
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        ScMPTModel.load(saved_model)


# ----------------------------------------------------------------------------- item 19
def test_any_class_name_round_trips_without_warning(tmp_path):
    labels = ("CD4+/CD25 T Reg", "CD8+/CD45RA+ Naive", "B cell")
    ref, query = blobs(labels=labels, seed=8), blobs(n_per=3, labels=labels, seed=8)
    annotate_knn(query, ref, use_rep="X_e")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        query.write_h5ad(tmp_path / "q.h5ad")
        back = ad.read_h5ad(tmp_path / "q.h5ad")
    pd.testing.assert_frame_equal(proba_frame(back, "genept_knn"), proba_frame(query, "genept_knn"))
    assert list(proba_frame(back, "genept_knn").columns) == sorted(labels)
    # readers take it: the two-stage LLM flow finds each cell's top labels
    pf = proba_frame(back, "genept_knn")
    assert pf.idxmax(axis=1).tolist() == back.obs["genept_knn"].astype(str).tolist()


# ----------------------------------------------------------------------------- item 4
class Counting(TextEncoder):
    cache_id = "counting"
    dim = 3

    def __init__(self):
        self.seen: list[str] = []

    def _encode(self, texts):
        self.seen += texts
        return np.array([[len(t), 1.0, 2.0] for t in texts], dtype=np.float32)


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e30])
def test_damaged_cached_vectors_are_encoded_again(tmp_path, bad):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    enc = Counting()
    enc.encode(["CD3E", "CD4"], cache=cache)
    row = np.array([bad, 1, 2], dtype=np.float32).tobytes()
    with sqlite3.connect(cache.path) as con:
        con.execute("UPDATE vectors SET value = ? WHERE ns = 'counting'", (row,))
    enc.seen.clear()
    with pytest.warns(UserWarning, match="2 cached vector"):
        out = enc.encode(["CD3E", "CD4"], cache=cache)
    np.testing.assert_array_equal(out, [[4, 1, 2], [3, 1, 2]])
    assert sorted(enc.seen) == ["CD3E", "CD4"]
    enc.seen.clear()
    enc.encode(["CD3E", "CD4"], cache=cache)  # repaired: no call
    assert enc.seen == []


def test_cached_vector_of_another_width_is_encoded_again(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    cache.put_many(
        "counting", ["CD3E"], np.ones((1, 2))
    )  # written under the same id by another model
    enc = Counting()
    np.testing.assert_array_equal(enc.encode(["CD3E"], cache=cache), [[4, 1, 2]])
    assert enc.seen == ["CD3E"]


# ----------------------------------------------------------------------------- item 13
def test_damaged_embedding_cache_is_moved_aside(tmp_path):
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.warns(
        UserWarning, match=r"c\.sqlite was damaged.*moved it to .*c\.sqlite\.corrupt-"
    ):
        cache = EmbeddingCache(path)
    assert cache.count() == 0
    moved = list(tmp_path.glob("c.sqlite.corrupt-*"))
    assert len(moved) == 1 and moved[0].read_bytes().startswith(b"this is not")
    enc = Counting()
    enc.encode(["CD3E"], cache=cache)
    assert cache.count() == 1


def test_cache_damaged_while_open_is_rebuilt(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    Counting().encode(["CD3E"], cache=cache)
    for f in tmp_path.glob("c.sqlite*"):
        f.write_bytes(b"\0garbage" * 512)
    with pytest.warns(UserWarning, match="damaged"):
        assert cache.get_many("counting", ["CD3E"]) == {}


def test_damaged_store_that_is_not_a_cache_names_the_file(tmp_path):
    from genept._core._store import KVStore, StoreError

    path = tmp_path / "keep.sqlite"
    path.write_bytes(b"garbage" * 1000)
    with pytest.raises(StoreError, match=r"keep\.sqlite is damaged"):
        KVStore(path, "t", disposable=False)
    assert path.read_bytes().startswith(b"garbage")


# ----------------------------------------------------------------------------- servers
class Server:
    """An OpenAI-compatible endpoint: chat replies from ``reply``, or a non-JSON body."""

    def __init__(self, reply="B cell", non_json=False):
        self.n = 0
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.n += 1
                if non_json:
                    raw, ctype = b"<html>proxy error page</html>", "application/json"
                elif "input" in body:
                    data = [
                        {"object": "embedding", "index": i, "embedding": [1.0, 2.0]}
                        for i in range(len(body["input"]))
                    ]
                    raw = json.dumps(
                        {
                            "object": "list",
                            "data": data,
                            "model": body["model"],
                            "usage": {"prompt_tokens": 1, "total_tokens": 1},
                        }
                    ).encode()
                    ctype = "application/json"
                else:
                    raw = json.dumps(
                        {
                            "id": "x",
                            "object": "chat.completion",
                            "created": 0,
                            "model": body["model"],
                            "choices": [
                                {
                                    "index": 0,
                                    "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": reply},
                                }
                            ],
                        }
                    ).encode()
                    ctype = "application/json"
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def one_cell() -> ad.AnnData:
    return ad.AnnData(
        np.zeros((1, 1)), obs=pd.DataFrame({"genept_sentence": ["MS4A1 CD79A"]}, index=["c"])
    )


# ----------------------------------------------------------------------------- item 10
def test_llm_reply_cache_keeps_servers_apart(tmp_path, monkeypatch):
    monkeypatch.setattr(gpt.settings, "cache_dir", tmp_path)
    s1, s2 = Server("B cell"), Server("T cell")
    try:
        a = one_cell()
        annotate_llm(a, candidates=["B cell", "T cell"], api_key=KEY, base_url=s1.url)
        b = one_cell()
        annotate_llm(b, candidates=["B cell", "T cell"], api_key=KEY, base_url=s2.url)
        c = one_cell()
        annotate_llm(c, candidates=["B cell", "T cell"], api_key=KEY, base_url=s1.url)
    finally:
        s1.close()
        s2.close()
    assert (s1.n, s2.n) == (1, 1)  # the third run came from server 1's cache entry
    assert a.obs["genept_llm"].iloc[0] == "B cell" and b.obs["genept_llm"].iloc[0] == "T cell"
    assert c.uns["genept_llm"]["usage"]["n_cache_hits"] == 1


def test_damaged_reply_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setattr(gpt.settings, "cache_dir", tmp_path)
    (tmp_path / "llm").mkdir()
    (tmp_path / "llm" / "chat.sqlite").write_bytes(b"junk" * 1000)
    s = Server("B cell")
    try:
        with pytest.warns(UserWarning, match=r"chat\.sqlite was damaged"):
            annotate_llm(one_cell(), candidates=["B cell", "T cell"], api_key=KEY, base_url=s.url)
    finally:
        s.close()
    assert s.n == 1


# ----------------------------------------------------------------------------- item 15
def test_non_json_chat_answer_is_retried_then_clear(tmp_path, monkeypatch):
    monkeypatch.setattr(gpt.settings, "cache_dir", tmp_path)
    monkeypatch.setattr("genept._core._openai.backoff", lambda *a: 0.0)
    s = Server(non_json=True)
    a = one_cell()
    try:
        with pytest.raises(RuntimeError, match=r"not the API's JSON.*after 3 attempt") as info:
            annotate_llm(
                a, candidates=["B cell", "T cell"], api_key=KEY, base_url=s.url, max_retries=2
            )
    finally:
        s.close()
    assert s.n == 3 and KEY not in str(info.value)
    assert "genept_llm" not in a.obs


def test_non_json_embeddings_answer_is_retried_then_clear(tmp_path):
    from genept.encoders import OpenAIEncoder

    s = Server(non_json=True)
    try:
        enc = OpenAIEncoder("mock", api_key=KEY, base_url=s.url, max_retries=1, backoff_base=0.01)
        with pytest.raises(RuntimeError, match=r"not the API's JSON.*after 2 attempt"):
            enc.encode(["CD3E"], cache=False)
    finally:
        s.close()
    assert s.n == 2


def test_store_survives_concurrent_writers(tmp_path):
    """Writers with their own connections (as separate processes have) lose nothing."""
    path = tmp_path / "c.sqlite"
    errors: list[Exception] = []

    def writer(w: int):
        try:
            cache = EmbeddingCache(path)
            for b in range(20):
                texts = [f"w{w}-b{b}-{i}" for i in range(5)]
                cache.put_many("m", texts, np.full((5, 3), w + b / 100, np.float32))
                assert len(cache.get_many("m", texts)) == 5
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert EmbeddingCache(path).count("m") == 4 * 20 * 5
    got = EmbeddingCache(path).get_many("m", ["w3-b19-4"])
    np.testing.assert_array_equal(got[0], np.full(3, 3.19, np.float32))


def test_reply_cache_of_earlier_versions_is_kept(tmp_path, monkeypatch):
    """Paid replies in the old table are migrated, not thrown away."""
    from genept.tl._annotate._chat import LLM_PROMPT, ReplyCache, format_candidates

    monkeypatch.setattr(gpt.settings, "cache_dir", tmp_path)
    (tmp_path / "llm").mkdir()
    prompt = LLM_PROMPT.format(
        candidates=format_candidates(["B cell", "T cell"]),
        sentence="MS4A1 CD79A",
        context="a single-cell RNA-seq dataset",
    )
    key = ReplyCache.key("gpt-4o-mini", [{"role": "user", "content": prompt}], {"temperature": 0.0})
    with sqlite3.connect(tmp_path / "llm" / "chat.sqlite") as con:
        con.execute(
            "CREATE TABLE replies (key TEXT PRIMARY KEY, model TEXT NOT NULL, reply TEXT NOT NULL)"
        )
        con.execute("INSERT INTO replies VALUES (?, ?, ?)", (key, "gpt-4o-mini", "T cell"))
    a = one_cell()
    annotate_llm(a, candidates=["B cell", "T cell"])  # no key, no server: from the cache
    assert a.obs["genept_llm"].iloc[0] == "T cell"
