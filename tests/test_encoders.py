"""Encoder base class (batching, cache, resume) and the packaged sentence-transformers model."""

from __future__ import annotations

import numpy as np
import pytest

from genept.encoders import (
    EmbeddingCache,
    SentenceTransformerEncoder,
    TextEncoder,
    get_encoder,
    packaged_minilm_path,
)


class Counting(TextEncoder):
    """A deterministic fake encoder that records its batches and can fail on demand."""

    cache_id = "fake:v1"
    dim = 3

    def __init__(self, fail_after: int | None = None):
        self.batches: list[list[str]] = []
        self.fail_after = fail_after

    def _encode(self, texts):
        if self.fail_after is not None and len(self.batches) >= self.fail_after:
            raise ConnectionError("network down")
        self.batches.append(list(texts))
        return np.array([[len(t), t.count("a"), 1.0] for t in texts], dtype=np.float32)


def expected(texts):
    return np.array([[len(t), t.count("a"), 1.0] for t in texts], dtype=np.float32)


def test_batches_dedupe_and_order(tmp_path):
    enc = Counting()
    texts = ["a", "bbbb", "aa", "a", "ccc", "aaaaa"]
    out = enc.encode(texts, batch_size=2, cache=EmbeddingCache(tmp_path / "c.sqlite"))
    np.testing.assert_array_equal(out, expected(texts))
    # 5 unique texts, longest first, in batches of 2
    assert enc.batches == [["aaaaa", "bbbb"], ["ccc", "aa"], ["a"]]


def test_cache_hit_makes_no_call(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    Counting().encode(["x", "yy"], cache=cache)
    enc = Counting()
    out = enc.encode(["yy", "x"], cache=cache)
    assert enc.batches == []
    np.testing.assert_array_equal(out, expected(["yy", "x"]))
    assert cache.count("fake:v1") == 2


def test_interrupted_run_resumes(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    texts = [f"text {i:02d}" + "a" * i for i in range(10)]
    with pytest.raises(ConnectionError):
        Counting(fail_after=2).encode(texts, batch_size=3, cache=cache)
    assert cache.count("fake:v1") == 6  # two finished batches are kept
    enc = Counting()
    out = enc.encode(texts, batch_size=3, cache=cache)
    assert sum(len(b) for b in enc.batches) == 4  # only what was missing
    np.testing.assert_array_equal(out, expected(texts))


def test_no_cache_and_empty_text(tmp_path):
    enc = Counting()
    enc.encode(["q"], cache=False)
    enc.encode(["q"], cache=False)
    assert len(enc.batches) == 2
    with pytest.raises(ValueError, match="empty text"):
        enc.encode(["ok", "  "], cache=False)
    assert enc.encode([], cache=False).shape == (0, 3)


def test_cache_rejects_bad_vectors(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    with pytest.raises(ValueError, match="non-finite"):
        cache.put_many("m", ["a"], np.array([[np.nan]]))
    with pytest.raises(ValueError, match="expected 2 vectors"):
        cache.put_many("m", ["a", "b"], np.ones((1, 2)))


def test_get_encoder_dispatch():
    enc = get_encoder(None)
    assert isinstance(enc, SentenceTransformerEncoder)
    assert enc.model_name == "sentence-transformers/all-MiniLM-L6-v2"
    c = Counting()
    assert get_encoder(c) is c
    with pytest.raises(TypeError):
        get_encoder(3)


def test_unknown_model_error_lists_choices():
    enc = get_encoder("no-such-org/no-such-model-xyz")
    with pytest.raises(ValueError, match="all-MiniLM-L6-v2"):
        enc.encode(["x"], cache=False)


def test_packaged_minilm(minilm, tmp_path):
    texts = ["Gene CD3E is part of the T-cell receptor complex.", "CD3E CD3D CD2", "hemoglobin"]
    out = minilm.encode(texts, cache=EmbeddingCache(tmp_path / "c.sqlite"))
    assert out.shape == (3, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # independent reference: sentence-transformers itself on the same folder
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(str(minilm._source), device="cpu").encode(texts)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    # related texts are closer than unrelated ones
    assert out[0] @ out[1] > out[0] @ out[2]
    assert minilm.max_tokens == 256
    n = minilm.count_tokens(["CD3E CD8A", "hello"])
    assert n.tolist()[1] == 3  # [CLS] hello [SEP]


def test_local_folder_model_knows_its_limits_before_first_use(tmp_path):
    """A model from a folder (not the packaged name) reports max_tokens / dim before any
    encode call: token budgets of cell sentences are computed before encoding."""
    from genept.pp import token_budget

    enc = SentenceTransformerEncoder(str(packaged_minilm_path()), device="cpu")
    assert enc._model is None
    assert enc.max_tokens == 256  # read from the folder's model, loaded on demand
    assert enc.dim == 384
    counts, budget = token_budget(
        SentenceTransformerEncoder(str(packaged_minilm_path()), device="cpu"), ["CD3E", "MS4A1"]
    )
    assert budget == 254  # 256 minus [CLS] and [SEP]
    assert counts.tolist() == enc.count_tokens(["CD3E", "MS4A1"]).__sub__(2).tolist()


def test_minilm_on_cpu_sizes_torch_threads(minilm, monkeypatch):
    """settings.n_jobs sizes torch's pool while encoding (restored after); unset, torch's own."""
    import torch

    import genept as gpt

    before = torch.get_num_threads()
    target = 2 if before != 2 else 1
    seen = []
    model = minilm.model
    real = model.encode

    def spy(*a, **k):
        seen.append(torch.get_num_threads())
        return real(*a, **k)

    monkeypatch.setattr(model, "encode", spy)
    monkeypatch.setattr(gpt.settings, "n_jobs", target)
    out = minilm.encode(["CD3E CD3D", "MS4A1 CD79A", "LYZ"], cache=False, batch_size=2)
    assert out.shape == (3, 384)
    assert seen == [target, target]  # two batches, both sized
    assert torch.get_num_threads() == before
    seen.clear()
    monkeypatch.setattr(gpt.settings, "n_jobs", None)
    minilm.encode(["CD14"], cache=False)
    assert seen == [before]  # left at torch's default
    monkeypatch.setattr(gpt.settings, "n_jobs", target)
    monkeypatch.setattr(model, "encode", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        minilm.encode(["HBB"], cache=False)
    assert torch.get_num_threads() == before
