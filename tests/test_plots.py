"""genept.pl: gene programs, embedding UMAPs and benchmark plots write real PNGs.

Every plot follows scanpy's ``save=``/``show=`` conventions (one ``savefig_or_show``):
``save=True`` -> ``figdir/<name>.<format>``, a string is appended to the name.
"""

from __future__ import annotations

import warnings

import anndata as ad
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

import genept as gpt

bm_results, embeddings, pl_gene_programs = gpt.pl.bm_results, gpt.pl.embeddings, gpt.pl.gene_programs
gene_programs = gpt.tl.gene_programs


@pytest.fixture(autouse=True)
def _figdir(tmp_path):
    """Figures go to the test's folder; nothing is shown (scanpy's settings restored)."""
    names = ("figdir", "autoshow", "file_format_figs")
    old = {n: getattr(sc.settings, n) for n in names}
    sc.settings.figdir, sc.settings.autoshow, sc.settings.file_format_figs = tmp_path, False, "png"
    yield
    for n, v in old.items():
        setattr(sc.settings, n, v)


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
    path = tmp_path / f"gene_programs_{style}.png"
    ax = pl_gene_programs(programs_adata, "cell_type", style=style, save=f"_{style}.png")
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
    path = tmp_path / "embeddings.png"
    axes = embeddings(a, reps=["X_pca", "X_genept_w", "X_missing"], color=["cell_type", "batch"],
                      n_neighbors=10, save=True)
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
        path = tmp_path / f"bm_results_{kind}.png"
        ax = bm_results(df, kind=kind, reference={("cards", "lr"): 0.89}, save=f"_{kind}")
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
    ax = gene_umap(a, color="gene_type", n_neighbors=5, save="_g.png")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["ncRNA (10)", "protein-coding (30)"]
    _check_png(tmp_path / "gene_umap_g.png")
    plt.close("all")
    with pytest.raises(KeyError, match="embed_genes"):
        gene_umap(a, gene_key="X_nope")
    with pytest.warns(FutureWarning, match="gene_key"), pytest.raises(KeyError, match="X_nope"):
        gene_umap(a, key="X_nope")


def _annotated():
    obs = pd.DataFrame({"truth": pd.Categorical(list("AABBC")), "pred": list("ABBBC")},
                       index=[f"c{i}" for i in range(5)])
    return ad.AnnData(np.zeros((5, 2), dtype=np.float32), obs=obs)


def test_savefig_or_show_follows_scanpy(tmp_path):
    """save=True / a suffix / a suffix with an extension land in figdir, as in scanpy."""
    a = _annotated()
    ax = gpt.pl.confusion_matrix(a, "pred", label_key="truth", save=True)
    assert isinstance(ax, matplotlib.axes.Axes)  # returned when not shown
    _check_png(tmp_path / "confusion_matrix.png", min_bytes=2_000)
    gpt.pl.confusion_matrix(a, "pred", label_key="truth", save="_scmpt.pdf")
    assert (tmp_path / "confusion_matrix_scmpt.pdf").read_bytes()[:4] == b"%PDF"
    gpt.pl.confusion_matrix(a, "pred", label_key="truth", save="_x")
    assert (tmp_path / "confusion_matrix_x.png").exists()
    # shown figures return None, as scanpy's plots do
    with warnings.catch_warnings():  # Agg: "cannot be shown"
        warnings.simplefilter("ignore", UserWarning)
        assert gpt.pl.confusion_matrix(a, "pred", label_key="truth", show=True) is None
    plt.close("all")


def test_plots_accept_ax(programs_adata):
    """Every plot draws into a given Axes and returns it."""
    _fig, axs = plt.subplots(1, 3)
    a = programs_adata
    assert pl_gene_programs(a, "cell_type", ax=axs[0], show=False) is axs[0]
    conf = _annotated()
    assert gpt.pl.confusion_matrix(conf, "pred", label_key="truth", ax=axs[1], show=False) is axs[1]
    df = pd.DataFrame({"embedding": ["a", "b"], "auc": [0.7, 0.8]})
    assert bm_results(df, hue=None, ax=axs[2], show=False) is axs[2]
    _fig2, ax = plt.subplots()
    a.obsm["X_genept_w"] = np.random.default_rng(0).standard_normal((a.n_obs, 4))
    out = embeddings(a, reps=["X_genept_w"], color="cell_type", n_neighbors=5, ax=ax, show=False)
    assert out.shape == (1, 1) and out[0, 0] is ax
    with pytest.raises(ValueError, match="Axes"):
        embeddings(a, reps=["X_genept_w"], color=["cell_type", "batch"], ax=ax, show=False)
    plt.close("all")


def test_old_argument_names_warn(programs_adata):
    """seed= and point_size= still work, with a FutureWarning naming the new name."""
    a = programs_adata
    with pytest.warns(FutureWarning, match="random_state"):
        ax1 = pl_gene_programs(a, "cell_type", programs=2, seed=3, show=False)
    ax2 = pl_gene_programs(a, "cell_type", programs=2, random_state=3, show=False)
    assert [t.get_text() for t in ax1.get_yticklabels()] == [t.get_text() for t in ax2.get_yticklabels()]
    a.obsm["X_genept_w"] = np.random.default_rng(0).standard_normal((a.n_obs, 4))
    with pytest.warns(FutureWarning, match="size"):
        embeddings(a, reps=["X_genept_w"], n_neighbors=5, point_size=5, show=False)
    with pytest.raises(TypeError, match="both"):
        pl_gene_programs(a, "cell_type", seed=1, random_state=1, show=False)
    plt.close("all")
