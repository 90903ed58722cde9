"""genept.pl: gene programs, embedding UMAPs and benchmark plots write real PNGs."""

from __future__ import annotations

import anndata as ad
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from genept.pl._embeddings import bm_results, embeddings
from genept.pl._programs import gene_programs as pl_gene_programs
from genept.tl._gene_programs import gene_programs


def _check_png(path, min_bytes=5_000, max_bytes=3_000_000):
    assert path.exists()
    size = path.stat().st_size
    assert min_bytes < size < max_bytes, size
    img = plt.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.01  # not blank


@pytest.fixture
def programs_adata():
    rng = np.random.default_rng(0)
    k, size, dim = 4, 12, 16
    centres = np.linalg.qr(rng.standard_normal((dim, dim)))[0][:k] * 3
    E = (np.repeat(centres, size, axis=0) + 0.1 * rng.standard_normal((k * size, dim))).astype(np.float32)
    groups = np.repeat(["A", "B", "C", "D"], 20)
    X = rng.poisson(0.5, (80, k * size)).astype(np.float32)
    for g in range(k):  # program g is high in group g
        X[groups == "ABCD"[g], g * size:(g + 1) * size] += 3
    a = ad.AnnData(X, obs=pd.DataFrame({"cell_type": pd.Categorical(groups),
                                        "batch": rng.choice(["b1", "b2"], 80)},
                                       index=[f"c{i}" for i in range(80)]))
    a.var_names = [f"GENE{i}" for i in range(k * size)]
    a.varm["X_genept"] = E
    gene_programs(a, threshold=0.8)
    return a


@pytest.mark.parametrize("style", ["heatmap", "dotplot"])
def test_gene_programs_plot(programs_adata, tmp_path, style):
    path = tmp_path / f"programs_{style}.png"
    ax = pl_gene_programs(programs_adata, "cell_type", style=style, save=str(path))
    assert isinstance(ax, matplotlib.axes.Axes)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == 4 and all("GENE" in t for t in labels)  # members listed
    _check_png(path)
    plt.close("all")
    ax = pl_gene_programs(programs_adata, "cell_type", programs=2, show_members=False)
    assert len(ax.get_yticklabels()) == 2
    plt.close("all")
    with pytest.raises(KeyError, match="groupby"):
        pl_gene_programs(programs_adata, "nope")


def test_embeddings_grid(programs_adata, tmp_path):
    a = programs_adata
    rng = np.random.default_rng(1)
    a.obsm["X_genept_w"] = rng.standard_normal((a.n_obs, 8)).astype(np.float32)
    path = tmp_path / "emb.png"
    axes = embeddings(a, reps=["X_pca", "X_genept_w", "X_missing"], color=["cell_type", "batch"],
                      n_neighbors=10, save=str(path))
    assert axes.shape == (2, 2)
    assert "X_umap" not in a.obsm and "neighbors" not in a.uns  # adata untouched
    _check_png(path, min_bytes=20_000)
    plt.close("all")


def test_bm_results(tmp_path):
    df = pd.DataFrame({"embedding": np.repeat(["cards", "name", "random"], 6),
                       "model": np.tile(np.repeat(["lr", "rf"], 3), 3),
                       "fold": np.tile([0, 1, 2], 6),
                       "auc": np.r_[np.full(6, 0.85), np.full(6, 0.7), np.full(6, 0.5)]
                       + np.tile([0.01, -0.01, 0.0], 6)})
    for kind in ("bar", "heatmap"):
        path = tmp_path / f"bm_{kind}.png"
        ax = bm_results(df, kind=kind, reference={("cards", "lr"): 0.89}, save=str(path))
        assert isinstance(ax, matplotlib.axes.Axes)
        _check_png(path)
        plt.close("all")
    with pytest.raises(KeyError):
        bm_results(df, x="nope")


def test_gene_umap_png_coloured_by_gene_type(tmp_path):
    from genept.pl import gene_umap

    a = ad.AnnData(np.ones((3, 40), dtype=np.float32))
    cards = __import__("genept").datasets.gene_cards()
    coding = cards.index[cards["gene_type"] == "protein-coding"][:30].tolist()
    nc = cards.index[cards["gene_type"] == "ncRNA"][:10].tolist()
    a.var_names = coding + nc
    rng = np.random.default_rng(0)
    E = rng.standard_normal((40, 8)).astype(np.float32)
    E[30:] += 4  # ncRNAs apart
    a.varm["X_genept"] = E
    ax = gene_umap(a, color="gene_type", n_neighbors=5, save=str(tmp_path / "g.png"))
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["ncRNA (10)", "protein-coding (30)"]
    _check_png(tmp_path / "g.png")
    plt.close("all")
    with pytest.raises(KeyError, match="embed_genes"):
        gene_umap(a, key="X_nope")
