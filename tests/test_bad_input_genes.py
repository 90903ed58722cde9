"""Bad input on the gene side (issue 14): each test failed on the code before its fix."""

from __future__ import annotations

import os
import pickle
import time
import warnings
import zipfile

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import genept as gpt
from genept._gene_matching import build_alias_maps, match_genes
from genept.tl._gene_programs import gene_programs, program_scores

# -- item 1: an Ensembl id listed under several symbols --------------------------------

#: Ensembl id -> the gene it names (Ensembl's primary assembly)
KNOWN_IDS = {
    "ENSG00000160201": "U2AF1",  # also under LOC102724594
    "ENSG00000140650": "PMM2",  # also under LOC100130283
    "ENSG00000108379": "WNT3",  # also under LOC101929777
    "ENSG00000237541": "HLA-DQA2",  # also under HLA-DQA1 (alt haplotypes)
    "ENSG00000196735": "HLA-DQA1",
    "ENSG00000263247": "PRR4",  # also under PRH1
    "ENSG00000143384": "MCL1",  # also under ADAMTSL4-AS1
    "ENSG00000213809": "KLRK1",  # also under the read-through KLRC4-KLRK1
}
DECOYS = ["LOC102724594", "LOC100130283", "LOC101929777", "PRH1", "ADAMTSL4-AS1", "KLRC4-KLRK1"]


def _table(genes, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    return {g: rng.standard_normal(dim) + 0.1 for g in genes}


def test_ensembl_prefers_named_gene_and_counts_ties():
    tie = "ENSG00000171711"  # DEFB4A and DEFB4B: identical copies, a true tie
    names = [*KNOWN_IDS, tie + ".3"]
    adata = ad.AnnData(np.ones((2, len(names)), np.float32), var=pd.DataFrame(index=names))
    source = _table([*KNOWN_IDS.values(), *DECOYS, "DEFB4A", "DEFB4B"])
    gpt.tl.embed_genes(adata, source=source)
    got = adata.var["genept_gene"].astype(str).tolist()
    assert got == [*KNOWN_IDS.values(), ""]
    np.testing.assert_allclose(adata.varm["X_genept"][0], source["U2AF1"], rtol=1e-6)
    counts = adata.uns["genept"]["params"]["match_counts"]
    assert counts["ensembl"] == len(KNOWN_IDS) and counts["ambiguous"] == 1


def test_ensembl_map_of_shipped_cards_prefers_named_genes():
    cards = gpt.datasets.gene_cards()
    _, ensembl = build_alias_maps(cards)
    for ens, sym in KNOWN_IDS.items():
        assert ensembl[ens] == sym
    assert sorted(ensembl["ENSG00000171711"]) == ["DEFB4A", "DEFB4B"]  # tie kept as a tie
    # no LOC placeholder wins over a named gene (64 shared ids had a LOC winner before)
    shared = cards["ensembl"].dropna().str.split("|").explode()
    cands = shared.index.to_series().groupby(shared.to_numpy()).agg(set)
    multi = cands[cands.map(len) > 1]
    for e, syms in multi.items():
        won = ensembl[e]
        if isinstance(won, str) and won.startswith("LOC"):
            assert all(s.startswith("LOC") for s in syms), (e, syms)
    # the benchmark loaders use the same rule
    from genept.bm._loaders import _ensembl_to_symbol

    e2s = _ensembl_to_symbol()
    assert e2s["ENSG00000160201"] == "U2AF1" and e2s["ENSG00000237541"] == "HLA-DQA2"
    assert "ENSG00000171711" not in e2s.index


# -- item 2: missing symbols ----------------------------------------------------------


@pytest.mark.parametrize("missing", [np.nan, None, "", "NA", "nan", "NaN", pd.NA])
def test_missing_gene_symbols_stay_unmatched(missing):
    var = pd.DataFrame({"symbol": np.array([missing, "CD3E", "XK"], dtype=object)},
                       index=["a", "b", "c"])
    adata = ad.AnnData(np.ones((2, 3), np.float32), var=var)
    gpt.tl.embed_genes(adata, source=_table(["SCN11A", "XK", "CD3E"]), gene_symbols="symbol")
    assert adata.var["genept_has_embedding"].tolist() == [False, True, True]
    assert adata.var["genept_gene"].astype(str).tolist() == ["", "CD3E", "XK"]
    assert not adata.varm["X_genept"][0].any()
    assert adata.uns["genept"]["params"]["match_counts"]["missing"] == 1


def test_missing_names_not_matched_by_alias():
    aliases, ensembl = build_alias_maps(gpt.datasets.gene_cards())
    m = match_genes(["nan", "NaN", "NA", "", "XK"], ["SCN11A", "XK"], aliases=aliases,
                    ensembl=ensembl)
    assert m.target.tolist() == ["", "", "", "", "XK"]
    assert m.kind.tolist()[:4] == ["missing"] * 4


def test_missing_names_not_embedded_by_name_source():
    enc = _ListEncoder()
    var = pd.DataFrame({"symbol": np.array([np.nan, "CD3E"], dtype=object)}, index=["a", "b"])
    adata = ad.AnnData(np.ones((2, 2), np.float32), var=var)
    gpt.tl.embed_genes(adata, source="name", model=enc, gene_symbols="symbol")
    assert enc.seen == ["CD3E"]
    assert adata.var["genept_has_embedding"].tolist() == [False, True]


class _ListEncoder(gpt.encoders.TextEncoder):
    """Records what it is asked to embed."""

    cache_id = "list:v1"
    dim = 4

    def __init__(self):
        self.seen: list[str] = []

    def _encode(self, texts):
        self.seen += texts
        return np.ones((len(texts), 4), np.float32)


# -- item 16: mouse names, bad user vectors -------------------------------------------


def test_mouse_names_warn_and_skip_human_aliases():
    names = ["Gm83", "Cd3e", "Actb", "Cd8a", "Gapdh", "Ms4a1"]
    adata = ad.AnnData(np.ones((2, len(names)), np.float32), var=pd.DataFrame(index=names))
    source = _table(["DCAF13", "CD3E", "ACTB", "CD8A", "GAPDH", "MS4A1"])
    with pytest.warns(UserWarning, match="mouse"):
        gpt.tl.embed_genes(adata, source=source)
    got = adata.var["genept_gene"].astype(str).tolist()
    assert got == ["", "CD3E", "ACTB", "CD8A", "GAPDH", "MS4A1"]  # Gm83 is not DCAF13
    # a mouse table of the user's: no warning, exact matches, still no human aliases
    m = ad.AnnData(np.ones((2, 2), np.float32), var=pd.DataFrame(index=["Cd3e", "Gm83"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gpt.tl.embed_genes(m, source=_table(["Cd3e", "Actb", "DCAF13"]))
    assert m.var["genept_gene"].astype(str).tolist() == ["Cd3e", ""]
    # human names do not warn
    h = ad.AnnData(np.ones((2, 2), np.float32), var=pd.DataFrame(index=["CD3E", "C1orf112"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gpt.tl.embed_genes(h, source=_table(["CD3E", "C1orf112"]))


def test_user_vectors_2d_complex_zero():
    with pytest.raises(ValueError, match=r"CD3E.*\(2, 3\)"):
        gpt.GeneEmbeddings.from_mapping({"CD3E": np.ones((2, 3)), "CD8A": np.ones((2, 3))})
    with pytest.raises(ValueError, match="complex"):
        gpt.GeneEmbeddings(np.array(["A", "B"]), np.ones((2, 3), dtype=np.complex64))
    with pytest.raises(ValueError, match="complex"):
        gpt.GeneEmbeddings.from_mapping({"A": np.ones(3) * 1j, "B": np.ones(3)})
    # (1, d) per gene is one vector, not flattened from several
    e = gpt.GeneEmbeddings.from_mapping({"A": np.ones((1, 3)), "B": np.zeros((1, 3)) + 2})
    assert e.matrix.shape == (2, 3)
    adata = ad.AnnData(np.ones((2, 2), np.float32), var=pd.DataFrame(index=["CD3E", "CD8A"]))
    with pytest.warns(UserWarning, match="all-zero"):
        gpt.tl.embed_genes(adata, source={"CD3E": np.zeros(4), "CD8A": np.ones(4)})
    assert adata.var["genept_has_embedding"].tolist() == [False, True]
    assert adata.uns["genept"]["params"]["n_genes_matched"] == 1
    zeros = ad.AnnData(np.ones((2, 1), np.float32), var=pd.DataFrame(index=["CD3E"]))
    with pytest.warns(UserWarning, match="all-zero"), pytest.raises(ValueError, match="all-zero"):
        gpt.tl.embed_genes(zeros, source={"CD3E": np.zeros(4), "CD8A": np.ones(4)})
    assert "X_genept" not in zeros.varm


# -- item 15: unclear messages --------------------------------------------------------


def test_nonexistent_embedding_path_says_so(tmp_path):
    adata = ad.AnnData(np.ones((2, 1), np.float32), var=pd.DataFrame(index=["CD3E"]))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gpt.tl.embed_genes(adata, source=str(tmp_path / "emb.npz"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gpt.tl.embed_genes(adata, source=str(tmp_path / "folder" / "emb"))
    with pytest.raises(ValueError, match="unknown gene embedding source"):
        gpt.tl.embed_genes(adata, source="cardz")


def _programs_adata(n_obs=30, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.standard_normal((8, 8)))[0][:2] * 3
    E = np.repeat(centres, 12, axis=0) + 0.1 * rng.standard_normal((24, 8))
    a = ad.AnnData(rng.poisson(1.0, (n_obs, 24)).astype(np.float32))
    a.var_names = [f"G{i}" for i in range(24)]
    a.varm["X_genept"] = E.astype(np.float32)
    return a


def test_gene_programs_duplicate_raw_names():
    a = _programs_adata()
    names = list(a.var_names)
    names[3] = names[4]
    a.var_names = names
    a.raw = a
    with pytest.raises(ValueError, match=r"duplicate.*G4.*var_names_make_unique"):
        gene_programs(a, threshold=0.8, use_raw=True)
    assert "genept_program" not in a.var


def test_gene_programs_sparse_varm():
    a = _programs_adata()
    a.varm["X_genept"] = sparse.csr_matrix(a.varm["X_genept"])
    with pytest.raises(TypeError, match=r"sparse.*toarray"):
        gene_programs(a, threshold=0.8)
    with pytest.raises(TypeError, match=r"sparse.*toarray"):  # the benchmarks' reader too
        gpt.bm.as_embedding_frame(a)


# -- item 7 and 16: gene_programs on bad varm and arguments ---------------------------


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_gene_programs_non_finite_varm(bad):
    a = _programs_adata()
    a.varm["X_genept"][5, 2] = bad
    with pytest.raises(ValueError, match=r"G5.*embed_genes"):
        gene_programs(a)
    assert "genept_program" not in a.var
    with pytest.raises(ValueError, match=r"G5.*embed_genes"):
        gpt.bm.as_embedding_frame(a)


@pytest.mark.parametrize(
    ("kw", "msg"),
    [({"threshold": np.nan}, "threshold"), ({"threshold": 0.8, "resolution": -1.0}, "resolution"),
     ({"threshold": 0.8, "resolution": np.nan}, "resolution"), ({"quantile": np.nan}, "quantile")],
)
def test_gene_programs_bad_numbers(kw, msg):
    a = _programs_adata()
    with pytest.raises(ValueError, match=msg):
        gene_programs(a, **kw)


def test_gene_programs_warns_on_scaled_x():
    a = _programs_adata()
    a.layers["counts"] = a.X.copy()
    a.X = (a.X - a.X.mean(0)) / (a.X.std(0) + 1e-6)
    with pytest.warns(UserWarning, match=r"negative.*use_raw.*layer"):
        gene_programs(a, threshold=0.8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gene_programs(a, threshold=0.8, layer="counts")


def test_block_rows_zero_refused():
    from genept.tl._gene_programs import similarity_edges

    E = np.eye(4, dtype=np.float32)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="block_rows"):
            similarity_edges(E, 0.5, block_rows=bad)
        with pytest.raises(ValueError, match="block_rows"):
            program_scores(np.ones((3, 4)), [np.arange(4)], block_rows=bad)


def test_program_scores_dask_in_bounded_blocks(monkeypatch):
    import dask.array as da

    rng = np.random.default_rng(0)
    X = rng.poisson(1.0, (95, 24)).astype(np.float32)
    members = [np.arange(0, 12), np.arange(12, 24)]
    ref = np.stack([X[:, m].mean(1) for m in members], axis=1)
    Xd = da.from_array(X, chunks=(10, 24))
    orig = da.Array.compute

    def guarded(self, *args, **kw):
        assert self.shape[0] <= 20, f"computed {self.shape[0]} rows at once"
        return orig(self, *args, **kw)

    monkeypatch.setattr(da.Array, "compute", guarded)
    got = program_scores(Xd, members, block_rows=20)
    np.testing.assert_allclose(got, ref, rtol=1e-6)


# -- item 5: a replaced local archive -------------------------------------------------


def test_replaced_local_archive_is_reconverted(tmp_path):
    from genept.datasets._genept_zenodo import ZIP_NAME

    def make(path, genes):
        rng = np.random.default_rng(len(genes))
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("GenePT_gene_embedding_ada_text.pickle",
                        pickle.dumps({g: rng.standard_normal(4).tolist() for g in genes}))

    zpath = tmp_path / ZIP_NAME
    cache = tmp_path / "cache"
    make(zpath, ["A", "B"])
    first = gpt.datasets.genept_embeddings(url=str(zpath), cache_dir=cache, progress=False)
    assert first.genes.tolist() == ["A", "B"]
    make(zpath, ["C", "D", "E"])
    st = zpath.stat()
    os.utime(zpath, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    second = gpt.datasets.genept_embeddings(url=str(zpath), cache_dir=cache, progress=False)
    assert second.genes.tolist() == ["C", "D", "E"]
    assert len(list(cache.glob("genept_ada-002_*.genes.npy"))) == 1  # the stale one removed
    # unchanged: read from the converted files
    t = time.perf_counter()
    third = gpt.datasets.genept_embeddings(url=str(zpath), cache_dir=cache, progress=False)
    assert third.genes.tolist() == ["C", "D", "E"] and time.perf_counter() - t < 5


# -- item 20 --------------------------------------------------------------------------


def test_card_text_symbols_alone():
    t = gpt.datasets.card_text(["CD3E", "NOT_A_GENE"], level="name_full")
    assert t["CD3E"] == "CD3E (CD3 epsilon subunit of T-cell receptor complex)"
    assert t.isna()["NOT_A_GENE"]
    assert gpt.datasets.card_text("CD3E").iloc[0].startswith("Gene CD3E (")
    with pytest.raises(TypeError, match="gene_cards"):
        gpt.datasets.card_text(42)
