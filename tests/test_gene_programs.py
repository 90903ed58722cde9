"""gpt.tl.gene_programs: planted programs, blocked graph, defaults, scores, h5ad."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from genept.tl._gene_programs import (
    DEFAULT_QUANTILE,
    gene_programs,
    leiden_programs,
    program_scores,
    similarity_edges,
    similarity_quantile,
)

K, SIZE, DIM, NOISE_GENES = 5, 14, 24, 20


def _planted(seed=0, n_obs=60, fmt="dense"):
    """Five tight programs of 14 genes (orthogonal centres) plus 20 scattered genes."""
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.standard_normal((DIM, DIM)))[0][:K] * 3
    E = np.repeat(centres, SIZE, axis=0) + 0.15 * rng.standard_normal((K * SIZE, DIM))
    E = np.vstack([E, rng.standard_normal((NOISE_GENES, DIM))]).astype(np.float32)
    n = E.shape[0]
    perm = rng.permutation(n)  # programs are not contiguous in var
    E = E[perm]
    truth = np.concatenate([np.repeat(np.arange(K), SIZE), np.full(NOISE_GENES, -1)])[perm]
    X = rng.poisson(0.7, (n_obs, n)).astype(np.float32)
    X = {"dense": X, "csr": sparse.csr_matrix(X), "csc": sparse.csc_matrix(X)}[fmt]
    a = ad.AnnData(X)
    a.var_names = [f"G{i}" for i in range(n)]
    a.obs_names = [f"c{i}" for i in range(n_obs)]
    a.varm["X_genept"] = E
    return a, truth


def _partition(labels):
    return {frozenset(np.flatnonzero(labels == k)) for k in np.unique(labels) if k >= 0}


@pytest.mark.parametrize("fmt", ["dense", "csr", "csc"])
def test_planted_programs_recovered_exactly(fmt):
    a, truth = _planted(fmt=fmt)
    gene_programs(a, threshold=0.8)
    lab = a.var["genept_program"]
    assert isinstance(lab.dtype, pd.CategoricalDtype)
    got = {frozenset(np.flatnonzero((lab == c).to_numpy())) for c in lab.cat.categories}
    assert got == _partition(truth)
    assert lab.isna().sum() == NOISE_GENES
    p = a.uns["genept_programs"]["params"]
    assert p["threshold"] == 0.8 and p["threshold_source"] == "given" and p["n_programs"] == K
    assert set(a.uns["genept_programs"]["members"]) == set(lab.cat.categories)


def test_blocked_graph_equals_dense_reference():
    rng = np.random.default_rng(1)
    E = rng.standard_normal((333, 12)).astype(np.float32)
    En = E / np.linalg.norm(E, axis=1, keepdims=True)
    S = En @ En.T
    ri, rj = np.nonzero(np.triu(S, 1) > 0.45)
    for block in (1, 7, 100, 1000):
        i, j, v = similarity_edges(E, 0.45, block_rows=block)
        np.testing.assert_array_equal(i, ri)
        np.testing.assert_array_equal(j, rj)
        np.testing.assert_allclose(v, S[ri, rj], rtol=1e-5)
    # top-k cap: union of each gene's k best partners above the threshold
    k = 3
    Sd = S.copy()
    np.fill_diagonal(Sd, -np.inf)
    ref = set()
    for r in range(len(E)):
        for c in np.argsort(-Sd[r])[:k]:
            if Sd[r, c] > 0.45:
                ref.add((min(r, c), max(r, c)))
    i, j, _ = similarity_edges(E, 0.45, n_neighbors=k, block_rows=50)
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == ref


def test_quantile_default_recorded_and_exact():
    a, _ = _planted()
    gene_programs(a, min_size=3)
    p = a.uns["genept_programs"]["params"]
    assert p["quantile"] == DEFAULT_QUANTILE
    assert p["threshold_source"].startswith("quantile")
    E = a.varm["X_genept"] / np.linalg.norm(a.varm["X_genept"], axis=1, keepdims=True)
    S = E @ E.T
    ref = np.quantile(S[np.triu_indices(a.n_vars, 1)], DEFAULT_QUANTILE)
    assert p["threshold"] == pytest.approx(ref, rel=1e-5)
    assert p["n_edges"] == int((np.triu(S, 1) > p["threshold"]).sum())
    with pytest.raises(ValueError, match="either"):
        gene_programs(a, threshold=0.5, quantile=0.9)


def test_paper_threshold_for_ada002():
    a, _ = _planted()
    a.uns["genept"] = {"params": {"model": "ada-002"}}
    gene_programs(a)
    p = a.uns["genept_programs"]["params"]
    assert p["threshold"] == 0.9 and "ada-002" in p["threshold_source"]


def test_quantile_estimate_on_sample_close():
    rng = np.random.default_rng(2)
    E = rng.standard_normal((900, 16))
    exact = similarity_quantile(E, 0.99, max_genes=5000)
    est = similarity_quantile(E, 0.99, max_genes=400)
    assert est == pytest.approx(exact, abs=0.03)


def test_scores_equal_dense_mean_and_h5ad_roundtrip(tmp_path):
    a, _ = _planted(fmt="csr")
    a.layers["counts"] = a.X.copy() * 2
    gene_programs(a, threshold=0.8)
    sc_ = a.obsm["genept_program_scores"]
    assert isinstance(sc_, pd.DataFrame)
    assert list(sc_.index) == list(a.obs_names)
    dense = a.X.toarray()
    for name, genes in a.uns["genept_programs"]["members"].items():
        idx = a.var_names.get_indexer(genes)
        np.testing.assert_allclose(sc_[name].to_numpy(), dense[:, idx].mean(axis=1), rtol=1e-6)
    b = gene_programs(a, threshold=0.8, layer="counts", copy=True, key_added="gp")
    np.testing.assert_allclose(b.obsm["gp_scores"].to_numpy(), 2 * sc_.to_numpy(), rtol=1e-6)
    assert "gp_scores" not in a.obsm
    path = tmp_path / "a.h5ad"
    a.write_h5ad(path)
    r = ad.read_h5ad(path)
    pd.testing.assert_frame_equal(r.obsm["genept_program_scores"], sc_, check_index_type=False)
    assert r.var["genept_program"].equals(a.var["genept_program"])
    assert (
        list(r.uns["genept_programs"]["members"]["GP0"])
        == a.uns["genept_programs"]["members"]["GP0"]
    )


def test_program_scores_blocks_and_raw():
    rng = np.random.default_rng(3)
    X = sparse.random(37, 20, density=0.3, random_state=3, format="csr")
    members = [np.array([0, 3, 5]), np.array([7, 19])]
    ref = np.stack([X.toarray()[:, m].mean(axis=1) for m in members], axis=1)
    np.testing.assert_allclose(program_scores(X, members, block_rows=5), ref)
    np.testing.assert_allclose(program_scores(X.toarray(), members, block_rows=5), ref)
    # use_raw: programs found on var, scored on raw (different gene order/superset)
    a, _ = _planted()
    raw = ad.AnnData(np.hstack([a.X, rng.random((a.n_obs, 3)).astype(np.float32)])[:, ::-1])
    raw.var_names = list(a.var_names.append(pd.Index(["x1", "x2", "x3"])))[::-1]
    a.raw = raw
    gene_programs(a, threshold=0.8, use_raw=True)
    s = a.obsm["genept_program_scores"]
    genes = a.uns["genept_programs"]["members"]["GP1"]
    np.testing.assert_allclose(s["GP1"], a.raw[:, genes].X.mean(axis=1), rtol=1e-6)


def test_gene_selection_and_errors():
    a, truth = _planted()
    a.var["highly_variable"] = truth != 0  # drop program 0
    gene_programs(a, threshold=0.8, genes="highly_variable")
    assert a.uns["genept_programs"]["params"]["n_programs"] == K - 1
    assert a.var["genept_program"][truth == 0].isna().all()
    gene_programs(a, threshold=0.8, genes=list(a.var_names[truth == 1]))
    assert a.uns["genept_programs"]["params"]["n_programs"] == 1
    with pytest.raises(KeyError, match="varm"):
        gene_programs(a, gene_key="X_nope")
    with pytest.raises(KeyError, match=r"not in adata\.var_names"):
        gene_programs(a, genes=["nope"])
    # nothing half-written on error
    b, _ = _planted()
    with pytest.raises(KeyError):
        gene_programs(b, threshold=0.8, layer="missing")
    assert "genept_program" not in b.var and "genept_programs" not in b.uns


def test_leiden_seeded_and_min_size():
    i = np.array([0, 0, 1, 3, 3, 4])
    j = np.array([1, 2, 2, 4, 5, 5])
    lab = leiden_programs(7, i, j, min_size=3, seed=0)
    assert _partition(lab) == {frozenset({0, 1, 2}), frozenset({3, 4, 5})}
    assert lab[6] == -1
    assert (leiden_programs(7, i, j, min_size=4) == -1).all()


def test_gene_key_name():
    """One varm key name (gene_key, as embed_cells); key= still works, with a FutureWarning."""
    a, _ = _planted()
    a.varm["X_mine"] = a.varm["X_genept"]
    new = gene_programs(a, gene_key="X_mine", threshold=0.8, random_state=3, copy=True)
    with pytest.warns(FutureWarning, match="gene_key"):
        old = gene_programs(a, key="X_mine", threshold=0.8, random_state=3, copy=True)
    pd.testing.assert_series_equal(old.var["genept_program"], new.var["genept_program"])
    assert new.uns["genept_programs"]["params"]["gene_key"] == "X_mine"
