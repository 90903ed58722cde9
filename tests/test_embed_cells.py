"""gpt.tl.embed_cells: GenePT-w and GenePT-s on AnnData (numerics are tested in
test_weighted.py and test_cell_sentences.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from anndata import AnnData, read_h5ad
from scipy import sparse

import genept as gpt
from genept.encoders import TextEncoder


class BagEncoder(TextEncoder):
    """Fake encoder: a bag-of-words count vector over a fixed vocabulary (order-free)."""

    cache_id = "bag:v1"

    def __init__(self, vocab):
        self.vocab = {w: i for i, w in enumerate(vocab)}
        self.dim = len(vocab) + 1
        self.seen: list[str] = []

    def _encode(self, texts):
        self.seen += texts
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for r, t in enumerate(texts):
            for w in t.split():
                out[r, self.vocab.get(w, self.dim - 1)] += 1
        return out


def toy(n_obs=30, n_vars=12, seed=0, fmt="csr"):
    rng = np.random.default_rng(seed)
    X = sparse.random(
        n_obs,
        n_vars,
        density=0.4,
        random_state=seed,
        format="csr",
        data_rvs=lambda k: rng.uniform(0.1, 3, k),
    ).astype(np.float32)
    X = X.tocsr()
    X[3] = 0  # an empty cell
    X.eliminate_zeros()
    names = [f"G{i}" for i in range(n_vars)]
    adata = AnnData(X if fmt == "csr" else X.toarray(), var=pd.DataFrame(index=names))
    E = rng.standard_normal((n_vars, 5)).astype(np.float32)
    E[2] = 0  # a gene without embedding
    adata.varm["X_genept"] = E
    adata.uns["genept"] = {"params": {"source": "test", "model": "none"}}
    return adata


def ref_whiten(E, shrink=0.1):
    """Whitening of the embedded genes' vectors by SVD (independent of the eigh in genept)."""
    E = np.asarray(E, dtype=np.float64)
    used = np.abs(E).sum(1) > 0
    G = E[used] - E[used].mean(0)
    _, S, Vt = np.linalg.svd(G, full_matrices=False)
    var = np.zeros(E.shape[1])
    var[: S.size] = S**2 / (used.sum() - 1)
    V = np.zeros((E.shape[1], E.shape[1]))
    V[:, : Vt.shape[0]] = Vt.T
    if Vt.shape[0] < E.shape[1]:  # complete the basis (zero variance directions)
        q, _ = np.linalg.qr(np.hstack([Vt.T, np.eye(E.shape[1])]))
        V = q[:, : E.shape[1]]
    out = np.zeros_like(E)
    out[used] = G @ V @ np.diag((var + shrink * var.mean()) ** -0.5) @ V.T
    return out


def reference_w(X, E, whiten=0.1):
    X = X.toarray() if sparse.issparse(X) else np.asarray(X)
    if whiten:
        E = ref_whiten(E, whiten)
    P = X.astype(np.float64) @ E.astype(np.float64)
    n = np.linalg.norm(P, axis=1, keepdims=True)
    return np.where(n > 0, P / np.where(n > 0, n, 1), 0)


@pytest.mark.parametrize("fmt", ["csr", "dense"])
def test_w_matches_dense_reference(fmt):
    adata = toy(fmt=fmt)
    gpt.tl.embed_cells(adata, method="w")
    ref = reference_w(adata.X, adata.varm["X_genept"])
    emb = adata.obsm["X_genept_w"]
    assert emb.dtype == np.float32 and emb.shape == (30, 5)
    np.testing.assert_allclose(emb, ref, atol=1e-5)
    assert adata.obs["genept_w_empty"].tolist()[3] is True
    assert adata.obs["genept_w_empty"].sum() == 1
    assert not np.isnan(emb).any()
    p = adata.uns["genept_w"]["params"]
    assert p["n_cells_empty"] == 1 and p["dim"] == 5 and p["n_genes_embedded"] == 11


def test_w_notebook_form():
    adata = toy()
    gpt.tl.embed_cells(adata, method="w", normalize="notebook", key_added="X_nb")
    X = adata.X.toarray().astype(np.float64)
    np.testing.assert_allclose(
        adata.obsm["X_nb"],
        X @ ref_whiten(adata.varm["X_genept"]) / X.shape[1],
        rtol=1e-4,
        atol=1e-5,
    )
    gpt.tl.embed_cells(adata, method="w", normalize="notebook", whiten=False, key_added="X_p")
    np.testing.assert_allclose(
        adata.obsm["X_p"], X @ adata.varm["X_genept"] / X.shape[1], rtol=1e-5, atol=1e-6
    )
    assert "nb" in adata.uns and "nb_empty" in adata.obs


def test_w_use_raw_aligns_genes():
    adata = toy()
    raw = adata.copy()
    adata = adata[:, 2:].copy()  # var lacks G0, G1: their raw expression has no embedding
    adata.raw = raw
    gpt.tl.embed_cells(adata, method="w", use_raw=True)
    E = np.zeros((12, 5), dtype=np.float32)
    E[2:] = adata.varm["X_genept"]
    np.testing.assert_allclose(adata.obsm["X_genept_w"], reference_w(raw.X, E), atol=1e-5)


def test_w_missing_gene_embeddings_error():
    adata = toy()
    del adata.varm["X_genept"]
    with pytest.raises(KeyError, match=r"gpt.tl.embed_genes\(adata\)"):
        gpt.tl.embed_cells(adata, method="w")
    assert "X_genept_w" not in adata.obsm


def test_negative_values_error_leaves_adata_untouched():
    adata = sc.datasets.pbmc68k_reduced()  # X is scaled: negative values
    adata.varm["X_genept"] = np.ones((adata.n_vars, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="negative"):
        gpt.tl.embed_cells(adata, method="w")
    assert "X_genept_w" not in adata.obsm and "genept_w" not in adata.uns
    assert "genept_w_empty" not in adata.obs


def test_nan_error():
    adata = toy(fmt="dense")
    adata.X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gpt.tl.embed_cells(adata, method="w")


def test_counts_warning():
    adata = toy(fmt="dense")
    adata.X = np.round(adata.X * 40)
    with pytest.warns(UserWarning, match="raw integer counts"):
        gpt.tl.embed_cells(adata, method="w")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gpt.tl.embed_cells(adata, method="w", allow_counts=True)


def test_bad_method():
    with pytest.raises(ValueError, match="method must be"):
        gpt.tl.embed_cells(toy(), method="x")


def test_s_embeds_sentences():
    adata = toy(n_vars=6)
    enc = BagEncoder([f"G{i}" for i in range(6)])
    gpt.tl.embed_cells(adata, method="s", prefix="", model=enc)
    emb = adata.obsm["X_genept_s"]
    assert emb.shape == (30, 7) and emb.dtype == np.float32
    X = adata.X.toarray()
    # bag of words of the sentence = indicator of expressed genes, L2-normalised
    ind = (X > 0).astype(np.float64)
    n = np.linalg.norm(ind, axis=1, keepdims=True)
    ref = np.hstack([np.where(n > 0, ind / np.where(n > 0, n, 1), 0), np.zeros((30, 1))])
    np.testing.assert_allclose(emb, ref, atol=1e-6)
    empty = X.sum(1) == 0
    assert adata.obs["genept_s_empty"].tolist() == empty.tolist()
    assert "" not in enc.seen and len(enc.seen) <= (~empty).sum()  # empty cells not sent
    # the first sentence is the genes of cell 0 by descending expression
    order = np.argsort(-X[0], kind="stable")
    expected = " ".join(f"G{j}" for j in order if X[0, j] > 0)
    assert expected in enc.seen
    p = adata.uns["genept_s"]["params"]
    assert p["method"] == "s" and p["n_cells_empty"] == empty.sum()


def test_s_hashed_names():
    adata = toy(n_vars=6)
    enc = BagEncoder([])
    gpt.tl.embed_cells(adata, method="s", prefix="", model=enc, hash_names=True, n_genes=2)
    import hashlib

    h = {hashlib.sha256(f"G{i}".encode()).hexdigest()[:10] for i in range(6)}
    words = {w for s in enc.seen for w in s.split()}
    assert words <= h
    assert all(len(s.split()) <= 2 for s in enc.seen)


def test_h5ad_round_trip_and_neighbors(tmp_path):
    adata = toy(n_obs=40)
    gpt.tl.embed_cells(adata, method="w")
    sc.pp.neighbors(adata, use_rep="X_genept_w", n_neighbors=5)
    sc.tl.umap(adata)
    assert adata.obsm["X_umap"].shape == (40, 2)
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = read_h5ad(tmp_path / "a.h5ad")
    np.testing.assert_array_equal(back.obsm["X_genept_w"], adata.obsm["X_genept_w"])
    assert back.uns["genept_w"]["params"] == adata.uns["genept_w"]["params"]
    assert back.obs["genept_w_empty"].tolist() == adata.obs["genept_w_empty"].tolist()


def test_copy():
    adata = toy()
    out = gpt.tl.embed_cells(adata, method="w", copy=True)
    assert "X_genept_w" in out.obsm and "X_genept_w" not in adata.obsm


def test_pbmc68k_knn_quality(minilm):
    """Real end-to-end: gene cards + MiniLM, GenePT-w on raw; 10-NN beats chance by far."""
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import KNeighborsClassifier

    adata = sc.datasets.pbmc68k_reduced()
    gpt.tl.embed_genes(adata, model=minilm)
    gpt.tl.embed_cells(adata, method="w", use_raw=True)
    y = adata.obs["bulk_labels"].astype(str).to_numpy()
    tr, te = train_test_split(np.arange(adata.n_obs), test_size=0.2, stratify=y, random_state=0)
    Z = adata.obsm["X_genept_w"]
    knn = KNeighborsClassifier(10, metric="cosine").fit(Z[tr], y[tr])
    acc = (knn.predict(Z[te]) == y[te]).mean()
    assert acc > 0.6  # 10 classes; majority class is ~0.2


@pytest.mark.parametrize("out", ["numpy", "dask"])
def test_w_dask_backed_x(out):
    da = pytest.importorskip("dask.array")
    adata = toy(n_obs=50)
    ref = reference_w(adata.X, adata.varm["X_genept"])
    adata.X = da.from_array(adata.X.toarray(), chunks=(16, -1))
    gpt.tl.embed_cells(adata, method="w", out=out)
    emb = adata.obsm["X_genept_w"]
    assert (type(emb).__module__.startswith("dask")) == (out == "dask")
    np.testing.assert_allclose(np.asarray(emb), ref, atol=1e-5)


def test_w_backed_h5ad(tmp_path):
    adata = toy(n_obs=50)
    ref = reference_w(adata.X, adata.varm["X_genept"])
    adata.write_h5ad(tmp_path / "b.h5ad")
    backed = read_h5ad(tmp_path / "b.h5ad", backed="r")
    gpt.tl.embed_cells(backed, method="w", block_rows=7)
    np.testing.assert_allclose(backed.obsm["X_genept_w"], ref, atol=1e-5)
    assert backed.obs["genept_w_empty"].sum() == 1


def test_s_dask_equals_in_memory():
    da = pytest.importorskip("dask.array")
    adata = toy(n_vars=6)
    enc = BagEncoder([f"G{i}" for i in range(6)])
    gpt.tl.embed_cells(adata, method="s", prefix="", model=enc)
    lazy = adata.copy()
    lazy.X = da.from_array(adata.X.toarray(), chunks=(8, -1))
    gpt.tl.embed_cells(lazy, method="s", prefix="", model=enc)
    np.testing.assert_array_equal(lazy.obsm["X_genept_s"], adata.obsm["X_genept_s"])


@pytest.fixture
def chunk_calls(monkeypatch):
    """Rows of every GenePT-w dask chunk call, seen by wrapping the adapter's chunk function."""
    import threading

    from genept._kernels.weighted import _dask as dask_mod

    calls: list[int] = []
    lock = threading.Lock()
    real = dask_mod._dask_chunk

    def spy(block, *args):
        with lock:
            calls.append(int(block.shape[0]))
        return real(block, *args)

    monkeypatch.setattr(dask_mod, "_dask_chunk", spy)
    return calls


def test_w_dask_out_dask_runs_kernel_once_per_chunk(chunk_calls):
    """Regression (issue 10): embed_cells computed the kernel inside the call for the
    empty flag (7 calls for 7 chunks) and again on each access (14 after one compute)."""
    da = pytest.importorskip("dask.array")
    import dask

    adata = toy(n_obs=70)
    ref = reference_w(adata.X, adata.varm["X_genept"])
    adata.X = da.from_array(adata.X.toarray(), chunks=(10, -1))  # 7 row chunks
    with dask.config.set(scheduler="synchronous"):
        gpt.tl.embed_cells(adata, method="w", out="dask")
        assert chunk_calls == []  # nothing computed by the call
        emb = adata.obsm["X_genept_w"]
        assert type(emb).__module__.startswith("dask")
        assert "genept_w_empty" not in adata.obs  # would need a pass over X
        got = emb.compute()
        assert chunk_calls == [10] * 7  # exactly one kernel call per chunk
        _ = adata.obsm["X_genept_w"]  # accessing the stored array computes nothing
        assert len(chunk_calls) == 7
    np.testing.assert_allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize("fmt", ["csr", "dense", "csc"])
def test_w_out_dask_lazy_for_in_memory_input(chunk_calls, fmt):
    """Regression (issue 10): out='dask' on in-memory input was computed eagerly."""
    pytest.importorskip("dask.array")
    import dask

    adata = toy(n_obs=50, fmt="dense" if fmt == "dense" else "csr")
    if fmt == "csc":
        adata.X = sparse.csc_matrix(adata.X)
    ref = reference_w(adata.X, adata.varm["X_genept"])
    with dask.config.set(scheduler="synchronous"):
        gpt.tl.embed_cells(adata, method="w", out="dask", block_rows=16)
        assert chunk_calls == []
        emb = adata.obsm["X_genept_w"]
        assert type(emb).__module__.startswith("dask")
        assert emb.chunks[0] == (16, 16, 16, 2)
        np.testing.assert_allclose(emb.compute(), ref, atol=1e-5)
    assert sorted(chunk_calls) == [2, 16, 16, 16]  # one call per chunk


class BudgetBagEncoder(BagEncoder):
    """BagEncoder that reads at most ``max_tokens`` tokens: one per word, plus [CLS]/[SEP]."""

    cache_id = "bag-budget:v1"
    max_tokens = 5

    def count_tokens(self, texts):
        return np.array([len(t.split()) + 2 for t in texts], dtype=np.int64)


def _unit(v):
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def test_s_windows_split_the_ranked_genes_and_pool_them():
    """windows=k: consecutive budget-sized sentences of the ranked genes, pooled by decay."""
    adata = toy(n_obs=20, n_vars=8, seed=3)
    vocab = [f"G{i}" for i in range(8)]
    one = BudgetBagEncoder(vocab)
    gpt.tl.embed_cells(adata, method="s", prefix="", model=one, key_added="X_one", cache=False)
    assert all(len(s.split()) <= 3 for s in one.seen)  # budget: 5 tokens - [CLS] - [SEP]
    enc = BudgetBagEncoder(vocab)
    gpt.tl.embed_cells(
        adata,
        method="s",
        prefix="",
        model=enc,
        windows=3,
        window_decay=0.5,
        key_added="X_win",
        cache=False,
    )
    X = adata.X.toarray()
    for i in range(adata.n_obs):
        order = [j for j in np.argsort(-X[i], kind="stable") if X[i, j] > 0]
        wins = [order[k : k + 3] for k in range(0, min(len(order), 9), 3)]
        ref = np.zeros(9)
        for r, w in enumerate(wins):
            bag = np.zeros(9)
            bag[w] = 1
            ref += 0.5**r * _unit(bag)
        np.testing.assert_allclose(adata.obsm["X_win"][i], _unit(ref), atol=1e-6)
    # window 0 is the single sentence: with one window the two runs agree
    gpt.tl.embed_cells(
        adata,
        method="s",
        prefix="",
        model=BudgetBagEncoder(vocab),
        windows=1,
        key_added="X_w1",
        cache=False,
    )
    np.testing.assert_allclose(adata.obsm["X_w1"], adata.obsm["X_one"], atol=1e-7)
    p = adata.uns["win"]["params"]
    assert p["windows"] == 3 and p["mean_genes_per_sentence"] <= 3
    assert p["mean_genes_per_cell"] == pytest.approx(
        np.mean([min((X[i] > 0).sum(), 9) for i in range(20) if (X[i] > 0).any()])
    )
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="windows must be a positive integer"):
            gpt.tl.embed_cells(adata, method="s", prefix="", model=enc, windows=bad)
    with pytest.raises(ValueError, match="window_decay"):
        gpt.tl.embed_cells(adata, method="s", prefix="", model=enc, windows=2, window_decay=0)


def test_w_mask_var_defaults_to_highly_variable():
    """GenePT-w averages over var['highly_variable'] when present, like sc.pp.pca."""
    adata = toy()
    hv = np.zeros(12, bool)
    hv[[0, 4, 5, 7, 9]] = True
    adata.var["highly_variable"] = hv
    gpt.tl.embed_cells(adata, method="w")
    E = adata.varm["X_genept"] * hv[:, None]
    np.testing.assert_allclose(adata.obsm["X_genept_w"], reference_w(adata.X, E), atol=1e-5)
    assert adata.uns["genept_w"]["params"]["mask_var"] == "highly_variable"
    assert adata.uns["genept_w"]["params"]["n_genes_embedded"] == 5
    gpt.tl.embed_cells(adata, method="w", mask_var=False, key_added="X_all")
    np.testing.assert_allclose(
        adata.obsm["X_all"], reference_w(adata.X, adata.varm["X_genept"]), atol=1e-5
    )
    assert adata.uns["all"]["params"]["mask_var"] == "all genes"
    own = ~hv
    gpt.tl.embed_cells(adata, method="w", mask_var=own, key_added="X_own")
    np.testing.assert_allclose(
        adata.obsm["X_own"],
        reference_w(adata.X, adata.varm["X_genept"] * own[:, None]),
        atol=1e-5,
    )
    with pytest.raises(KeyError, match=r"not a column of adata\.var"):
        gpt.tl.embed_cells(adata, method="w", mask_var="nope")
    with pytest.raises(ValueError, match="selects no gene"):
        gpt.tl.embed_cells(adata, method="w", mask_var=np.zeros(12, bool))
    with pytest.raises(ValueError, match="boolean array of length 12"):
        gpt.tl.embed_cells(adata, method="w", mask_var=np.ones(3, bool))


def test_w_mask_var_with_raw_matches_by_name():
    adata = toy()
    raw = adata.copy()
    adata = adata[:, 2:].copy()
    adata.raw = raw
    hv = np.zeros(10, bool)
    hv[[0, 3, 5, 6]] = True  # G2 (no embedding), G5, G7, G8
    adata.var["highly_variable"] = hv
    gpt.tl.embed_cells(adata, method="w", use_raw=True)
    E = np.zeros((12, 5), dtype=np.float32)
    E[[2, 5, 7, 8]] = adata.varm["X_genept"][[0, 3, 5, 6]]
    np.testing.assert_allclose(adata.obsm["X_genept_w"], reference_w(raw.X, E), atol=1e-5)


def test_w_whiten_option():
    """whiten=False is the paper's plain average; the default whitens (shrinkage 0.1)."""
    adata = toy()
    E = adata.varm["X_genept"]
    gpt.tl.embed_cells(adata, method="w", whiten=False, key_added="X_plain")
    np.testing.assert_allclose(
        adata.obsm["X_plain"], reference_w(adata.X, E, whiten=False), atol=1e-5
    )
    assert adata.uns["plain"]["params"]["whiten"] == 0.0
    gpt.tl.embed_cells(adata, method="w", whiten=0.5, key_added="X_w5")
    np.testing.assert_allclose(adata.obsm["X_w5"], reference_w(adata.X, E, whiten=0.5), atol=1e-5)
    assert adata.uns["w5"]["params"]["whiten"] == 0.5
    for bad in (-1, float("nan"), "yes"):
        with pytest.raises(ValueError, match="whiten must be"):
            gpt.tl.embed_cells(adata, method="w", whiten=bad)


def test_whitening_removes_the_shared_direction():
    """Gene vectors sharing one big common direction: after whitening, the covariance of
    the embedded genes' vectors is (close to) isotropic, and unembedded genes stay zero."""
    from genept.tl._embed_cells import whiten_gene_embeddings

    rng = np.random.default_rng(1)
    E = (rng.normal(size=(300, 6)) + rng.normal(size=(300, 1)) * 20 + 7).astype(np.float32)
    E[:5] = 0
    W = whiten_gene_embeddings(E, 0.0)
    assert not W[:5].any()
    np.testing.assert_allclose(np.cov(W[5:].T), np.eye(6), atol=1e-3)
    np.testing.assert_allclose(W[5:].mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(whiten_gene_embeddings(E, 0.1), ref_whiten(E, 0.1), atol=1e-4)


def test_s_mask_var_and_default_n_genes():
    """GenePT-s writes only var['highly_variable'] genes when present, at most S_N_GENES."""
    from genept.tl._embed_cells import S_N_GENES

    rng = np.random.default_rng(5)
    n_vars = S_N_GENES + 20
    X = rng.uniform(1, 10, size=(12, n_vars)).astype(np.float32)  # every gene, no ties
    adata = AnnData(sparse.csr_matrix(np.log1p(X)))
    adata.var_names = [f"G{i}" for i in range(n_vars)]
    vocab = list(adata.var_names)
    # no mask: the top S_N_GENES genes of each cell, by descending expression
    enc = BagEncoder(vocab)
    gpt.tl.embed_cells(adata, method="s", model=enc, cache=False)
    assert adata.uns["genept_s"]["params"]["mask_var"] == "all genes"
    assert adata.uns["genept_s"]["params"]["prefix"] == gpt.pp.PAPER_PREFIX
    assert all(t.startswith(gpt.pp.PAPER_PREFIX) for t in enc.seen)
    assert adata.uns["genept_s"]["params"]["n_genes"] == S_N_GENES
    for i in range(adata.n_obs):
        order = np.argsort(-adata.X[i].toarray().ravel(), kind="stable")[:S_N_GENES]
        bag = np.zeros(len(vocab) + 1)
        bag[order] = 1
        bag[-1] = len(gpt.pp.PAPER_PREFIX.split())  # the prefix's words: out of vocabulary
        np.testing.assert_allclose(adata.obsm["X_genept_s"][i], _unit(bag), atol=1e-6)
    # highly variable genes: only those are written, in the same order
    hv = np.zeros(n_vars, bool)
    hv[::3] = True
    adata.var["highly_variable"] = hv
    enc = BagEncoder(vocab)
    gpt.tl.embed_cells(
        adata, method="s", prefix="", model=enc, n_genes=None, key_added="X_hv", cache=False
    )
    assert adata.uns["hv"]["params"]["mask_var"] == "highly_variable"
    words = {w for s in enc.seen for w in s.split()}
    assert words == {f"G{i}" for i in np.flatnonzero(hv)}
    for i in range(adata.n_obs):
        x = adata.X[i].toarray().ravel()
        order = [j for j in np.argsort(-x, kind="stable") if hv[j]]
        assert " ".join(f"G{j}" for j in order) in enc.seen
    # mask_var=False (GenePT): every gene again
    enc = BagEncoder(vocab)
    gpt.tl.embed_cells(
        adata,
        method="s",
        prefix="",
        model=enc,
        mask_var=False,
        n_genes=None,
        key_added="X_all",
        cache=False,
    )
    assert {w for s in enc.seen for w in s.split()} == set(vocab)
    with pytest.raises(ValueError, match="n_genes must be"):
        gpt.tl.embed_cells(adata, method="s", prefix="", model=enc, n_genes="all")
    with pytest.raises(KeyError, match="not a column of adata"):
        gpt.tl.embed_cells(adata, method="s", prefix="", model=enc, mask_var="nope")
