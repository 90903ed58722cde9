"""Bad input to the cell-level kernels (GenePT-w, GenePT-s): issue 14, items 2, 8, 11, 16.

Each test fails on the code before the fix (noted per test) and passes after.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from scipy import sparse

import genept as gpt
from genept.encoders import TextEncoder


class WordEncoder(TextEncoder):
    """Fake encoder: one dimension per known word, the last for any other word."""

    cache_id = "words:v1"

    def __init__(self, vocab):
        self.vocab = {w: i for i, w in enumerate(vocab)}
        self.dim = len(vocab) + 1
        self.seen: list[str] = []

    def _encode(self, texts):
        self.seen += list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for r, t in enumerate(texts):
            for w in t.split():
                out[r, self.vocab.get(w, self.dim - 1)] += 1
        return out


def _adata(n_obs=20, n_vars=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.1, 3, (n_obs, n_vars)).astype(np.float32)
    X[rng.random(X.shape) < 0.4] = 0
    adata = AnnData(sparse.csr_matrix(X), var=pd.DataFrame(index=[f"G{i}" for i in range(n_vars)]))
    adata.varm["X_genept"] = rng.standard_normal((n_vars, 4)).astype(np.float32)
    return adata


# ---------------------------------------------------------------- item 8: GenePT-s +inf


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_s_refuses_non_finite_values(value):
    """Before: +inf was accepted and ranked first (only NaN was refused)."""
    adata = _adata()
    X = adata.X.toarray()
    X[2, 1] = value
    adata.X = sparse.csr_matrix(X)
    with pytest.raises(ValueError, match=r"NaN|infinite"):
        gpt.pp.cell_sentences(adata, show_progress=False)
    assert "genept_sentence" not in adata.obs
    with pytest.raises(ValueError, match=r"infinite|NaN"):
        gpt.pp.build_sentences(X, list(adata.var_names), show_progress=False)
    with pytest.raises(ValueError, match=r"infinite|NaN"):
        gpt.pp.rank_genes(X)
    with pytest.raises(ValueError, match=r"infinite|NaN"):
        gpt.tl.embed_cells(adata, method="s", model=WordEncoder(["G0"]), show_progress=False)
    assert "X_genept_s" not in adata.obsm


def test_w_and_s_agree_on_inf():
    """Both methods refuse +inf (GenePT-w did already)."""
    adata = _adata()
    X = adata.X.toarray()
    X[0, 0] = np.inf
    adata.X = X
    for method, kw in [("w", {}), ("s", {"model": WordEncoder(["G0"])})]:
        with pytest.raises(ValueError, match="infinite"):
            gpt.tl.embed_cells(adata, method=method, show_progress=False, **kw)


# ---------------------------------------------------------------- item 11: zero-width varm


def test_zero_width_varm_refused():
    """Before: a (n_vars, 0) varm gave (n_obs, 0) embeddings without a word."""
    adata = _adata()
    adata.varm["X_empty"] = np.zeros((adata.n_vars, 0), dtype=np.float32)
    with pytest.raises(ValueError, match="zero-width"):
        gpt.tl.embed_cells(adata, method="w", gene_key="X_empty", show_progress=False)
    assert "X_genept_w" not in adata.obsm and "genept_w_empty" not in adata.obs
    with pytest.raises(ValueError, match="zero-width"):
        gpt.tl.weighted_embedding(adata.X, np.zeros((adata.n_vars, 0)), device="cpu")


def test_sparse_and_complex_varm_refused():
    adata = _adata()
    E = adata.varm["X_genept"]
    with pytest.raises(ValueError, match="real numbers"):
        gpt.tl.weighted_embedding(adata.X, E.astype(np.complex64), device="cpu")
    with pytest.raises(ValueError, match="sparse"):
        gpt.tl.weighted_embedding(adata.X, sparse.csr_matrix(E), device="cpu")
    # item 15: a sparse varm said "setting an array element with a sequence"
    adata.varm["X_sp"] = sparse.csr_matrix(E)
    with pytest.raises(ValueError, match=r"adata.varm\['X_sp'\] is a sparse matrix"):
        gpt.tl.embed_cells(adata, method="w", gene_key="X_sp", show_progress=False)


def test_duplicate_var_names_with_use_raw_clear_error():
    """Item 15: duplicate var_names with use_raw=True raised pandas' InvalidIndexError."""
    adata = _adata()
    adata.raw = adata.copy()
    adata.var_names = ["G0", "G0", "G2", "G3", "G4", "G5"]
    with pytest.raises(ValueError, match=r"duplicates.*var_names_make_unique"):
        gpt.tl.embed_cells(adata, method="w", use_raw=True, show_progress=False)
    assert "X_genept_w" not in adata.obsm


# ---------------------------------------------------------------- item 16: minor acceptances


def test_batch_size_zero_refused():
    """Before: batch_size=0 silently meant the encoder's default."""
    adata = _adata()
    enc = WordEncoder(["G0"])
    for bad in (0, -3):
        with pytest.raises(ValueError, match="batch_size"):
            gpt.tl.embed_cells(adata, method="s", model=enc, batch_size=bad, show_progress=False)
    assert enc.seen == []  # refused before any work


@pytest.mark.parametrize("bad", [0, -1])
def test_block_rows_not_positive_refused(bad):
    """Before: block_rows=0 meant the default and negative values became 1."""
    adata = _adata()
    with pytest.raises(ValueError, match="block_rows"):
        gpt.tl.embed_cells(adata, method="w", block_rows=bad, show_progress=False)
    with pytest.raises(ValueError, match="block_rows"):
        gpt.tl.weighted_embedding(adata.X, adata.varm["X_genept"], device="cpu", block_rows=bad)
    with pytest.raises(ValueError, match="block_rows"):
        gpt.pp.cell_sentences(adata, block_rows=bad, show_progress=False)
    with pytest.raises(ValueError, match="block_rows"):
        gpt.pp.rank_genes(adata.X, block_rows=bad)
    assert "X_genept_w" not in adata.obsm and "genept_sentence" not in adata.obs


def test_n_jobs_zero_refused():
    """Before: n_jobs=0 silently meant all cores."""
    adata = _adata()
    with pytest.raises(ValueError, match="n_jobs"):
        gpt.tl.weighted_embedding(adata.X, adata.varm["X_genept"], device="cpu", n_jobs=0)


@pytest.mark.parametrize("kind", ["dense", "csr"])
def test_complex_expression_refused(kind):
    """Before: complex X was cast to float (imaginary part dropped, a ComplexWarning)."""
    adata = _adata()
    X = adata.X.toarray().astype(np.complex64) + 1j
    X = sparse.csr_matrix(X) if kind == "csr" else X
    with pytest.raises(ValueError, match="real numbers"):
        gpt.tl.weighted_embedding(X, adata.varm["X_genept"], device="cpu")
    ad2 = AnnData(X, var=adata.var, varm={"X_genept": adata.varm["X_genept"]})
    for method, kw in [("w", {}), ("s", {"model": WordEncoder(["G0"])})]:
        with pytest.raises(ValueError, match="real numbers"):
            gpt.tl.embed_cells(ad2, method=method, show_progress=False, **kw)
    with pytest.raises(ValueError, match="real numbers"):
        gpt.pp.cell_sentences(ad2, show_progress=False)


def test_counts_heuristic_samples_the_whole_matrix():
    """Before: only the first 2,000 rows were looked at; counts after them went unnoticed."""
    rng = np.random.default_rng(0)
    n_obs, n_vars = 6000, 30
    X = rng.poisson(20, (n_obs, n_vars)).astype(np.float32)
    X[:2500] = 0  # e.g. cells sorted by depth: the first 2,500 are empty
    adata = AnnData(sparse.csr_matrix(X), var=pd.DataFrame(index=[f"G{i}" for i in range(n_vars)]))
    adata.varm["X_genept"] = rng.standard_normal((n_vars, 4)).astype(np.float32)
    with pytest.warns(UserWarning, match="raw integer counts"):
        gpt.tl.embed_cells(adata, method="w", show_progress=False)
    # normalised data in the same layout: no warning
    adata.X = sparse.csr_matrix(np.log1p(X / 7))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        gpt.tl.embed_cells(adata, method="w", show_progress=False)


# ---------------------------------------------------------------- item 2: missing symbols


MISSING = [np.nan, None, "NA", "nan", "<NA>", ""]


def _symbols_adata():
    X = np.array([[5, 4, 3, 2, 1, 1, 0.5, 0.2], [1, 2, 3, 4, 5, 6, 7, 8]], dtype=np.float32)
    symbols = ["CD3E", *MISSING, "LYZ"]
    var = pd.DataFrame({"sym": np.array(symbols, dtype=object)}, index=[f"g{i}" for i in range(8)])
    return AnnData(X, var=var)


@pytest.mark.parametrize("hash_names", [False, True])
def test_missing_symbols_never_enter_sentences(hash_names):
    """Before: NaN became the word "nan" and R's "NA" the word "NA" in the sentences."""
    adata = _symbols_adata()
    out = gpt.pp.cell_sentences(
        adata, gene_symbols="sym", hash_names=hash_names, inplace=False, show_progress=False
    )
    words = [s.split() for s in out]
    want = [["CD3E", "LYZ"], ["LYZ", "CD3E"]]
    if hash_names:
        want = [[gpt.pp.hash_gene_name(w) for w in ws] for ws in want]
    assert words == want
    for bad in ("nan", "NA", "None", "<NA>", gpt.pp.hash_gene_name("nan")):
        assert all(bad not in ws for ws in words)


def test_missing_symbols_in_embed_cells_s():
    adata = _symbols_adata()
    enc = WordEncoder(["CD3E", "LYZ"])
    gpt.tl.embed_cells(adata, method="s", model=enc, gene_symbols="sym", show_progress=False)
    assert enc.seen == ["CD3E LYZ", "LYZ CD3E"]
    Z = adata.obsm["X_genept_s"]
    assert np.all(Z[:, -1] == 0)  # no unknown word was written


def test_cell_with_only_missing_symbols_is_empty():
    X = np.array([[0, 3, 0], [1, 0, 0]], dtype=np.float32)
    plan = gpt.pp.sentence_plan(["CD3E", None, "LYZ"])
    assert gpt.pp.build_sentences(X, plan, show_progress=False) == ["", "CD3E"]


def test_sentence_words_marks_missing():
    assert gpt.pp.sentence_words(["A", np.nan, "NA", pd.NA, "B"]).tolist() == ["A", "", "", "", "B"]


# ---------------------------------------------------------------- devices


def test_unavailable_device_one_exception_type():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from genept._core._device import DeviceError

    adata = _adata()
    with pytest.raises(DeviceError, match="no CUDA") as err:
        gpt.tl.embed_cells(adata, method="w", device="cuda", show_progress=False)
    assert isinstance(err.value, ValueError) and isinstance(err.value, RuntimeError)
    with pytest.raises(DeviceError, match="device must be"):
        gpt.tl.weighted_embedding(adata.X, adata.varm["X_genept"], device="gpu")
    assert "X_genept_w" not in adata.obsm
