"""Tests of the GenePT-w numerical core (``gpt.tl.weighted_embedding``, genept._kernels.weighted)."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import sparse

from genept._kernels.weighted import _cpu as cpu_mod
from genept._kernels.weighted._plan import _make_plan
from genept.tl import weighted_embedding

da = pytest.importorskip("dask.array")


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not _cuda(), reason="needs CUDA")


def _data(n=60, g=40, d=12, density=0.2, seed=0, zero_rows=(3, 7), unused_every=4):
    rng = np.random.default_rng(seed)
    X = sparse.random(n, g, density=density, format="csr", dtype=np.float64, random_state=seed)
    X.data = np.log1p(X.data * 10).astype(np.float32)
    X = X.astype(np.float32).tolil()
    for r in zero_rows:
        if r < n:
            X[r, :] = 0
    X = X.tocsr()
    X.eliminate_zeros()
    E = rng.standard_normal((g, d)).astype(np.float32)
    if unused_every:
        E[::unused_every] = 0
    return X, E


@pytest.fixture
def kernels(monkeypatch) -> list:
    """Kinds of CPU kernels that ran, seen by wrapping ``_cpu_block`` (the driver's seam;
    production code keeps no log)."""
    seen: list = []
    real = cpu_mod._cpu_block

    def spy(*args, **kwargs):
        kind = real(*args, **kwargs)
        seen.append(kind)
        return kind

    monkeypatch.setattr(cpu_mod, "_cpu_block", spy)
    return seen


def _cpu(X, E, **kw):
    """The public kernel on the CPU with test defaults."""
    kw = {"block_rows": 300, "n_jobs": 2, "show_progress": False, **kw}
    return weighted_embedding(X, E, device="cpu", **kw)


def _reference(X, E, normalize="l2", n_total=None):
    """Independent dense float64 reference."""
    Xd = X.toarray() if sparse.issparse(X) else np.asarray(X)
    Xd = Xd.astype(np.float64)
    Ed = E.astype(np.float64)
    emb = Xd @ Ed
    used = np.any(Ed != 0, axis=1)
    wsum = Xd[:, used].sum(axis=1)
    if normalize == "l2":
        nrm = np.linalg.norm(emb, axis=1, keepdims=True)
        emb = np.divide(emb, nrm, out=np.zeros_like(emb), where=nrm > 0)
    elif normalize == "notebook":
        emb = emb / (Xd.shape[1] if n_total is None else n_total)
    return emb, wsum


def _tol(X, E, normalize):
    """fp32 accumulation bound: a few ulps of |X| @ |E| (relative to the row norm for l2)."""
    Xd = np.abs(X.toarray() if sparse.issparse(X) else np.asarray(X)).astype(np.float64)
    bound = Xd @ np.abs(E.astype(np.float64))
    k = max(1, Xd.shape[1])
    tol = 4 * k * 2.0**-24 * bound
    if normalize == "l2":
        nrm = np.linalg.norm(Xd @ E.astype(np.float64), axis=1, keepdims=True)
        tol = np.divide(tol, nrm, out=np.zeros_like(tol), where=nrm > 0) + 1e-6
    return tol + 1e-7


def _assert_close(got, X, E, normalize="l2", n_total=None):
    emb, wsum = got
    ref_emb, ref_w = _reference(X, E, normalize, n_total)
    assert isinstance(emb, np.ndarray) and emb.dtype == np.float32
    assert wsum.dtype == np.float64
    assert emb.shape == ref_emb.shape
    assert not np.isnan(emb).any()
    assert np.all(np.abs(emb - ref_emb) <= _tol(X, E, normalize))
    np.testing.assert_allclose(wsum, ref_w, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- containers


def _to_numpy(X):
    return X.toarray()


def _to_csc(X):
    return X.tocsc()


def _to_csr_array(X):
    return sparse.csr_array(X)


def _to_dask_dense(X):
    return da.from_array(X.toarray(), chunks=(17, 13))  # column chunks: must be rechunked


def _to_dask_sparse(X):
    return da.from_array(X, chunks=(23, -1), asarray=False)


CONTAINERS = {
    "numpy": _to_numpy,
    "csr": lambda X: X,
    "csc": _to_csc,
    "csr_array": _to_csr_array,
    "dask_dense": _to_dask_dense,
    "dask_sparse": _to_dask_sparse,
}


@pytest.mark.parametrize("container", list(CONTAINERS))
@pytest.mark.parametrize("normalize", ["l2", "notebook", "none"])
def test_containers_match_reference(container, normalize):
    X, E = _data()
    Xc = CONTAINERS[container](X)
    got = weighted_embedding(Xc, E, normalize=normalize, device="cpu", show_progress=False)
    _assert_close(got, X, E, normalize)


def test_backed_h5ad(tmp_path):
    ad = pytest.importorskip("anndata")
    X, E = _data(n=90)
    for fmt, Xs in {"csr": X, "dense": X.toarray()}.items():
        path = tmp_path / f"x_{fmt}.h5ad"
        ad.AnnData(X=Xs).write_h5ad(path)
        backed = ad.read_h5ad(path, backed="r")
        try:
            got = weighted_embedding(backed.X, E, device="cpu", block_rows=16, show_progress=False)
            _assert_close(got, X, E)
        finally:
            backed.file.close()
    # anndata.experimental / anndata.io sparse_dataset on an h5py group
    import h5py

    try:
        from anndata.io import sparse_dataset
    except ImportError:  # pragma: no cover
        from anndata.experimental import sparse_dataset
    with h5py.File(tmp_path / "x_csr.h5ad", "r") as f:
        got = weighted_embedding(
            sparse_dataset(f["X"]), E, device="cpu", block_rows=32, show_progress=False
        )
    _assert_close(got, X, E)
    with h5py.File(tmp_path / "x_dense.h5ad", "r") as f:
        got = weighted_embedding(f["X"], E, device="cpu", block_rows=7, show_progress=False)
    _assert_close(got, X, E)


def test_bitwise_equal_to_scipy_float32():
    X, E = _data(n=300, g=200, d=40, density=0.05)
    emb, _ = weighted_embedding(X, E, normalize="none", device="cpu", show_progress=False)
    np.testing.assert_array_equal(emb, (X @ E).astype(np.float32))


@pytest.mark.parametrize("force", ["sparse", "dense"])
@pytest.mark.parametrize("density", [0.02, 0.6])
def test_both_kernels_any_density(force, density, monkeypatch, kernels):
    X, E = _data(n=700, g=120, d=50, density=density, seed=3)
    monkeypatch.setattr(cpu_mod, "_dense_threshold", lambda d: 0.0 if force == "dense" else 2.0)
    for Xc in (X, X.toarray()):
        got = _cpu(Xc, E)
        _assert_close(got, X, E)
    assert set(kernels) == {force}


def test_rule_picks_kernel_by_density(kernels):
    for density, expect in [(0.02, "sparse"), (0.9, "dense")]:
        X, E = _data(n=300, g=100, d=256, density=density)
        _cpu(X, E, normalize="none", n_jobs=1)
        assert kernels[-1] == expect


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 40),
    g=st.integers(1, 30),
    d=st.integers(1, 20),
    density=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
    unused=st.sampled_from([0, 2, 1]),
    block_rows=st.sampled_from([None, 1, 7]),
    seed=st.integers(0, 10_000),
)
def test_hypothesis_shapes(n, g, d, density, unused, block_rows, seed):
    X, E = _data(n=n, g=g, d=d, density=density, seed=seed, zero_rows=(0,), unused_every=unused)
    for Xc in (X, X.toarray()):
        got = weighted_embedding(Xc, E, device="cpu", block_rows=block_rows, show_progress=False)
        _assert_close(got, X, E)
    emb, w = got
    assert np.all(emb[w == 0] == 0)
    if n:
        nz = w > 0
        # rows with weight but a zero product can only happen if E cancels; else unit norm
        norms = np.linalg.norm(emb[nz], axis=1)
        assert np.all((np.abs(norms - 1) < 1e-5) | (norms == 0))


def test_zero_rows_and_all_zero():
    X, E = _data()
    emb, w = weighted_embedding(X, E, device="cpu", show_progress=False)
    assert w[3] == 0 and w[7] == 0
    assert np.all(emb[[3, 7]] == 0)
    Z = sparse.csr_matrix(X.shape, dtype=np.float32)
    emb, w = weighted_embedding(Z, E, device="cpu", show_progress=False)
    assert np.all(emb == 0) and np.all(w == 0)
    emb, w = weighted_embedding(X, np.zeros_like(E), device="cpu", show_progress=False)
    assert np.all(emb == 0) and np.all(w == 0)
    # a cell that expresses only genes without embedding: zero, weight 0
    X2 = sparse.csr_matrix(([5.0], ([0], [0])), shape=(1, X.shape[1]), dtype=np.float32)
    emb, w = weighted_embedding(X2, E, device="cpu", show_progress=False)  # E[0] == 0
    assert w[0] == 0 and np.all(emb == 0)


def test_notebook_n_genes_total():
    X, E = _data()
    got = weighted_embedding(
        X, E, normalize="notebook", n_genes_total=1000, device="cpu", show_progress=False
    )
    _assert_close(got, X, E, "notebook", n_total=1000)


def test_dask_lazy_equals_in_memory():
    X, E = _data(n=100)
    # same row blocks -> same kernel choices -> bitwise identical
    ref = weighted_embedding(X, E, device="cpu", block_rows=30, show_progress=False)
    Xd = da.from_array(X, chunks=(30, -1), asarray=False)
    emb, w = weighted_embedding(Xd, E, device="cpu", out="dask")
    assert isinstance(emb, da.Array) and isinstance(w, da.Array)
    assert emb.chunks[0] == Xd.chunks[0]
    e2, w2 = da.compute(emb, w)
    np.testing.assert_array_equal(e2, ref[0])
    np.testing.assert_array_equal(w2, ref[1])
    e3, w3 = weighted_embedding(Xd, E, device="cpu", out="numpy")
    np.testing.assert_array_equal(e3, ref[0])
    np.testing.assert_array_equal(w3, ref[1])


def test_dask_distributed():
    distributed = pytest.importorskip("distributed")
    X, E = _data(n=80)
    ref = weighted_embedding(X, E, device="cpu", block_rows=25, show_progress=False)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        Xd = da.from_array(X.toarray(), chunks=(25, -1))
        emb, w = weighted_embedding(Xd, E, device="cpu")
    np.testing.assert_array_equal(emb, ref[0])
    np.testing.assert_array_equal(w, ref[1])


@pytest.mark.parametrize("container", ["numpy", "csr", "dask_sparse"])
def test_errors_negative_and_nan(container):
    X, E = _data()
    Xn = X.copy()
    Xn.data[5] = -2.3
    with pytest.raises(ValueError, match=r"negative values \(min -2\.3\).*use_raw=True"):
        weighted_embedding(CONTAINERS[container](Xn), E, device="cpu", show_progress=False)
    Xn = X.copy()
    Xn.data[2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        weighted_embedding(CONTAINERS[container](Xn), E, device="cpu", show_progress=False)
    # check=False skips the check
    Xn = X.copy()
    Xn.data[5] = -2.3
    weighted_embedding(CONTAINERS[container](Xn), E, device="cpu", check=False, show_progress=False)


def test_bad_arguments():
    X, E = _data()
    with pytest.raises(ValueError, match="genes"):
        weighted_embedding(X, E[:-1], device="cpu")
    with pytest.raises(ValueError, match="normalize"):
        weighted_embedding(X, E, normalize="max", device="cpu")
    Ebad = E.copy()
    Ebad[1, 1] = np.inf
    with pytest.raises(ValueError, match="E has NaN"):
        weighted_embedding(X, Ebad, device="cpu")


def test_progress_bar(capsys):
    X, E = _data()
    weighted_embedding(X, E, device="cpu", show_progress=True, block_rows=10)
    assert "GenePT-w" in capsys.readouterr().err


def test_cpu_sparse_kernel_unsorted_and_duplicate_entries(kernels):
    X, E = _data(n=600, g=300, d=40, density=0.03, seed=12)
    rng = np.random.default_rng(0)
    rows, cols, vals = [], [], []
    for r in range(X.shape[0]):  # shuffled columns and a split (duplicated) entry per row
        a, b = X.indptr[r], X.indptr[r + 1]
        perm = rng.permutation(b - a)
        c, v = X.indices[a:b][perm], X.data[a:b][perm]
        if c.size:
            c, v = np.append(c, c[0]), np.append(v, v[0] * 0.5)
            v[0] *= 0.5
        rows.append(np.full(c.size, r)), cols.append(c), vals.append(v)
    indptr = np.concatenate([[0], np.cumsum([c.size for c in cols])])
    Xn = sparse.csr_matrix((np.concatenate(vals), np.concatenate(cols), indptr), shape=X.shape)
    assert not Xn.has_canonical_format
    got = _cpu(Xn, E, block_rows=256)
    assert set(kernels) == {"sparse"}
    _assert_close(got, X, E)


# ---------------------------------------------------------------- torch pipeline on CPU
# The GPU path is one torch pipeline (stager thread, slots, densify/cuSPARSE, GEMM,
# normalisation, device-side checks); on a torch CPU device everything but the CUDA
# streams, events and pinned memory runs, so CI checks its numbers without a GPU.


def _torch_embed(X, E, **kw):
    from genept._kernels.weighted._torch import _embed_torch

    kw = {
        "normalize": "l2",
        "n_total": X.shape[1],
        "device": "cpu",
        "precision": "fp32",
        "block_rows": 64,
        "check": True,
        "show_progress": False,
        **kw,
    }
    return _embed_torch(X, _make_plan(E), **kw)


@pytest.mark.parametrize("density", [0.004, 0.2])
@pytest.mark.parametrize("normalize", ["l2", "notebook", "none"])
def test_torch_pipeline_cpu_matches_reference(density, normalize):
    pytest.importorskip("torch")
    X, E = _data(n=700, g=400, d=24, density=density, seed=5, zero_rows=(0, 65, 699))
    emb, ws = _torch_embed(X, E, normalize=normalize, n_total=400, block_rows=64)
    _assert_close((emb, ws), X, E, normalize, 400)
    np.testing.assert_allclose(ws, _reference(X, E)[1], rtol=1e-12, atol=1e-12)
    assert emb.dtype == np.float32 and ws.dtype == np.float64
    assert np.all(emb[[0, 65, 699]] == 0)  # empty cells: zero rows, never NaN


def test_torch_pipeline_cpu_uses_cusparse_below_threshold(monkeypatch):
    torch = pytest.importorskip("torch")
    calls = []
    real = torch.sparse.mm
    monkeypatch.setattr(torch.sparse, "mm", lambda *a: calls.append(1) or real(*a))
    X, E = _data(n=300, g=1000, d=16, density=0.003, seed=6)
    got = _torch_embed(X, E, block_rows=100)
    assert len(calls) == 3  # every block below 1 % density took the sparse product
    _assert_close(got, X, E)
    calls.clear()
    X, E = _data(n=300, g=100, d=16, density=0.3, seed=6)
    got = _torch_embed(X, E, block_rows=100)
    assert not calls  # dense blocks: densify + GEMM
    _assert_close(got, X, E)


def test_torch_pipeline_cpu_sparse_path_unsorted_and_bad_unused_gene():
    pytest.importorskip("torch")
    X, E = _data(n=200, g=1000, d=16, density=0.004, seed=11)
    Xu = X.copy()
    for r in range(Xu.shape[0]):  # reverse each row's column order: non-canonical CSR
        a, b = Xu.indptr[r], Xu.indptr[r + 1]
        Xu.indices[a:b] = Xu.indices[a:b][::-1].copy()
        Xu.data[a:b] = Xu.data[a:b][::-1].copy()
    Xu.has_sorted_indices = False
    before = Xu.indices.copy()
    _assert_close(_torch_embed(Xu, E, block_rows=50), X, E)
    assert np.array_equal(Xu.indices, before)  # the user's matrix is not sorted in place
    unused = np.flatnonzero(~np.any(E != 0, axis=1))
    Xb = X.tolil()
    Xb[5, unused[0]] = np.nan  # a NaN on a gene without embedding still fails the check
    with pytest.raises(ValueError, match="NaN"):
        _torch_embed(Xb.tocsr(), E, block_rows=50)


def test_torch_pipeline_cpu_dense_input_bf16_and_int64_indices():
    pytest.importorskip("torch")
    X, E = _data(n=400, g=120, d=32, density=0.25, seed=7)
    ref, _ = _reference(X, E, "l2")
    emb, _ = _torch_embed(X.toarray(), E, block_rows=97)
    np.testing.assert_allclose(emb, ref, rtol=1e-5, atol=1e-6)
    X64 = X.copy()
    X64.indices = X64.indices.astype(np.int64)
    X64.indptr = X64.indptr.astype(np.int64)
    emb, _ = _torch_embed(X64, E, block_rows=97)
    np.testing.assert_allclose(emb, ref, rtol=1e-5, atol=1e-6)
    emb, _ = _torch_embed(X, E, precision="bf16")
    assert 1e-5 < np.abs(emb - ref).max() < 3e-2  # bf16 inputs: visibly rounded, still close


@pytest.mark.parametrize("bad,match", [(-0.5, "negative"), (np.nan, "NaN")])
def test_torch_pipeline_cpu_checks(bad, match):
    pytest.importorskip("torch")
    X, E = _data(n=300, g=50, d=8, density=0.2, seed=8)
    X.data[-3] = bad  # in the last block: checks span all blocks
    with pytest.raises(ValueError, match=match):
        _torch_embed(X, E, block_rows=64)
    emb, _ = _torch_embed(X, E, block_rows=64, check=False)
    assert emb.shape == (300, 8)


def test_torch_pipeline_cpu_empty_and_no_used_genes():
    pytest.importorskip("torch")
    X, E = _data(n=50, g=30, d=8, density=0.2, seed=9)
    emb, ws = _torch_embed(X[:0], E)
    assert emb.shape == (0, 8) and ws.shape == (0,)
    emb, ws = _torch_embed(X, np.zeros_like(E))
    assert np.all(emb == 0) and np.all(ws == 0)


def test_torch_pipeline_cpu_stager_error_propagates():
    pytest.importorskip("torch")
    X, E = _data(n=300, g=50, d=8, density=0.2, seed=10)

    class Flaky:
        shape = X.shape

        def __getitem__(self, sl):
            if sl.start >= 128:
                raise OSError("disk read failed")
            return X[sl].toarray()

    with pytest.raises(OSError, match="disk read failed"):
        _torch_embed(Flaky(), E, block_rows=64)


# ---------------------------------------------------------------- GPU


@gpu
@needs_cuda
@pytest.mark.parametrize("density", [0.005, 0.2])
def test_gpu_equals_cpu_fp32(density):
    X, E = _data(n=3000, g=500, d=64, density=density, seed=1)
    cpu = weighted_embedding(X, E, device="cpu", normalize="none", show_progress=False)
    gpu_ = weighted_embedding(
        X, E, device="cuda", normalize="none", block_rows=256, show_progress=False
    )
    np.testing.assert_allclose(gpu_[0], cpu[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gpu_[1], cpu[1], rtol=1e-12)
    _assert_close(
        weighted_embedding(X, E, device="cuda", block_rows=1000, show_progress=False), X, E
    )


@gpu
@needs_cuda
@pytest.mark.parametrize("precision,rtol", [("tf32", 5e-3), ("bf16", 3e-2)])
def test_gpu_low_precision(precision, rtol):
    X, E = _data(n=1000, g=300, d=64, density=0.2, seed=2)
    ref, _ = _reference(X, E, "l2")
    emb, _ = weighted_embedding(X, E, device="cuda", precision=precision, show_progress=False)
    # unit rows: absolute error relative to norm 1
    assert np.abs(emb - ref).max() < rtol


@gpu
@needs_cuda
def test_gpu_larger_than_block_and_errors():
    X, E = _data(n=5000, g=200, d=32, density=0.1, seed=4)
    got = weighted_embedding(X.toarray(), E, device="cuda", block_rows=333, show_progress=False)
    _assert_close(got, X, E)
    Xn = X.copy()
    Xn.data[7] = -1.5
    with pytest.raises(ValueError, match="negative"):
        weighted_embedding(Xn, E, device="cuda", block_rows=333, show_progress=False)


# ---------------------------------------------------------------- row blocks (_core._blocks)


@pytest.mark.parametrize("block_rows", [None, 1, 7, 16, 100])
def test_iter_row_blocks_every_container(block_rows, tmp_path):
    import anndata as ad
    import h5py

    from genept._core._blocks import iter_row_blocks

    X, _ = _data(n=45, g=12, d=3, density=0.3)
    dense = X.toarray()
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f["X"] = dense
    ad.AnnData(X).write_h5ad(tmp_path / "x.h5ad")
    backed = ad.read_h5ad(tmp_path / "x.h5ad", backed="r")
    containers = {
        "numpy": dense,
        "csr": X,
        "csc": X.tocsc(),
        "csr_array": sparse.csr_array(X),
        "dask": da.from_array(dense, chunks=(10, -1)),
        "dask_csr": da.from_array(dense, chunks=(10, 4)).map_blocks(sparse.csr_matrix),
        "backed": backed.X,
    }
    with h5py.File(path, "r") as f:
        containers["h5py"] = f["X"]
        for name, Xc in containers.items():
            blocks = list(iter_row_blocks(Xc, block_rows))
            starts = [a for a, _, _ in blocks]
            assert starts == sorted(starts) and blocks[0][0] == 0 and blocks[-1][1] == 45, name
            for (_, b, _), (a2, _, _) in pairwise(blocks):
                assert b == a2, name
            got = np.vstack([blk.toarray() if sparse.issparse(blk) else blk for *_, blk in blocks])
            np.testing.assert_array_equal(got, dense, err_msg=name)
            if block_rows is not None and name not in ("dask", "dask_csr"):
                assert max(b - a for a, b, _ in blocks) <= block_rows, name
            for *_, blk in iter_row_blocks(Xc, block_rows, csr=True):
                assert isinstance(blk, sparse.csr_matrix), name
    backed.file.close()


def test_iter_row_blocks_computes_each_dask_chunk_once():
    import dask

    from genept._core._blocks import iter_row_blocks

    calls: list[int] = []

    def count(b):
        calls.append(b.shape[0])
        return b

    X = da.from_array(np.arange(60.0).reshape(20, 3), chunks=((2, 3, 1, 4, 10), 3))
    X = X.map_blocks(count)
    with dask.config.set(scheduler="synchronous"):
        for block_rows in (None, 1, 3, 5, 100):
            calls.clear()
            got = np.vstack([b for *_, b in iter_row_blocks(X, block_rows)])
            np.testing.assert_array_equal(got, np.arange(60.0).reshape(20, 3))
            assert sorted(calls) == [1, 2, 3, 4, 10], block_rows  # every chunk once


def test_block_rows_checked():
    from genept._core._blocks import check_block_rows

    assert check_block_rows(None) is None and check_block_rows(np.int64(5)) == 5
    for bad in (0, -2, 1.5, True, "4"):
        with pytest.raises(ValueError, match="block_rows"):
            check_block_rows(bad)
