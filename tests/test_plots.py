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

bm_results, embeddings, pl_gene_programs = (
    gpt.pl.bm_results,
    gpt.pl.embeddings,
    gpt.pl.gene_programs,
)
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
    E = (np.repeat(centres, size, axis=0) + 0.1 * rng.standard_normal((k * size, dim))).astype(
        np.float32
    )
    groups = np.repeat(["A", "B", "C", "D"], 20)
    X = rng.poisson(0.5, (80, k * size)).astype(np.float32)
    for g in range(k):  # program g is high in group g
        X[groups == "ABCD"[g], g * size : (g + 1) * size] += 3
    a = ad.AnnData(
        X,
        obs=pd.DataFrame(
            {"cell_type": pd.Categorical(groups), "batch": rng.choice(["b1", "b2"], 80)},
            index=[f"c{i}" for i in range(80)],
        ),
    )
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
    axes = embeddings(
        a,
        reps=["X_pca", "X_genept_w", "X_missing"],
        color=["cell_type", "batch"],
        n_neighbors=10,
        save=True,
    )
    assert axes.shape == (2, 2)
    assert "X_umap" not in a.obsm and "neighbors" not in a.uns  # adata untouched
    _check_png(path, min_bytes=20_000)
    plt.close("all")


def test_bm_results(tmp_path):
    df = pd.DataFrame(
        {
            "embedding": np.repeat(["cards", "name", "random"], 6),
            "model": np.tile(np.repeat(["lr", "rf"], 3), 3),
            "fold": np.tile([0, 1, 2], 6),
            "auc": np.r_[np.full(6, 0.85), np.full(6, 0.7), np.full(6, 0.5)]
            + np.tile([0.01, -0.01, 0.0], 6),
        }
    )
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
    # a var column with missing values: a grey "NA" group, not a category "nan"
    a.var["family"] = pd.Series(["kinase"] * 5 + [None] * 35, index=a.var_names, dtype=object)
    ax = gene_umap(a, color="family", n_neighbors=5)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["kinase (5)", "NA (35)"]
    plt.close("all")
    # a numeric column: a colour scale (a colour bar, no legend of 40 values)
    a.var["score"] = np.linspace(0, 1, 40)
    a.var.loc[a.var_names[0], "score"] = np.nan
    ax = gene_umap(a, color="score", n_neighbors=5)
    assert ax.get_legend() is None and len(ax.figure.axes) == 2
    shown = ax.collections[-1].get_array()
    np.testing.assert_allclose(np.sort(np.asarray(shown)), np.linspace(0, 1, 40)[1:])
    plt.close("all")
    a.var["count"] = pd.array([pd.NA, *range(39)], dtype="Int64")  # nullable integers
    ax = gene_umap(a, color="count", n_neighbors=5)
    np.testing.assert_array_equal(
        np.sort(np.asarray(ax.collections[-1].get_array())), np.arange(39)
    )
    plt.close("all")
    with pytest.raises(KeyError, match="embed_genes"):
        gene_umap(a, gene_key="X_nope")
    with pytest.warns(FutureWarning, match="gene_key"), pytest.raises(KeyError, match="X_nope"):
        gene_umap(a, key="X_nope")


def _annotated():
    obs = pd.DataFrame(
        {"truth": pd.Categorical(list("AABBC")), "pred": list("ABBBC")},
        index=[f"c{i}" for i in range(5)],
    )
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
    assert [t.get_text() for t in ax1.get_yticklabels()] == [
        t.get_text() for t in ax2.get_yticklabels()
    ]
    a.obsm["X_genept_w"] = np.random.default_rng(0).standard_normal((a.n_obs, 4))
    with pytest.warns(FutureWarning, match="size"):
        embeddings(a, reps=["X_genept_w"], n_neighbors=5, point_size=5, show=False)
    with pytest.raises(TypeError, match="both"):
        pl_gene_programs(a, "cell_type", seed=1, random_state=1, show=False)
    plt.close("all")


# --- issue 11: figures a biologist reads at a glance -------------------------------------


def _confusion_adata():
    """40 A (30 right), 20 B (all right), one C (right): a 1-cell class."""
    truth = ["A"] * 40 + ["B"] * 20 + ["C"]
    pred = ["A"] * 30 + ["B"] * 10 + ["B"] * 20 + ["C"]
    obs = pd.DataFrame(
        {"truth": pd.Categorical(truth, categories=["C", "A", "B"]), "pred": pred},
        index=[f"c{i}" for i in range(len(truth))],
    )
    return ad.AnnData(np.zeros((len(truth), 1), dtype=np.float32), obs=obs)


def test_confusion_matrix_shows_counts_and_class_sizes():
    ax = gpt.pl.confusion_matrix(_confusion_adata(), "pred", label_key="truth", show=False)
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert rows == ["C (n=1)", "A (n=40)", "B (n=20)"]  # categories' order, sizes in the labels
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["1", "10", "20", "30"]  # cell counts, not fractions: C's 1.00 reads "1"
    assert all(t.get_fontsize() >= 8 for t in ax.texts)
    # the colour is still the row fraction: A->A is 30/40
    assert ax.images[0].get_array()[1, 1] == pytest.approx(0.75)
    assert "61 cells" in ax.get_title()
    plt.close("all")
    ax = gpt.pl.confusion_matrix(
        _confusion_adata(), "pred", label_key="truth", annotate="fraction", show=False
    )
    assert sorted(t.get_text() for t in ax.texts) == ["0.25", "0.75", "1.00", "1.00"]
    plt.close("all")


def test_confusion_matrix_order():
    a = _confusion_adata()
    ax = gpt.pl.confusion_matrix(a, "pred", label_key="truth", order="size", show=False)
    assert [t.get_text().split(" (")[0] for t in ax.get_yticklabels()] == ["A", "B", "C"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["A", "B", "C"]  # columns follow
    plt.close("all")
    ax = gpt.pl.confusion_matrix(a, "pred", label_key="truth", order=["B"], show=False)
    assert [t.get_text().split(" (")[0] for t in ax.get_yticklabels()] == ["B", "C", "A"]
    plt.close("all")
    # "diagonal": classes confused with each other end up adjacent
    rng = np.random.default_rng(0)
    truth = np.repeat(list("PQRS"), 25)
    swap = {"P": "R", "R": "P", "Q": "S", "S": "Q"}  # P<->R and Q<->S are confused
    pred = np.array([swap[t] if rng.random() < 0.4 else t for t in truth])
    b = ad.AnnData(
        np.zeros((100, 1), dtype=np.float32),
        obs=pd.DataFrame(
            {"t": pd.Categorical(truth), "p": pred}, index=[f"c{i}" for i in range(100)]
        ),
    )
    ax = gpt.pl.confusion_matrix(b, "p", label_key="t", order="diagonal", show=False)
    order = [t.get_text().split(" (")[0] for t in ax.get_yticklabels()]
    pos = {c: i for i, c in enumerate(order)}
    assert abs(pos["P"] - pos["R"]) == 1 and abs(pos["Q"] - pos["S"]) == 1
    plt.close("all")
    with pytest.raises(ValueError, match="not true labels"):
        gpt.pl.confusion_matrix(a, "pred", label_key="truth", order=["Z"], show=False)


def test_embeddings_side_by_side_one_legend_titles_in_words(programs_adata):
    a = programs_adata
    rng = np.random.default_rng(1)
    a.obsm["X_genept_w"] = rng.standard_normal((a.n_obs, 8)).astype(np.float32)
    a.obsm["X_genept_s"] = rng.standard_normal((a.n_obs, 8)).astype(np.float32)
    axes = embeddings(a, color="cell_type", n_neighbors=10, show=False)
    assert axes.shape == (3, 1)
    fig = axes[0, 0].figure
    titles = [ax.get_title() for ax in axes[:, 0]]
    assert titles == ["expression PCA", "GenePT-w", "GenePT-s"]
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 1  # one shared legend, right of the last panel
    assert [t.get_text() for t in legends[0].get_texts()] == ["A", "B", "C", "D"]
    assert axes[2, 0].get_legend() is not None
    # side by side: one row, three columns, the same y position
    ys = {round(ax.get_position().y0, 3) for ax in axes[:, 0]}
    xs = [ax.get_position().x0 for ax in axes[:, 0]]
    assert len(ys) == 1 and xs == sorted(xs)
    # the same colour for a class in every panel
    cols = [tuple(np.round(ax.collections[0].get_facecolors()[0], 3)) for ax in axes[:, 0]]
    assert len(set(cols)) == 1
    w, h = fig.get_size_inches()
    assert w > 2 * h
    plt.close("all")
    axes = embeddings(
        a,
        reps=["X_genept_w"],
        color="cell_type",
        titles={"X_genept_w": "text"},
        n_neighbors=10,
        show=False,
    )
    assert axes[0, 0].get_title() == "text"
    plt.close("all")


def test_gene_umap_colours_by_program_and_names_genes():
    rng = np.random.default_rng(0)
    k, size, dim = 4, 15, 16
    centres = np.linalg.qr(rng.standard_normal((dim, dim)))[0][:k] * 3
    E = (np.repeat(centres, size, axis=0) + 0.1 * rng.standard_normal((k * size, dim))).astype(
        np.float32
    )
    a = ad.AnnData(np.ones((3, k * size), dtype=np.float32))
    a.var_names = [f"P{p}G{i}" for p in range(k) for i in range(size)]
    a.varm["X_genept"] = E
    ax = gpt.pl.gene_umap(a, n_neighbors=5, n_labels=2, show=False)
    # one colour per cluster: the four planted groups, each one colour
    colours = {}
    for coll in ax.collections:
        fc = tuple(np.round(coll.get_facecolors()[0], 3))
        for x, y in coll.get_offsets():
            colours[(round(float(x), 4), round(float(y), 4))] = fc
    assert len(set(colours.values())) == 4
    labels = [t.get_text() for t in ax.texts]
    assert len(labels) == 4 and all(len(t.split(", ")) == 2 for t in labels)
    # each label names genes of one planted group
    assert sorted({t.split("G")[0] for t in labels}) == ["P0", "P1", "P2", "P3"]
    assert all(len({g.split("G")[0] for g in t.split(", ")}) == 1 for t in labels)
    assert "4 clusters" in ax.get_title()
    plt.close("all")
    # programs of tl.gene_programs, when present, are used (genes outside: grey)
    a.var["genept_program"] = pd.Categorical(["GP1"] * 15 + ["GP2"] * 15 + [None] * 30)
    ax = gpt.pl.gene_umap(a, n_neighbors=5, show=False)
    assert "2 gene programs" in ax.get_title() and len(ax.texts) == 2
    plt.close("all")
    # a gene set: highlighted and named, everything else grey
    ax = gpt.pl.gene_umap(a, genes={"set A": ["P0G1", "P0G2", "NOPE"]}, n_neighbors=5, show=False)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["set A (2)"]
    assert sorted(t.get_text() for t in ax.texts) == ["P0G1", "P0G2"]
    plt.close("all")


def _noise_programs_adata(seed=0):
    """Three groups of 200 cells and one of 8; 60 programs of pure noise, one real."""
    rng = np.random.default_rng(seed)
    groups = np.array(["A"] * 200 + ["B"] * 200 + ["C"] * 200 + ["tiny"] * 8)
    S = rng.standard_normal((groups.size, 61))
    S[groups == "A", 60] += 1.0  # program 60 is high in A
    names = [f"GP{i}" for i in range(61)]
    a = ad.AnnData(
        np.zeros((groups.size, 1), dtype=np.float32),
        obs=pd.DataFrame(
            {"g": pd.Categorical(groups)}, index=[f"c{i}" for i in range(groups.size)]
        ),
    )
    a.obsm["genept_program_scores"] = pd.DataFrame(S, index=a.obs_names, columns=names)
    a.uns["genept_programs"] = {"members": {n: [f"{n}_gene"] for n in names}}
    return a


def _colours(ax):
    return np.asarray(ax.collections[0].get_array()).reshape(61, 4)  # programs x groups


def test_gene_programs_dotplot_small_group_does_not_light_up_from_noise():
    a = _noise_programs_adata()
    ax = pl_gene_programs(a, "g", style="dotplot", show_members=False, shrink=False, show=False)
    plain = _colours(ax)
    plt.close("all")
    # without shrinkage min-max scaling stretches noise to the full range, and the
    # 8-cell group (the noisiest mean) sits at an extreme of most noise rows
    assert (plain[:60, 3] >= 0.99).mean() > 0.3
    assert ((plain[:60, 3] >= 0.99) | (plain[:60, 3] <= 0.01)).mean() > 0.7
    ax = pl_gene_programs(a, "g", style="dotplot", show_members=False, show=False)
    shrunk = _colours(ax)
    # most noise rows collapse to one value (no real spread between groups), and the tiny
    # group tops fewer noise rows than chance (1 in 4)
    assert (np.ptp(shrunk[:60], axis=1) == 0).mean() > 0.8
    assert (shrunk[:60, 3] >= 0.99).mean() < 0.15
    assert shrunk[60].argmax() == 0 and shrunk[60, 0] == pytest.approx(1.0)  # real signal kept
    # dot-size legend, group sizes in the x labels
    leg = ax.get_legend()
    assert leg is not None and [t.get_text() for t in leg.get_texts()] == [
        "25%",
        "50%",
        "75%",
        "100%",
    ]
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "A (200)",
        "B (200)",
        "C (200)",
        "tiny (8)",
    ]
    plt.close("all")
    ax = pl_gene_programs(a, "g", min_cells=10, show=False)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["A (200)", "B (200)", "C (200)"]
    plt.close("all")


def test_every_pl_function_returns_axes_and_saves(programs_adata, tmp_path):
    """show=False returns the axes; save= writes figdir/<name><suffix>, for each function."""
    a = programs_adata
    a.obsm["X_genept_w"] = np.random.default_rng(0).standard_normal((a.n_obs, 4))
    conf = _annotated()
    df = pd.DataFrame({"embedding": ["a", "b"], "auc": [0.7, 0.8]})
    calls = {
        "confusion_matrix": lambda **kw: gpt.pl.confusion_matrix(
            conf, "pred", label_key="truth", **kw
        ),
        "embeddings": lambda **kw: embeddings(
            a, reps=["X_genept_w"], color="cell_type", n_neighbors=5, **kw
        ),
        "gene_umap": lambda **kw: gpt.pl.gene_umap(a, n_neighbors=5, **kw),
        "gene_programs": lambda **kw: pl_gene_programs(a, "cell_type", **kw),
        "bm_results": lambda **kw: bm_results(df, hue=None, **kw),
    }
    for name, call in calls.items():
        out = call(show=False, save="_t.png")
        first = out.flat[0] if isinstance(out, np.ndarray) else out
        assert isinstance(first, matplotlib.axes.Axes), name
        assert (tmp_path / f"{name}_t.png").exists(), name
        plt.close("all")
