"""GenePT-w GPU pipeline for in-memory CSR (zero-copy blocks, threaded pinned staging).

On a torch CPU device everything but CUDA streams, events and pinned memory runs, so CI
checks the numbers, the block/slot bookkeeping and the checks without a GPU; the CUDA
tests run on a GPU machine (``benchmarks/gpu_suite.sh``).
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from scipy import sparse

torch = pytest.importorskip("torch")

from genept._kernels.weighted import _torch_csr as tc  # noqa: E402
from genept._kernels.weighted._plan import _make_plan  # noqa: E402
from genept._kernels.weighted._torch import _embed_torch  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _data(n, g, d, density, seed, zero_rows=(), unused=0.1):
    rng = np.random.default_rng(seed)
    X = sparse.random(n, g, density=density, format="csr", random_state=rng, dtype=np.float64)
    X.data = np.log1p(rng.gamma(1.0, 3.0, X.nnz))
    X = X.tolil()
    for r in zero_rows:
        X[r, :] = 0
    X = X.tocsr().astype(np.float32)
    X.eliminate_zeros()
    E = rng.normal(size=(g, d)).astype(np.float32)
    E[rng.random(g) < unused] = 0  # genes without an embedding
    return X, E


def _reference(X, E, normalize="l2", n_total=None):
    """float64 scipy reference."""
    used = np.any(E != 0, axis=1)
    X64 = sparse.csr_matrix(X, dtype=np.float64)
    emb = np.asarray(X64 @ E.astype(np.float64))
    ws = np.asarray(X64[:, used].sum(1)).ravel()
    if normalize == "l2":
        nrm = np.linalg.norm(emb, axis=1, keepdims=True)
        emb = np.divide(emb, nrm, out=np.zeros_like(emb), where=nrm > 0)
    elif normalize == "notebook":
        emb = emb / (n_total or X.shape[1])
    return emb, ws


def _close(emb, ref, tol=2e-6):
    """Every row within ``tol`` of the float64 row, relative to the row's norm."""
    err = np.abs(emb - ref).max(axis=1)
    scale = np.maximum(np.linalg.norm(ref, axis=1), 1e-30)
    assert (err <= tol * scale + 1e-12).all(), float((err / scale).max())


def _run(X, E, device="cpu", **kw):
    kw = {
        "normalize": "l2",
        "n_total": X.shape[1],
        "precision": "fp32",
        "block_rows": None,
        "check": True,
        "show_progress": False,
        **kw,
    }
    return _embed_torch(X, _make_plan(E), device=device, **kw)


@pytest.fixture
def small_blocks(monkeypatch):
    """Many blocks and many copy pieces on test-sized data."""
    monkeypatch.setattr(tc, "BLOCK_NNZ", 997)
    real = tc._split
    monkeypatch.setattr(tc, "_split", lambda a, b, parts, align=64: real(a, b, parts, align=7))


def test_block_bounds_cover_rows_and_respect_limits():
    rng = np.random.default_rng(0)
    nnz = rng.integers(0, 50, 1000)
    nnz[500] = 5000  # one row larger than a block
    indptr = np.concatenate([[0], np.cumsum(nnz)])
    b = tc.block_bounds(indptr, block_nnz=300, max_rows=40)
    assert b[0][0] == 0 and b[-1][1] == 1000
    assert all(x[1] == y[0] for x, y in pairwise(b))
    for a, z in b:
        assert z - a <= 40
        assert indptr[z] - indptr[a] <= 300 or z - a == 1


@pytest.mark.parametrize("normalize", ["l2", "notebook", "none"])
@pytest.mark.parametrize("density", [0.004, 0.2])
def test_stream_matches_float64_reference(small_blocks, normalize, density):
    X, E = _data(700, 400, 24, density, seed=1, zero_rows=(0, 65, 699))
    assert tc.inmemory_csr(X) is not None
    emb, ws = _run(X, E, normalize=normalize, n_total=400)
    ref, rws = _reference(X, E, normalize, 400)
    _close(emb, ref)
    np.testing.assert_allclose(ws, rws, rtol=1e-12, atol=1e-12)
    assert emb.dtype == np.float32 and ws.dtype == np.float64
    assert np.all(emb[[0, 65, 699]] == 0)


def test_stream_input_dtypes_csr_array_and_unsorted(small_blocks):
    X, E = _data(300, 200, 16, 0.1, seed=2)
    ref, _ = _reference(X, E)
    X64 = sparse.csr_array(X.astype(np.float64))
    X64.indices = X64.indices.astype(np.int64)
    X64.indptr = X64.indptr.astype(np.int64)
    _close(_run(X64, E)[0], ref)
    Xu = X.copy()
    for r in range(Xu.shape[0]):
        a, b = Xu.indptr[r], Xu.indptr[r + 1]
        Xu.indices[a:b] = Xu.indices[a:b][::-1].copy()
        Xu.data[a:b] = Xu.data[a:b][::-1].copy()
    before = Xu.indices.copy()
    _close(_run(Xu, E)[0], ref)
    assert np.array_equal(Xu.indices, before)  # never sorted in place


@pytest.mark.parametrize("bad,match", [(-0.5, "negative"), (np.nan, "NaN"), (np.inf, "NaN")])
def test_stream_checks_span_all_blocks(small_blocks, bad, match):
    X, E = _data(300, 50, 8, 0.2, seed=3)
    X.data[-3] = bad  # in the last block
    with pytest.raises(ValueError, match=match):
        _run(X, E)
    emb, _ = _run(X, E, check=False)
    assert emb.shape == (300, 8) and np.isfinite(emb).all()


def test_stream_sparse_blocks_take_spmm(small_blocks, monkeypatch):
    calls = []
    real = torch.sparse.mm
    monkeypatch.setattr(torch.sparse, "mm", lambda *a: calls.append(1) or real(*a))
    X, E = _data(300, 1000, 16, 0.003, seed=4)
    unused = np.flatnonzero(~np.any(E != 0, axis=1))
    emb, ws = _run(X, E)
    assert calls  # below 1 % density: cuSPARSE path
    ref, rws = _reference(X, E)
    _close(emb, ref)
    np.testing.assert_allclose(ws, rws, rtol=1e-12)
    Xb = X.tolil()
    Xb[5, unused[0]] = np.nan  # bad value on a gene without embedding still fails
    with pytest.raises(ValueError, match="NaN"):
        _run(Xb.tocsr(), E)


def test_stream_bf16_and_empty(small_blocks):
    X, E = _data(200, 120, 32, 0.25, seed=5)
    ref, _ = _reference(X, E)
    emb, _ = _run(X, E, precision="bf16")
    assert 1e-5 < np.abs(emb - ref).max() < 3e-2
    emb, ws = _run(X[:0], E)
    assert emb.shape == (0, 32) and ws.shape == (0,)
    emb, ws = _run(X, np.zeros_like(E))
    assert np.all(emb == 0) and np.all(ws == 0)


def test_tf32_split_is_exact_and_3xtf32_product_matches_float64():
    rng = np.random.default_rng(6)
    A = torch.from_numpy(np.log1p(rng.gamma(1.0, 3.0, (64, 200))).astype(np.float32))
    hi, lo = tc._tf32_split(A)
    assert torch.equal(hi + lo, A)
    assert not (hi.view(torch.int32) & 0x1FFF).any()  # 10 mantissa bits: TF32-exact
    assert (lo.abs() <= A.abs() * 2.0**-10).all()
    # the three-product sum (each product exact here: CPU fp32) matches float64 to 1e-6
    E = torch.from_numpy(rng.normal(size=(200, 48)).astype(np.float32))
    Eh, El = tc._tf32_split(E)
    got = lo @ Eh + hi @ El + hi @ Eh
    ref = A.double() @ E.double()
    assert ((got.double() - ref).norm() / ref.norm()).item() < 1e-6


def test_resident_torch_csr_on_cpu():
    X, E = _data(400, 150, 16, 0.1, seed=7)
    T = torch.sparse_csr_tensor(
        torch.from_numpy(X.indptr.astype(np.int64)),
        torch.from_numpy(X.indices.astype(np.int64)),
        torch.from_numpy(X.data),
        size=X.shape,
    )
    assert tc.device_csr(T) is not None and tc.device_csr(X) is None
    emb, ws = _run(T, E)
    ref, rws = _reference(X, E)
    _close(emb, ref)
    np.testing.assert_allclose(ws, rws, rtol=1e-12)


# ------------------------------------------------------------------------------- CUDA


@needs_cuda
@pytest.mark.parametrize("density", [0.005, 0.06])
def test_cuda_stream_fp32_matches_float64(density):
    X, E = _data(20000, 3000, 384, density, seed=8, zero_rows=(3,))
    emb, ws = _run(X, E, device="cuda")
    ref, rws = _reference(X, E)
    err = np.linalg.norm(emb - ref) / np.linalg.norm(ref)
    assert err < 1e-6, err
    np.testing.assert_allclose(ws, rws, rtol=1e-12)
    assert np.all(emb[3] == 0)


@needs_cuda
@pytest.mark.parametrize("precision,tol", [("tf32", 5e-3), ("bf16", 3e-2)])
def test_cuda_stream_low_precision(precision, tol):
    X, E = _data(5000, 1000, 64, 0.05, seed=9)
    ref, _ = _reference(X, E)
    emb, _ = _run(X, E, device="cuda", precision=precision)
    assert np.abs(emb - ref).max() < tol


@needs_cuda
def test_cuda_resident_inputs():
    X, E = _data(3000, 500, 32, 0.05, seed=10)
    ref, _ = _reference(X, E)
    T = torch.sparse_csr_tensor(
        torch.from_numpy(X.indptr.astype(np.int64)),
        torch.from_numpy(X.indices.astype(np.int64)),
        torch.from_numpy(X.data),
        size=X.shape,
        device="cuda",
    )
    np.testing.assert_allclose(_run(T, E, device="cuda")[0], ref, rtol=1e-4, atol=1e-5)
    cupyx = pytest.importorskip("cupyx.scipy.sparse")
    C = cupyx.csr_matrix(X)
    np.testing.assert_allclose(_run(C, E, device="cuda")[0], ref, rtol=1e-4, atol=1e-5)


def test_split_scatter_path_on_cpu_matches_reference():
    """The 3xTF32 path (CUDA only in production) run on CPU: scatter of split values."""
    X, E = _data(300, 200, 16, 0.1, seed=11, zero_rows=(7,))
    X.data[5] = np.float32(1.0) + np.float32(2.0**-20)  # a value with a non-zero tail
    mm = tc.DeviceMatmul(_make_plan(E), torch.device("cpu"), "fp32")
    mm.split = True
    mm.E_hi, mm.E_lo = tc._tf32_split(mm.E)
    comp = tc.BlockCompute(mm, normalize="l2", n_total=200)
    ptr = torch.from_numpy(X.indptr.astype(np.int64))
    emb, ws = comp(ptr, torch.from_numpy(X.indices), torch.from_numpy(X.data), X.shape[0])
    ref, rws = _reference(X, E)
    _close(emb.numpy(), ref)
    np.testing.assert_allclose(ws.numpy(), rws, rtol=1e-12)
    assert np.all(emb.numpy()[7] == 0)
