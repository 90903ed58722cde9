"""gpt.tl.embed_genes: sources, matching, writing, errors, h5ad round trip, CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData, read_h5ad

import genept as gpt
from genept.encoders import TextEncoder


class HashEncoder(TextEncoder):
    """Deterministic fake encoder: a vector from the text's bytes (fast, no model)."""

    cache_id = "hash:v1"
    dim = 8

    def __init__(self):
        self.seen: list[str] = []

    def _encode(self, texts):
        self.seen += texts
        out = np.zeros((len(texts), 8), dtype=np.float32)
        for i, t in enumerate(texts):
            b = np.frombuffer(t.encode()[:64].ljust(64, b" "), dtype=np.uint8).astype(np.float32)
            out[i] = b.reshape(8, 8).sum(1) + len(t)
        return out


def make_adata(names, var=None):
    n = len(names) if names is not None else len(var)
    X = np.abs(np.random.default_rng(0).standard_normal((5, n))).astype(np.float32)
    return AnnData(X, var=var if var is not None else pd.DataFrame(index=names))


def test_user_embeddings_dict_and_matching():
    names = ["CD3E", "cd8a", "ENSG00000141510.5", "NOTAGENE"]
    adata = make_adata(names)
    rng = np.random.default_rng(1)
    table = {g: rng.standard_normal(6) for g in ["CD3E", "CD8A", "TP53", "MS4A1"]}
    gpt.tl.embed_genes(adata, source=table)
    M = adata.varm["X_genept"]
    assert M.dtype == np.float32 and M.shape == (4, 6)
    np.testing.assert_allclose(M[0], table["CD3E"], rtol=1e-6)
    np.testing.assert_allclose(M[1], table["CD8A"], rtol=1e-6)
    np.testing.assert_allclose(M[2], table["TP53"], rtol=1e-6)
    assert not M[3].any()
    assert adata.var["genept_has_embedding"].tolist() == [True, True, True, False]
    assert adata.var["genept_gene"].astype(str).tolist() == ["CD3E", "CD8A", "TP53", ""]
    p = adata.uns["genept"]["params"]
    assert p["n_genes_matched"] == 3 and p["n_genes_total"] == 4 and p["dim"] == 6
    assert p["match_counts"]["exact"] == 1
    assert p["match_counts"]["case"] == 1
    assert p["match_counts"]["ensembl"] == 1
    assert p["match_counts"]["none"] == 1


def test_alias_from_shipped_cards():
    # P53 is an NCBI alias of TP53
    adata = make_adata(["P53"])
    gpt.tl.embed_genes(adata, source={"TP53": np.ones(3)})
    assert adata.var["genept_gene"].astype(str).tolist() == ["TP53"]
    assert adata.uns["genept"]["params"]["match_counts"]["alias"] == 1


def test_cards_source_with_encoder_only_embeds_needed_genes():
    enc = HashEncoder()
    adata = make_adata(["CD3E", "MS4A1", "cd3e"])
    gpt.tl.embed_genes(adata, source="cards", model=enc)
    assert len(enc.seen) == 2  # CD3E once, MS4A1 once
    texts = gpt.datasets.card_text(gpt.datasets.gene_cards(), ["CD3E", "MS4A1"], text_level="card")
    np.testing.assert_array_equal(adata.varm["X_genept"][0], enc._encode([texts["CD3E"]])[0])
    np.testing.assert_array_equal(adata.varm["X_genept"][0], adata.varm["X_genept"][2])
    assert adata.uns["genept"]["params"]["text_level"] == "card"


@pytest.mark.parametrize("level", ["name", "summary", "card"])
def test_text_levels_differ(level):
    enc = HashEncoder()
    adata = make_adata(["CD3E"])
    gpt.tl.embed_genes(adata, source="cards", model=enc, text_level=level)
    text = enc.seen[0]
    assert "CD3E" in text
    if level == "name":
        assert text == "CD3E"
    else:
        assert len(text) > 20


def test_name_source_embeds_unknown_names_too():
    enc = HashEncoder()
    adata = make_adata(["CD3E", "MYFAKEGENE1"])
    gpt.tl.embed_genes(adata, source="name", model=enc)
    assert adata.var["genept_has_embedding"].all()
    assert sorted(enc.seen) == ["CD3E", "MYFAKEGENE1"]


def test_user_texts_mapping():
    enc = HashEncoder()
    adata = make_adata(["G1", "G2"])
    gpt.tl.embed_genes(
        adata, source={"G1": "a kinase", "G2": "a receptor"}, model=enc, text_level="summary"
    )
    assert sorted(enc.seen) == ["Gene G1. a kinase", "Gene G2. a receptor"]


def test_gene_symbols_column_and_key_added():
    var = pd.DataFrame({"symbol": ["CD3E", "TP53"]}, index=["ENSX1", "ENSX2"])
    adata = make_adata(None, var=var)
    gpt.tl.embed_genes(
        adata,
        source={"CD3E": [1.0, 0], "TP53": [0, 1.0]},
        gene_symbols="symbol",
        key_added="X_mine",
    )
    assert "X_mine" in adata.varm and "mine" in adata.uns
    assert adata.var["mine_has_embedding"].all()
    assert adata.uns["mine"]["params"]["gene_symbols"] == "symbol"


def test_copy_leaves_input_untouched():
    adata = make_adata(["CD3E"])
    out = gpt.tl.embed_genes(adata, source={"CD3E": [1.0, 2.0]}, copy=True)
    assert "X_genept" in out.varm and "X_genept" not in adata.varm
    assert gpt.tl.embed_genes(adata, source={"CD3E": [1.0, 2.0]}) is None


def test_no_match_error_suggests_gene_symbols():
    var = pd.DataFrame({"feature_name": ["CD3E"]}, index=["id_1"])
    adata = make_adata(None, var=var)
    with pytest.raises(ValueError, match=r"id_1.*gene_symbols=.*feature_name"):
        gpt.tl.embed_genes(adata, source={"CD3E": [1.0]})
    assert "X_genept" not in adata.varm and "genept" not in adata.uns


@pytest.mark.parametrize(
    ("kw", "exc", "msg"),
    [
        ({"source": "nonsense"}, ValueError, "unknown gene embedding source 'nonsense'.*cards"),
        ({"source": "genept", "model": "gpt-9"}, ValueError, "unknown GenePT model"),
        ({"source": "cards", "text_level": "poem"}, ValueError, "text_level must be one of"),
        ({"source": {"CD3E": [1.0, np.nan]}}, ValueError, "NaN"),
        ({"source": {"CD3E": [1.0], "TP53": [1.0, 2.0]}}, ValueError, "different lengths"),
        ({"gene_symbols": "nope", "source": {"CD3E": [1.0]}}, KeyError, "not a column"),
    ],
)
def test_bad_input_leaves_adata_untouched(kw, exc, msg):
    adata = make_adata(["CD3E"])
    before = adata.copy()
    with pytest.raises(exc, match=msg):
        gpt.tl.embed_genes(adata, **kw)
    assert list(adata.varm.keys()) == list(before.varm.keys()) == []
    assert adata.var.columns.tolist() == before.var.columns.tolist()
    assert dict(adata.uns) == {}


def test_encoder_failure_leaves_adata_untouched():
    class Broken(HashEncoder):
        cache_id = "broken:v1"

        def _encode(self, texts):
            raise ConnectionError("down")

    adata = make_adata(["CD3E"])
    with pytest.raises(ConnectionError):
        gpt.tl.embed_genes(adata, source="cards", model=Broken())
    assert "X_genept" not in adata.varm and dict(adata.uns) == {}


def test_h5ad_round_trip(tmp_path):
    adata = make_adata(["CD3E", "MS4A1", "ZZZ"])
    gpt.tl.embed_genes(adata, source="cards", model=HashEncoder())
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = read_h5ad(tmp_path / "a.h5ad")
    np.testing.assert_array_equal(back.varm["X_genept"], adata.varm["X_genept"])
    assert back.var["genept_has_embedding"].tolist() == [True, True, False]
    assert back.uns["genept"]["params"]["match_counts"]["none"] == 1
    assert back.uns["genept"]["params"]["model"] == adata.uns["genept"]["params"]["model"]


def test_real_minilm_on_pbmc(minilm):
    import scanpy as sc

    adata = sc.datasets.pbmc68k_reduced()[:, :40].copy()
    gpt.tl.embed_genes(adata, model=minilm)
    p = adata.uns["genept"]["params"]
    assert p["dim"] == 384 and p["model"].endswith("all-MiniLM-L6-v2")
    assert p["n_genes_matched"] >= 38  # nearly all pbmc genes have a card
    M = adata.varm["X_genept"][adata.var["genept_has_embedding"].to_numpy()]
    np.testing.assert_allclose(np.linalg.norm(M, axis=1), 1.0, atol=1e-4)


def test_cli_embed_genes(tmp_path, monkeypatch, capsys):
    from genept.cli import main

    adata = make_adata(["CD3E", "TP53"])
    adata.write_h5ad(tmp_path / "in.h5ad")
    emb = pd.DataFrame([[1.0, 0.0], [0.0, 1.0]], index=["CD3E", "TP53"])
    emb.to_csv(tmp_path / "emb.csv")
    rc = main(
        [
            "embed-genes",
            str(tmp_path / "in.h5ad"),
            str(tmp_path / "out.h5ad"),
            "--source",
            str(tmp_path / "emb.csv"),
            "--no-progress",
        ]
    )
    assert rc == 0
    out = read_h5ad(tmp_path / "out.h5ad")
    np.testing.assert_array_equal(out.varm["X_genept"], emb.to_numpy(np.float32))
    assert "2/2 genes embedded" in capsys.readouterr().out
    rc = main(
        ["embed-genes", str(tmp_path / "in.h5ad"), str(tmp_path / "o2.h5ad"), "--source", "bogus"]
    )
    assert rc == 2
    assert "unknown gene embedding source" in capsys.readouterr().err
