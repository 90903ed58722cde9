"""Tissue-context gene embeddings: embed_genes(context=...), offline and through an LLM.

GenePT appendix B.5: a tissue-specific rewrite of each gene's text, followed by the
original text, is embedded; the online path is tested against an OpenAI-compatible chat
server on 127.0.0.1.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import genept as gpt

TEXTS = {
    "CD3E": "CD3E encodes the CD3 epsilon chain of the T-cell receptor complex.",
    "SFTPC": "SFTPC encodes pulmonary surfactant protein C.",
    "MYH7": "MYH7 encodes the beta heavy chain of cardiac myosin.",
}
SECRET = "sk-test-DO-NOT-STORE-1234567890"


def _adata() -> ad.AnnData:
    return ad.AnnData(np.ones((2, 3), dtype=np.float32), var=pd.DataFrame(index=list(TEXTS)))


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_offline_context_differs_and_is_recorded(minilm):
    a = _adata()
    gpt.tl.embed_genes(a, TEXTS, model=minilm, cache=False)
    gpt.tl.embed_genes(
        a, TEXTS, model=minilm, context="lung", key_added="X_genept_lung", cache=False
    )
    plain, lung = a.varm["X_genept"], a.varm["X_genept_lung"]
    cos = (_unit(plain) * _unit(lung)).sum(1)
    assert (cos < 0.999).all() and (cos > 0.3).all()  # different, but still the same gene
    # exactly the documented text (source="name": the text is the symbol)
    gpt.tl.embed_genes(a, "name", model=minilm, context="lung", key_added="X_n", cache=False)
    want = minilm.encode(["SFTPC\nIn the context of lung: SFTPC in lung."], cache=False)[0]
    np.testing.assert_allclose(a.varm["X_n"][1], want, rtol=1e-4, atol=1e-5)
    p = a.uns["genept_lung"]["params"]
    assert (p["context"], p["contexts"], p["context_mode"]) == ("lung", ["lung"], "card")
    assert p["n_genes_with_context"] == 3
    assert "context" not in a.uns["genept"]["params"]


def test_per_gene_contexts(minilm):
    a = _adata()
    gpt.tl.embed_genes(a, TEXTS, model=minilm, cache=False)
    gpt.tl.embed_genes(
        a, TEXTS, model=minilm, context=["", "lung", "heart"], key_added="X_ctx", cache=False
    )
    # a gene without context keeps its plain embedding
    np.testing.assert_allclose(a.varm["X_ctx"][0], a.varm["X_genept"][0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(a.varm["X_ctx"][2], a.varm["X_genept"][2], atol=1e-3)
    p = a.uns["ctx"]["params"]
    assert p["context"] == "per-gene" and p["contexts"] == ["heart", "lung"]
    assert p["n_genes_with_context"] == 2
    # a dict gene -> context gives the same as the list
    gpt.tl.embed_genes(
        a, TEXTS, model=minilm, context={"SFTPC": "lung", "MYH7": "heart"}, key_added="X_d",
        cache=False,
    )  # fmt: skip
    np.testing.assert_allclose(a.varm["X_d"], a.varm["X_ctx"], rtol=1e-5, atol=1e-6)


def test_context_bad_input(minilm):
    a = _adata()
    with pytest.raises(ValueError, match="one entry per gene"):
        gpt.tl.embed_genes(a, TEXTS, model=minilm, context=["lung"])
    with pytest.raises(ValueError, match="context_mode"):
        gpt.tl.embed_genes(a, TEXTS, model=minilm, context="lung", context_mode="web")
    emb = {g: np.ones(4) * (i + 1) for i, g in enumerate(TEXTS)}
    with pytest.raises(ValueError, match="needs gene texts"):
        gpt.tl.embed_genes(a, emb, context="lung")
    assert "X_genept" not in a.varm


def _tissue_rewrite(prompt: str) -> str:
    """The LLM's answer: a rewrite of the asked gene for the asked tissue."""
    gene = prompt.split("Summary of ", 1)[1].split(":", 1)[0]
    tissue = prompt.split("contexts: ", 1)[1].split(".", 1)[0]
    return f"In {tissue}, {gene} acts in {tissue} tissue."


@pytest.fixture
def server(chat_server):
    return chat_server(_tissue_rewrite, usage=(80, 12))


def test_llm_context_through_local_server(minilm, server, tmp_path):
    a = _adata()
    kw = dict(
        model=minilm, context="heart", context_mode="llm", llm_model="gpt-4o-mini",
        api_key=SECRET, base_url=server.url, key_added="X_heart",
    )  # fmt: skip
    gpt.tl.embed_genes(a, TEXTS, **kw)
    assert len(server.requests) == 3
    prompts = [r["messages"][-1]["content"] for r in server.requests]
    assert all("heart" in p and "Rewrite" in p for p in prompts)
    assert any(TEXTS["MYH7"] in p for p in prompts)
    assert server.auth[0] == f"Bearer {SECRET}"
    # the rewrite followed by the original text is embedded (GenePT B.5)
    text = next(p for p in prompts if TEXTS["MYH7"] in p).split("Summary of MYH7: ", 1)[1]
    want = minilm.encode([f"In heart, MYH7 acts in heart tissue.\n{text}"], cache=False)
    np.testing.assert_allclose(a.varm["X_heart"][2], want[0], rtol=1e-4, atol=1e-5)
    p = a.uns["heart"]["params"]
    assert (p["context"], p["context_mode"], p["llm_model"]) == ("heart", "llm", "gpt-4o-mini")
    assert (p["llm_requests"], p["llm_cache_hits"]) == (3, 0)
    assert p["estimated_cost_usd"] > 0
    # cached: a second run asks nothing
    b = _adata()
    gpt.tl.embed_genes(b, TEXTS, **kw)
    assert len(server.requests) == 3
    assert b.uns["heart"]["params"]["llm_cache_hits"] == 3
    np.testing.assert_allclose(b.varm["X_heart"], a.varm["X_heart"])
    # the key is stored nowhere: not in uns, not in a written file, not in the caches
    assert SECRET not in repr(a.uns)
    a.write_h5ad(tmp_path / "a.h5ad")
    files = [tmp_path / "a.h5ad", *gpt.settings.cache_dir.rglob("*")]
    for f in files:
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f


def test_llm_cost_cap_stops_before_spending_and_resumes(minilm, server):
    a = _adata()
    kw = dict(
        model=minilm, context="lung", context_mode="llm", llm_model="gpt-4o-mini",
        api_key="none", base_url=server.url, key_added="X_lung",
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="cost cap"):
        gpt.tl.embed_genes(a, TEXTS, max_cost_usd=1e-9, **kw)
    assert len(server.requests) == 0  # stopped before the first request
    assert "X_lung" not in a.varm  # nothing half-written
    # an interrupted run (one gene done) resumes from the cached replies
    gpt.tl.embed_genes(a, TEXTS, max_cost_usd=1.0, **{**kw, "context": {"CD3E": "lung"}})
    assert len(server.requests) == 1
    gpt.tl.embed_genes(a, TEXTS, max_cost_usd=1.0, **kw)
    assert len(server.requests) == 3
    assert a.uns["lung"]["params"]["llm_cache_hits"] == 1


def test_pair_auc_accepts_context_embeddings(minilm):
    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(40)]
    a = ad.AnnData(np.ones((1, 40), dtype=np.float32), var=pd.DataFrame(index=genes))
    a.varm["X_genept_heart"] = rng.standard_normal((40, 8)).astype(np.float32)
    a.uns["genept_heart"] = {"params": {"context": "heart"}}
    pos = pd.DataFrame({"gene1": genes[0::2], "gene2": genes[1::2]})
    res = gpt.bm.pair_auc(
        a, pos, gene_key="X_genept_heart", negatives="uniform", include_random=False
    )
    assert res["embedding"].tolist() == ["genept (heart)"]
    direct = gpt.bm.pair_auc(
        pd.DataFrame(a.varm["X_genept_heart"], index=genes), pos, negatives="uniform",
        include_random=False,
    )  # fmt: skip
    assert res["auc"].iloc[0] == pytest.approx(direct["auc"].iloc[0])
