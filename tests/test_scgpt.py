"""scGPT cell embeddings: the port against scGPT's own code, and ``gpt.tl.embed_scgpt``.

The reference (``tests/data/scgpt_tiny``) was made by ``scripts/make_scgpt_fixture.py``
with scGPT 0.2.4's ``TransformerModel`` and ``get_batch_cell_embeddings``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse

import genept as gpt
from genept.models import load_scgpt
from genept.models._scgpt import read_scgpt_vocab
from genept.tl._embed_scgpt import (
    bin_values,
    embed_scgpt,
    embed_scgpt_tokens,
    pad_tokens,
    tokenize_scgpt,
)

TINY = Path(__file__).parent / "data" / "scgpt_tiny"
ATOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """The tiny model is faster on one thread (and CI machines are shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def expected():
    return dict(np.load(TINY / "expected.npz"))


@pytest.fixture(scope="module")
def flash_dir(tmp_path_factory):
    """The tiny checkpoint with flash-attention key names (``self_attn.Wqkv.*``)."""
    out = tmp_path_factory.mktemp("scgpt_tiny_flash")
    for name in ("args.json", "vocab.json"):
        shutil.copy(TINY / name, out / name)
    state = torch.load(TINY / "best_model.pt", weights_only=True)
    renamed = {k.replace("self_attn.in_proj_", "self_attn.Wqkv."): v for k, v in state.items()}
    assert any("Wqkv.weight" in k for k in renamed) and not any("in_proj" in k for k in renamed)
    torch.save(renamed, out / "best_model.pt")
    return out


@pytest.fixture(scope="module")
def ckpt():
    return load_scgpt(TINY)


def _normed(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ------------------------------------------------------------ equivalence with scGPT


@pytest.mark.parametrize("flavour", ["plain", "flash"])
@pytest.mark.parametrize("run", ["full", "sampled"])
def test_encoder_matches_scgpt(expected, flash_dir, flavour, run):
    model = load_scgpt(TINY if flavour == "plain" else flash_dir).model
    genes = torch.from_numpy(expected[f"{run}_genes"])
    values = torch.from_numpy(expected[f"{run}_values"])
    with torch.inference_mode():
        cls = model.cell_embedding(genes, values).numpy()
    assert np.abs(cls - expected[f"{run}_cls"]).max() < ATOL
    assert np.abs(_normed(cls) - expected[f"{run}_emb"]).max() < ATOL


def test_tokens_match_scgpt_collator(expected, ckpt):
    """Same draws as numpy's global state -> the exact genes and bins scGPT fed."""
    cells = tokenize_scgpt(
        expected["X"],
        expected["gene_ids"],
        cls_id=ckpt.cls_token_id,
        pad_value=ckpt.config.pad_value,
        max_length=int(expected["full_max_length"]),
        rng=np.random.RandomState(int(expected["full_seed"])),
    )
    genes, values = pad_tokens(cells, pad_id=ckpt.pad_token_id, pad_value=ckpt.config.pad_value)
    np.testing.assert_array_equal(genes, expected["full_genes"])
    np.testing.assert_array_equal(values, expected["full_values"])


def test_pipeline_matches_scgpt(expected, ckpt):
    cells = tokenize_scgpt(
        expected["X"],
        expected["gene_ids"],
        cls_id=ckpt.cls_token_id,
        pad_value=ckpt.config.pad_value,
        rng=np.random.RandomState(0),
    )
    cls = embed_scgpt_tokens(ckpt.model, cells, pad_value=ckpt.config.pad_value, batch_size=7)
    assert np.abs(_normed(cls) - expected["full_emb"]).max() < ATOL


def test_sampling_keeps_cls_and_distinct_genes(expected, ckpt):
    cells = tokenize_scgpt(
        expected["X"],
        expected["gene_ids"],
        cls_id=ckpt.cls_token_id,
        pad_value=-2.0,
        max_length=16,
        rng=np.random.default_rng(0),
    )
    X = expected["X"]
    for (g, v), row in zip(cells, X, strict=True):
        nnz = int((row != 0).sum())
        assert len(g) == min(nnz + 1, 16) and g[0] == ckpt.cls_token_id and v[0] == -2.0
        assert len(set(g[1:].tolist())) == len(g) - 1
        assert set(g[1:]) <= set(expected["gene_ids"][row != 0])


def test_bin_values_edge_cases():
    rng = np.random.default_rng(0)
    same = bin_values(np.full(4, 3.0, np.float32), rng=rng)
    assert same.dtype == np.float32 and ((same >= 1) & (same <= 50)).all()
    one = bin_values(np.array([5.0], np.float32), rng=rng)
    assert 1 <= one[0] <= 50
    ramp = bin_values(np.arange(1, 101, dtype=np.float32), rng=rng)
    assert ramp[0] == 1 and ramp[-1] == 50 and (np.diff(ramp) >= 0).all()
    with_zeros = bin_values(np.array([0, 2, 0, 4], np.float32), rng=rng)
    assert with_zeros[0] == 0 and with_zeros[2] == 0 and with_zeros[3] == 50
    np.testing.assert_array_equal(bin_values(np.zeros(3, np.float32)), 0)


def test_vocab_appends_missing_specials(tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps({"A": 0, "B": 1, "<pad>": 2}))
    vocab = read_scgpt_vocab(tmp_path / "vocab.json")
    assert vocab["<cls>"] == 3 and vocab["<eoc>"] == 4


# ------------------------------------------------------------ AnnData function


def _adata(expected, kind="csr"):
    """The fixture's 20 cells + 5 genes outside the vocabulary + 1 cell expressing only those."""
    X = expected["X"]
    extra_genes = np.random.default_rng(1).poisson(1.0, size=(X.shape[0], 5)).astype(np.float32)
    X = np.hstack([X, extra_genes])
    empty_cell = np.zeros((1, X.shape[1]), np.float32)
    empty_cell[0, -3:] = 4.0
    X = np.vstack([X, empty_cell])
    names = [*map(str, expected["var_names"]), "NOTAGENE1", "NOTAGENE2", "XYZ", "LOC1", "LOC2"]
    var = pd.DataFrame({"symbol": names}, index=[f"ENSG{i:011d}" for i in range(len(names))])
    obs = pd.DataFrame(index=[f"cell{i}" for i in range(X.shape[0])])
    conv = {
        "dense": lambda m: m,
        "csr": sparse.csr_matrix,
        "csc": sparse.csc_matrix,
        "dask": lambda m: __import__("dask.array").array.from_array(m, chunks=(7, -1)),
    }[kind]
    adata = ad.AnnData(conv(X), obs=obs, var=var)
    adata.layers["counts"] = sparse.csr_matrix(X)
    return adata


@pytest.mark.parametrize("kind", ["dense", "csr", "csc", "dask"])
def test_embed_scgpt(expected, kind):
    adata = _adata(expected, kind)
    assert embed_scgpt(adata, TINY, gene_col="symbol", batch_size=4) is None
    emb = adata.obsm["X_scGPT"]
    assert emb.shape == (21, 32) and emb.dtype == np.float32
    flag = adata.obs["scGPT_empty"].to_numpy()
    assert flag.dtype == bool and flag.tolist() == [False] * 20 + [True]
    np.testing.assert_allclose(np.linalg.norm(emb[:20], axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(emb[20], 0)
    params = adata.uns["scGPT"]["params"]
    assert (params["n_genes_matched"], params["n_genes_total"]) == (60, 65)
    assert params["n_cells_empty"] == 1 and params["gene_col"] == "symbol"
    # same seed -> same result, on every container and batch size
    ref = _adata(expected, "csr")
    embed_scgpt(ref, TINY, gene_col="symbol", batch_size=64)
    np.testing.assert_allclose(emb, ref.obsm["X_scGPT"], atol=1e-5)


def test_embed_scgpt_seed_layer_copy_roundtrip(expected, tmp_path, ckpt):
    adata = _adata(expected, "dense")
    out = embed_scgpt(
        adata,
        ckpt,
        gene_col="symbol",
        layer="counts",
        random_state=3,
        copy=True,
        key_added="X_tiny",
    )
    assert "X_tiny" not in adata.obsm and out is not adata
    with pytest.warns(FutureWarning, match="random_state"):  # the old name still works
        again = embed_scgpt(adata, ckpt, gene_col="symbol", seed=3, copy=True, key_added="X_tiny")
    np.testing.assert_array_equal(out.obsm["X_tiny"], again.obsm["X_tiny"])
    other = embed_scgpt(
        adata, ckpt, gene_col="symbol", random_state=4, copy=True, key_added="X_tiny"
    )
    assert not np.allclose(out.obsm["X_tiny"], other.obsm["X_tiny"], atol=1e-6)  # ties re-drawn
    assert out.uns["tiny"]["params"]["layer"] == "counts"
    out.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    np.testing.assert_array_equal(back.obsm["X_tiny"], out.obsm["X_tiny"])
    assert back.obs["tiny_empty"].dtype == bool
    assert back.uns["tiny"]["params"]["n_genes_matched"] == 60


def test_embed_scgpt_sampling(expected, ckpt):
    adata = _adata(expected, "csr")
    embed_scgpt(adata, ckpt, gene_col="symbol", max_length=8, random_state=0)
    first = adata.obsm["X_scGPT"].copy()
    embed_scgpt(adata, ckpt, gene_col="symbol", max_length=8, random_state=0)
    np.testing.assert_array_equal(first, adata.obsm["X_scGPT"])
    np.testing.assert_allclose(np.linalg.norm(first[:20], axis=1), 1.0, atol=1e-5)


def test_embed_scgpt_errors(expected, tmp_path, ckpt):
    adata = _adata(expected, "csr")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        embed_scgpt(adata, tmp_path / "nowhere")
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(TINY / "args.json", partial / "args.json")
    with pytest.raises(FileNotFoundError, match=r"lacks vocab\.json, best_model\.pt"):
        embed_scgpt(adata, partial)
    with pytest.raises(
        ValueError, match=r"no gene of the dataset is in the scGPT vocabulary.*gene_col="
    ):
        embed_scgpt(adata, ckpt)  # var_names are Ensembl-like ids here
    bad = tmp_path / "bad"
    shutil.copytree(TINY, bad)
    args = json.loads((bad / "args.json").read_text())
    args["nlayers"] = 3
    (bad / "args.json").write_text(json.dumps(args))
    with pytest.raises(ValueError, match="missing"):
        load_scgpt(bad)
    with pytest.raises(ValueError, match="max_length"):
        embed_scgpt(adata, ckpt, gene_col="symbol", max_length=1)
    assert "X_scGPT" not in adata.obsm  # nothing half-written


def test_exported():
    if not hasattr(gpt.tl, "embed_scgpt"):
        pytest.skip("genept.tl does not export embed_scgpt yet")
    assert gpt.tl.embed_scgpt is embed_scgpt


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_embed_scgpt_cuda_matches_cpu(expected):
    cpu = _adata(expected, "csr")
    embed_scgpt(cpu, TINY, gene_col="symbol", device="cpu")
    gpu = _adata(expected, "csr")
    embed_scgpt(gpu, TINY, gene_col="symbol", device="cuda")
    cos = (cpu.obsm["X_scGPT"][:20] * gpu.obsm["X_scGPT"][:20]).sum(1)
    assert cos.min() > 0.999  # fp16 autocast on CUDA, as scGPT
    assert gpu.uns["scGPT"]["params"]["device"].startswith("cuda")


def test_forward_runs_with_nested_openmp_off(expected, ckpt, nested_openmp, monkeypatch):
    """embed_scgpt_tokens runs its forward passes inside openmp_unnested (see that function)."""
    lib, seen = nested_openmp, []
    real = ckpt.model.cell_embedding

    def spy(*a, **k):
        seen.append(lib.levels)
        return real(*a, **k)

    monkeypatch.setattr(ckpt.model, "cell_embedding", spy)
    cells = tokenize_scgpt(
        expected["X"][:4],
        expected["gene_ids"],
        cls_id=ckpt.cls_token_id,
        pad_value=ckpt.config.pad_value,
        rng=np.random.RandomState(0),
    )
    embed_scgpt_tokens(ckpt.model, cells, pad_value=ckpt.config.pad_value, batch_size=2)
    assert seen == [1, 1] and lib.levels == 255
