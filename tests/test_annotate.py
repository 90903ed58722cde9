"""Cell-type annotation: kNN (+ensemble), MLP probe, scMPT fusion, LLM, metrics, plot."""

from __future__ import annotations

import json

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import torch
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_score,
    recall_score,
)
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.neighbors import KNeighborsClassifier

import genept as gpt
from genept.models import ScMPTModel
from genept.pl import confusion_matrix as plot_confusion
from genept.tl import (
    annotate_knn,
    annotate_knn_ensemble,
    annotate_llm,
    annotate_mlp,
    annotate_scmpt,
    classification_metrics,
    proba_frame,
)

# the answer parser and its "no label" marker are internals, tested directly
from genept.tl._annotate._chat import UNPARSED
from genept.tl._annotate._chat import parse_answer as _parse_answer

matplotlib.use("Agg")

LABEL = "bulk_labels"
KEY = "sk-test-SECRET-annotate-0123456789"
# anndata warns about "/" in h5 names; class names like "CD4+/CD25 T Reg" must not cause it
SLASH_WARNING = "error:Forward slashes:FutureWarning"


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """The CPUs are shared: one intra-op thread is much faster than two fighting."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def pbmc(split_cells):
    """pbmc68k_reduced with X_pca (50) and a PCA of .raw (30), split 80/20 stratified
    (by position: ``obs_names`` are Arrow strings under pandas 3)."""
    adata = sc.datasets.pbmc68k_reduced()
    raw = ad.AnnData(adata.raw.X.copy(), obs=adata.obs[[]].copy())
    sc.pp.pca(raw, n_comps=30, random_state=0)
    adata.obsm["X_pca_raw"] = raw.obsm["X_pca"]
    return split_cells(adata, LABEL, test_size=0.2, random_state=0)


@pytest.fixture(scope="module")
def annotated(pbmc, tmp_path_factory):
    """A query annotated once by kNN, the ensemble and a small scMPT (saved)."""
    ref, query = pbmc
    query = query.copy()
    progress, gpt.settings.progress = gpt.settings.progress, False
    annotate_knn(query, ref, use_rep="X_pca", label_key=LABEL)
    annotate_knn_ensemble(query, ref, use_rep=["X_pca", "X_pca_raw"], label_key=LABEL)
    path = tmp_path_factory.mktemp("scmpt") / "model"
    annotate_scmpt(
        query,
        ref,
        label_key=LABEL,
        expr_rep="X_pca",
        text_rep="X_pca_raw",
        hidden=256,
        lr_grid=(1e-3, 3e-4),
        epochs_grid=(15,),
        n_seeds=2,
        device="cpu",
        save=path,
    )
    gpt.settings.progress = progress
    return query, path


# ------------------------------------------------------------------------------ kNN
def test_knn_matches_sklearn(pbmc, annotated):
    ref, _ = pbmc
    query, _ = annotated
    clf = KNeighborsClassifier(n_neighbors=10, metric="cosine", algorithm="brute")
    clf.fit(ref.obsm["X_pca"], ref.obs[LABEL].astype(str))
    expected = clf.predict(query.obsm["X_pca"])
    np.testing.assert_array_equal(query.obs["genept_knn"].astype(str).to_numpy(), expected)

    proba = proba_frame(query, "genept_knn")
    assert isinstance(proba, pd.DataFrame)
    assert list(proba.columns) == list(clf.classes_)
    assert proba.index.equals(query.obs_names)
    np.testing.assert_allclose(proba.to_numpy(), clf.predict_proba(query.obsm["X_pca"]))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(query.obs["genept_knn_confidence"], proba.max(axis=1))
    assert list(query.obs["genept_knn"].cat.categories) == list(clf.classes_)

    uns = query.uns["genept_knn"]
    assert uns["params"]["n_neighbors"] == 10 and uns["params"]["use_rep"] == "X_pca"
    acc = accuracy_score(query.obs[LABEL].astype(str), expected)
    assert uns["metrics"]["accuracy"] == pytest.approx(acc)
    assert acc > 0.7


def test_knn_copy_semantics(pbmc):
    ref, query = pbmc
    out = annotate_knn(query, ref, use_rep="X_pca", label_key=LABEL, key_added="k", copy=True)
    assert isinstance(out, ad.AnnData) and "k" in out.obs and "k_proba" in out.obsm
    assert "k" not in query.obs and "k" not in query.uns
    q = query.copy()
    assert annotate_knn(q, ref, use_rep="X_pca", label_key=LABEL, key_added="k") is None
    pd.testing.assert_series_equal(q.obs["k"], out.obs["k"])


def test_knn_ensemble_pools_votes_by_hand():
    # rep A puts the query near cells 0,1,2 (a,a,b); rep B near cells 2,3,4 (b,b,c)
    labels = ["a", "a", "b", "b", "c", "c"]
    rep_a = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]])
    rep_b = np.array([[20.0], [21.0], [0.0], [1.0], [2.0], [30.0]])
    ref = ad.AnnData(
        np.zeros((6, 1)), obs=pd.DataFrame({"cell_type": labels}, index=list("012345"))
    )
    ref.obsm["A"], ref.obsm["B"] = rep_a, rep_b
    query = ad.AnnData(np.zeros((1, 1)), obs=pd.DataFrame(index=["q"]))
    query.obsm["A"], query.obsm["B"] = np.array([[0.5]]), np.array([[0.9]])

    annotate_knn_ensemble(query, ref, use_rep=["A", "B"], n_neighbors=3, metric="euclidean")
    # 6 votes: a,a,b + b,b,c -> b wins with 3/6
    assert query.obs["genept_knn_ensemble"].iloc[0] == "b"
    np.testing.assert_allclose(
        proba_frame(query, "genept_knn_ensemble").loc["q"], [2 / 6, 3 / 6, 1 / 6]
    )
    assert query.obs["genept_knn_ensemble_confidence"].iloc[0] == pytest.approx(0.5)
    # rep A alone says "a"
    annotate_knn(query, ref, use_rep="A", n_neighbors=3, metric="euclidean")
    assert query.obs["genept_knn"].iloc[0] == "a"
    # a tie (a:1 b:1 c:1 per rep C) goes to the first class, as scikit-learn does
    ref.obsm["C"] = np.array([[0.0], [9.0], [1.0], [9.5], [2.0], [9.9]])
    query.obsm["C"] = np.array([[1.0]])
    annotate_knn_ensemble(
        query, ref, use_rep=["C"], n_neighbors=3, metric="euclidean", key_added="t"
    )
    assert query.obs["t"].iloc[0] == "a"


def test_knn_ensemble_equals_summed_sklearn_votes(pbmc, annotated):
    ref, _ = pbmc
    query, _ = annotated
    votes = 0
    for rep in ["X_pca", "X_pca_raw"]:
        clf = KNeighborsClassifier(n_neighbors=10, metric="cosine", algorithm="brute")
        clf.fit(ref.obsm[rep], ref.obs[LABEL].astype(str))
        votes = votes + clf.predict_proba(query.obsm[rep]) * 10
    np.testing.assert_allclose(query.obsm["genept_knn_ensemble_proba"], votes / 20)
    expected = clf.classes_[votes.argmax(1)]
    np.testing.assert_array_equal(query.obs["genept_knn_ensemble"].astype(str), expected)
    assert query.uns["genept_knn_ensemble"]["params"]["use_rep"] == ["X_pca", "X_pca_raw"]


# ------------------------------------------------------------------------------ metrics
def test_classification_metrics_equal_sklearn():
    rng = np.random.default_rng(0)
    classes = np.array(["x", "y", "z", "w"])
    yt = classes[rng.integers(0, 4, 200)]
    yp = np.where(rng.random(200) < 0.6, yt, classes[rng.integers(0, 3, 200)])
    m = classification_metrics(yt, yp)
    assert m["labels"] == ["w", "x", "y", "z"]
    assert m["accuracy"] == pytest.approx(accuracy_score(yt, yp))
    assert m["precision_macro"] == pytest.approx(
        precision_score(yt, yp, average="macro", zero_division=0)
    )
    assert m["recall_macro"] == pytest.approx(
        recall_score(yt, yp, average="macro", zero_division=0)
    )
    assert m["f1_macro"] == pytest.approx(f1_score(yt, yp, average="macro", zero_division=0))
    assert m["confusion_matrix"] == sk_confusion(yt, yp, labels=m["labels"]).tolist()
    assert m["n_cells"] == 200
    # a prediction outside `labels` is an error of its true class
    m2 = classification_metrics(["a", "b"], ["a", UNPARSED], labels=["a", "b"])
    assert m2["accuracy"] == 0.5 and m2["recall_macro"] == 0.5
    with pytest.raises(ValueError, match="2 labels"):
        classification_metrics(["a", "b"], ["a"])


# ------------------------------------------------------------------------------ MLP / scMPT
def test_mlp_probe(pbmc):
    ref, query = pbmc
    query = query.copy()
    rng_state = torch.get_rng_state()
    annotate_mlp(query, ref, use_rep="X_pca", label_key=LABEL, epochs=40, device="cpu")
    assert torch.equal(rng_state, torch.get_rng_state())  # global RNG untouched
    uns = query.uns["genept_mlp"]
    assert uns["metrics"]["accuracy"] > 0.6
    assert uns["params"]["hidden"] == [256]
    assert 0 < uns["validation"]["accuracy_mean"] <= 1
    proba = proba_frame(query, "genept_mlp")
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert list(proba.columns) == sorted(ref.obs[LABEL].astype(str).unique())


def test_scmpt_fusion_and_save_load(pbmc, annotated):
    ref, query0 = pbmc
    query, path = annotated
    uns = query.uns["genept_scmpt"]
    assert uns["params"]["reps"] == ["X_pca", "X_pca_raw"]
    assert uns["metrics"]["accuracy"] > 0.6
    # the validation summary: seeds' mean and SD, grid of 2 learning rates
    val = uns["validation"]
    sel = uns["selection"]
    assert sel["chosen"] == "stack"  # the default: a weighted mix of every candidate
    # the stack is scored once on the validation split (the mix of its candidates'
    # probabilities), not per seed
    assert len(val["accuracy_per_seed"]) == 1 and val["accuracy_sd"] == 0
    assert val["accuracy_mean"] == pytest.approx(sel["candidates"]["stack"]["val_accuracy"])
    assert val["n_val"] == pytest.approx(0.2 * len(ref), abs=1)
    # 2 learning rates for each network candidate: the fusion and each branch alone; the
    # logistic regressions (the linear fusion and one on each branch) once each, without
    # a learning rate (NaN rows)
    lrs = np.asarray(uns["grid"]["lr"], float)
    assert sorted(lrs[~np.isnan(lrs)]) == [3e-4] * 3 + [1e-3] * 3 and np.isnan(lrs).sum() == 3
    assert sorted(set(uns["grid"]["candidate"])) == [
        "X_pca", "X_pca (linear)", "X_pca_raw", "X_pca_raw (linear)", "fusion", "linear",
    ]  # fmt: skip
    if uns["selection"]["chosen"] == "linear":
        assert uns["hyperparameters"] == {"C": 1.0}
    else:
        assert uns["hyperparameters"]["lr"] in (3e-4, 1e-3)
    np.testing.assert_allclose(query.obsm["genept_scmpt_proba"].sum(axis=1), 1.0, rtol=1e-6)

    # the saved files: JSON config + tensors only (weights_only load works)
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["reps"] == ["X_pca", "X_pca_raw"] and cfg["widths"] == [50, 30]
    assert cfg["classes"] == query.uns["genept_scmpt"]["classes"]
    # 2 seeds of each network candidate the stack kept, one per logistic regression
    n_states = sum(1 if "linear" in n else 2 for n in uns["selection"]["weights"])
    assert len(torch.load(path / "weights.pt", weights_only=True)["state_dicts"]) == n_states

    model = ScMPTModel.load(path)
    q2 = query0.copy()
    annotate_scmpt(q2, model=model, label_key=LABEL, device="cpu")
    np.testing.assert_allclose(
        q2.obsm["genept_scmpt_proba"],
        query.obsm["genept_scmpt_proba"],
        atol=1e-6,
    )
    assert (q2.obs["genept_scmpt"] == query.obs["genept_scmpt"]).all()
    assert q2.uns["genept_scmpt"]["params"]["pretrained"] is True
    # a path works too, and predict_proba gives the same DataFrame
    q3 = query0.copy()
    annotate_scmpt(q3, model=str(path), key_added="again", device="cpu")
    pd.testing.assert_frame_equal(
        proba_frame(q3, "again"), model.predict_proba(query0, device="cpu")
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_scmpt_cuda_matches_cpu_inference(pbmc):
    ref, query = pbmc
    model = ScMPTModel.fit(
        ref,
        label_key=LABEL,
        reps=["X_pca", "X_pca_raw"],
        hidden=512,
        epochs_grid=(10,),
        lr_grid=(1e-3,),
        n_seeds=2,
        device="cuda",
    )
    on_gpu = model.predict_proba(query, device="cuda")
    on_cpu = model.predict_proba(query, device="cpu")
    np.testing.assert_allclose(on_gpu.to_numpy(), on_cpu.to_numpy(), atol=1e-4)
    out = annotate_scmpt(query, model=model, label_key=LABEL, device="cuda", copy=True)
    assert out.uns["genept_scmpt"]["params"]["device"] == "cuda"
    assert out.uns["genept_scmpt"]["metrics"]["accuracy"] > 0.6


def test_scmpt_three_branches_and_class_weight():
    rng = np.random.default_rng(1)
    n = 120
    y = np.repeat(["p", "q", "r"], [60, 40, 20])
    centers = {"p": 0.0, "q": 3.0, "r": -3.0}
    ref = ad.AnnData(
        np.zeros((n, 1)), obs=pd.DataFrame({"cell_type": y}, index=[f"c{i}" for i in range(n)])
    )
    for key, d in [("A", 4), ("B", 3), ("C", 2)]:
        ref.obsm[key] = np.array([centers[c] for c in y])[:, None] + rng.normal(size=(n, d))
    out = annotate_scmpt(
        ref,
        ref,
        reps=["A", "B", "C"],
        hidden=16,
        epochs_grid=(20,),
        lr_grid=(1e-2,),
        n_seeds=1,
        class_weight="balanced",
        device="cpu",
        copy=True,
    )
    assert out.uns["genept_scmpt"]["metrics"]["accuracy"] > 0.9
    assert "genept_scmpt" not in ref.obs


def test_scmpt_small_reference_falls_back():
    rng = np.random.default_rng(0)
    y = ["a", "a", "b", "b", "c", "c"]
    ref = ad.AnnData(np.zeros((6, 1)), obs=pd.DataFrame({"cell_type": y}, index=list("abcdef")))
    ref.obsm["A"] = rng.normal(size=(6, 3))
    ref.obsm["B"] = rng.normal(size=(6, 2))
    with pytest.warns(UserWarning, match="too small for a stratified validation split"):
        out = annotate_scmpt(
            ref,
            ref,
            reps=["A", "B"],
            hidden=8,
            epochs_grid=(3,),
            n_seeds=1,
            device="cpu",
            copy=True,
        )
    val = out.uns["genept_scmpt"]["validation"]
    assert np.isnan(val["accuracy_mean"]) and val["n_val"] == 0
    assert out.obs["genept_scmpt"].notna().all()


def test_errors_leave_adata_untouched(pbmc):
    ref, query = pbmc
    q = query.copy()
    q.obsm["X_pca"] = q.obsm["X_pca"][:, :10]
    with pytest.raises(ValueError, match="10 columns in `adata` but 50"):
        annotate_knn(q, ref, use_rep="X_pca", label_key=LABEL)
    with pytest.raises(ValueError, match="10 columns"):
        annotate_scmpt(q, ref, reps=["X_pca", "X_pca_raw"], label_key=LABEL)
    with pytest.raises(KeyError, match=r"X_nope.*X_pca_raw"):
        annotate_knn(q, ref, use_rep="X_nope", label_key=LABEL)
    with pytest.raises(KeyError, match="X_scGPT"):
        annotate_scmpt(q, ref, label_key=LABEL)  # default reps are absent
    with pytest.raises(KeyError, match="cell_type"):
        annotate_knn(q, ref, use_rep="X_pca_raw")
    assert not any(k.startswith("genept") for k in [*q.obs, *q.obsm, *q.uns])

    bad = ref.copy()
    bad.obs[LABEL] = bad.obs[LABEL].astype(object)
    bad.obs.iloc[:5, bad.obs.columns.get_loc(LABEL)] = np.nan
    q = query.copy()
    with pytest.warns(UserWarning, match="5 reference cells have no 'bulk_labels' label"):
        annotate_knn(q, bad, use_rep="X_pca", label_key=LABEL)
    assert q.uns["genept_knn"]["params"]["n_reference"] == len(ref) - 5

    bad.obs[LABEL] = np.nan
    with pytest.raises(ValueError, match="no labels"):
        annotate_knn(q, bad, use_rep="X_pca", label_key=LABEL)
    bad.obs[LABEL] = "only"
    with pytest.raises(ValueError, match="single class"):
        annotate_knn(q, bad, use_rep="X_pca", label_key=LABEL)
    with pytest.raises(ValueError, match="not both"):
        annotate_scmpt(q, ref, model=object())


@pytest.mark.filterwarnings(SLASH_WARNING)
def test_h5ad_round_trip(annotated, tmp_path):
    query, _ = annotated
    file = tmp_path / "q.h5ad"
    query.write_h5ad(file)
    back = ad.read_h5ad(file)
    for key in ["genept_knn", "genept_knn_ensemble", "genept_scmpt"]:
        # values, not index dtypes (pandas 3 reads string indexes back as another str dtype)
        pd.testing.assert_series_equal(back.obs[key], query.obs[key], check_index_type=False)
        np.testing.assert_allclose(back.obs[f"{key}_confidence"], query.obs[f"{key}_confidence"])
        proba = proba_frame(back, key)
        pd.testing.assert_frame_equal(proba, proba_frame(query, key), check_index_type=False)
        m0, m1 = query.uns[key]["metrics"], back.uns[key]["metrics"]
        assert m1["accuracy"] == m0["accuracy"]
        np.testing.assert_array_equal(m1["confusion_matrix"], m0["confusion_matrix"])
        assert list(m1["labels"]) == m0["labels"]
    assert (
        back.uns["genept_scmpt"]["hyperparameters"] == query.uns["genept_scmpt"]["hyperparameters"]
    )


# ------------------------------------------------------------------------------ plot
def test_confusion_plot(annotated, tmp_path):
    query, _ = annotated
    ax = plot_confusion(query, "genept_knn", show=False)
    img = np.asarray(ax.images[0].get_array())
    # each row label carries its class size: "CD34+ (n=3)"
    sized = [t.get_text().rsplit(" (n=", 1) for t in ax.get_yticklabels()]
    rows = [r for r, _ in sized]
    cols = [t.get_text() for t in ax.get_xticklabels()]
    assert set(rows) == set(query.obs[LABEL].astype(str)) and cols[: len(rows)] == rows
    m = query.uns["genept_knn"]["metrics"]
    cm = pd.DataFrame(m["confusion_matrix"], index=m["labels"], columns=m["labels"])
    assert [int(n.rstrip(")")) for _, n in sized] == cm.loc[rows].sum(1).astype(int).tolist()
    expected = cm.loc[rows, cols].to_numpy(float)
    np.testing.assert_allclose(img, expected / expected.sum(1, keepdims=True))
    assert ax.get_ylabel() == f"true ({LABEL})"
    figdir = sc.settings.figdir
    sc.settings.figdir = tmp_path
    try:
        ax = plot_confusion(query, "genept_scmpt", normalize=False, show=False, save="_s.png")
    finally:
        sc.settings.figdir = figdir
    assert ax.images[0].get_array().sum() == query.n_obs  # counts
    assert (tmp_path / "confusion_matrix_s.png").is_file()
    with pytest.raises(KeyError, match="annotator"):
        plot_confusion(query, "nope", show=False)


# ------------------------------------------------------------------------------ LLM
@pytest.fixture
def llm_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(gpt.settings, "cache_dir", tmp_path / "cache")
    return tmp_path / "cache"


@pytest.fixture
def server(chat_server):
    replies = {
        "MS4A1": "B cell",  # exact
        "CD3E": "  t CELL \n",  # other case and spaces
        "CD68": "Macrophage",  # not a candidate
        "NKG7": "It is most likely an NK cell.",  # one candidate mentioned
        "CD79A": "B cell or T cell",  # two candidates: not guessed
    }

    def respond(prompt: str) -> str:
        for gene, reply in replies.items():
            if f"Cell sentence: {gene} " in prompt:
                return reply
        return "?"

    return chat_server(respond)


CANDS = ["B cell", "T cell", "NK cell"]


def sentences_adata() -> ad.AnnData:
    obs = pd.DataFrame(
        {
            "genept_sentence": [
                "MS4A1 CD79B HLA-DRA",
                "CD3E CD3D IL7R",
                "CD68 LYZ CST3",
                "NKG7 GNLY PRF1",
                "CD79A CD3E CD74",
            ],
            "truth": ["B cell", "T cell", "T cell", "NK cell", "B cell"],
        },
        index=[f"cell{i}" for i in range(5)],
    )
    return ad.AnnData(np.zeros((5, 1)), obs=obs)


def test_parse_answer_rules():
    assert _parse_answer("b CELL", CANDS) == "B cell"
    assert _parse_answer('"NK cell".', CANDS) == "NK cell"
    assert _parse_answer("Macrophage", CANDS) == UNPARSED
    assert _parse_answer("B cell, not T cell", CANDS) == UNPARSED
    assert _parse_answer("not a TB cell", CANDS) == UNPARSED  # whole phrases only
    # a candidate inside a longer mentioned candidate does not count
    assert _parse_answer("this is a CD4+ T cell", [*CANDS, "CD4+ T cell"]) == "CD4+ T cell"
    assert _parse_answer(None, CANDS) == UNPARSED


def test_llm_prompt_parsing_cache(server, llm_cache, tmp_path):
    adata = sentences_adata()
    annotate_llm(adata, candidates=CANDS, api_key=KEY, base_url=server.url, label_key="truth")
    assert len(server.requests) == 5
    body = server.requests[0]
    assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0
    prompt = body["messages"][0]["content"]
    assert "MS4A1 CD79B HLA-DRA" in prompt and all(c in prompt for c in CANDS)
    assert all(a == f"Bearer {KEY}" for a in server.auth)

    labels = adata.obs["genept_llm"].astype(object).tolist()
    assert labels == ["B cell", "T cell", UNPARSED, "NK cell", UNPARSED]
    assert adata.obs["genept_llm_reply"].tolist()[2] == "Macrophage"
    np.testing.assert_array_equal(adata.obs["genept_llm_confidence"], [1, 1, 0, 1, 0])
    proba = proba_frame(adata, "genept_llm")
    assert list(proba.columns) == CANDS
    np.testing.assert_array_equal(proba.loc["cell1"], [0, 1, 0])
    np.testing.assert_array_equal(proba.loc["cell2"], [0, 0, 0])
    uns = adata.uns["genept_llm"]
    assert uns["metrics"]["accuracy"] == pytest.approx(3 / 5)
    assert uns["usage"]["n_requests"] == 5 and uns["usage"]["prompt_tokens"] == 500

    # a second run is answered from the cache: no request
    again = annotate_llm(
        sentences_adata(), candidates=CANDS, api_key=KEY, base_url=server.url, copy=True
    )
    assert len(server.requests) == 5
    assert again.uns["genept_llm"]["usage"]["n_cache_hits"] == 5
    assert again.obs["genept_llm"].equals(adata.obs["genept_llm"])
    # ... even without any key
    annotate_llm(sentences_adata(), candidates=CANDS, base_url=server.url, copy=True)

    # the key is in no file and not in uns
    file = tmp_path / "llm.h5ad"
    adata.write_h5ad(file)
    files = [file, *llm_cache.rglob("*")]
    assert any(f.suffix == ".sqlite" for f in files)
    for f in files:
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f
    assert KEY not in repr(dict(adata.uns))
    back = ad.read_h5ad(file)
    assert back.obs["genept_llm"].astype(object).tolist() == labels


def test_llm_max_cells_and_cost(server, llm_cache):
    adata = sentences_adata()
    with pytest.warns(UserWarning, match="annotating 2 of 5 cells"):
        annotate_llm(adata, candidates=CANDS, api_key=KEY, base_url=server.url, max_cells=2)
    assert len(server.requests) == 2
    assert adata.obs["genept_llm"].isna().tolist() == [False, False, True, True, True]
    assert np.isnan(proba_frame(adata, "genept_llm").loc["cell4"]).all()
    assert adata.obs["genept_llm_reply"].iloc[4] == ""

    # cost cap: each request costs 100 in + 5 out tokens at $1/M -> ~1e-4 $ per cell
    with pytest.warns(UserWarning, match="cost cap"):
        out = annotate_llm(
            sentences_adata(),
            candidates=CANDS,
            api_key=KEY,
            base_url=server.url,
            model="local-model",
            price_per_million=(1.0, 1.0),
            max_cost_usd=2.5e-4,
            copy=True,
        )
    assert 1 <= out.obs["genept_llm"].notna().sum() < 5
    with pytest.raises(ValueError, match="price_per_million"):
        annotate_llm(sentences_adata(), candidates=CANDS, model="local-model", max_cost_usd=1.0)


def test_llm_two_stage_top3(llm_cache, chat_server):
    seen: list[str] = []

    def respond(prompt: str) -> str:
        seen.append(prompt)
        if prompt.startswith("Given the following reasoning"):
            return "Monocyte"
        return "REASONING: CD14 and LYZ point to monocytes."

    s = chat_server(respond)
    try:
        adata = sentences_adata()[:2].copy()
        classes = ["B cell", "Monocyte", "NK cell", "T cell"]
        adata.obsm["prev_proba"] = pd.DataFrame(
            [[0.1, 0.5, 0.15, 0.25], [0.4, 0.3, 0.0, 0.3]], index=adata.obs_names, columns=classes
        )
        annotate_llm(adata, top_k_from="prev", api_key=KEY, base_url=s.url)
    finally:
        s.close()
    assert len(s.requests) == 4  # reasoning + answer per cell
    first, second = seen[0], seen[1]
    assert "['Monocyte', 'T cell', 'NK cell']" in first and "B cell" not in first
    assert "MS4A1 CD79B HLA-DRA" in first and "go with the first option" in first
    assert "REASONING: CD14 and LYZ" in second and "['Monocyte', 'T cell', 'NK cell']" in second
    # cell 1: top-3 is B cell, then the tie Monocyte/T cell in column order
    assert "['B cell', 'Monocyte', 'T cell']" in seen[2]
    assert adata.obs["genept_llm"].astype(str).tolist() == ["Monocyte", "Monocyte"]
    assert adata.obs["genept_llm_candidates"].iloc[0] == "Monocyte | T cell | NK cell"
    assert adata.obs["genept_llm_reasoning"].iloc[0].startswith("REASONING")
    assert list(proba_frame(adata, "genept_llm").columns) == classes


def test_llm_error_redacts_key(llm_cache, chat_server):
    s = chat_server(lambda p: "B cell")
    s.status = 401
    adata = sentences_adata()
    try:
        with pytest.raises(RuntimeError) as info:
            annotate_llm(adata, candidates=CANDS, api_key=KEY, base_url=s.url, max_retries=0)
    finally:
        s.close()
    assert KEY not in str(info.value)
    assert "genept_llm" not in adata.obs and "genept_llm" not in adata.uns


def test_scmpt_save_detects_torn_pair(tmp_path):
    """Weights of one save next to the config of another are refused, not mixed."""
    import shutil

    rng = np.random.default_rng(0)
    ref = ad.AnnData(
        np.zeros((60, 2), dtype=np.float32),
        obs=pd.DataFrame({"y": np.repeat(["a", "b", "c"], 20)}, index=[f"c{i}" for i in range(60)]),
    )
    ref.obsm["X_a"] = rng.standard_normal((60, 4)).astype(np.float32)
    ref.obsm["X_b"] = rng.standard_normal((60, 3)).astype(np.float32)
    m = gpt.models.ScMPTModel.fit(
        ref,
        label_key="y",
        reps=["X_a", "X_b"],
        hidden=8,
        epochs_grid=(2,),
        lr_grid=(1e-2,),
        n_seeds=1,
        device="cpu",
    )
    m.save(tmp_path / "one")
    m.save(tmp_path / "two")
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["config.json", "weights.pt"]
    gpt.models.ScMPTModel.load(tmp_path / "one")
    shutil.copy(tmp_path / "two" / "weights.pt", tmp_path / "one" / "weights.pt")
    with pytest.raises(ValueError, match="different saves"):
        gpt.models.ScMPTModel.load(tmp_path / "one")


def test_scmpt_params_shared_by_fit_and_annotate():
    """One parameter object: validated once, listed in both signatures and docs."""
    import inspect

    from genept.models import ScMPTParams

    names = ScMPTParams.names()
    assert len(names) == 23 and "lr_grid" in names and "selection_groups" in names
    assert {"selection_folds", "linear_c"} <= set(names)
    for fn in (ScMPTModel.fit, annotate_scmpt):
        sig = inspect.signature(fn).parameters
        assert all(sig[n].kind is inspect.Parameter.KEYWORD_ONLY for n in names)
        assert sig["n_seeds"].default == 3 and sig["hidden"].default == (512,)
        assert sig["selection_folds"].default == "auto" and sig["linear_c"].default == (1.0,)
        assert "Values searched for the initial learning rate" in fn.__doc__
        assert "On how many folds of the reference" in fn.__doc__
        assert "{scmpt_params}" not in fn.__doc__
    p = ScMPTParams(hidden=[16, 8], lr_grid=1e-3, class_weight={"a": 2})
    assert p.hidden == (16, 8) and p.grids["lr"] == (1e-3,)
    assert ScMPTParams.from_options(p, n_seeds=1).n_seeds == 1
    assert ScMPTParams.from_options(p, n_seeds=1).hidden == (16, 8)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['lr'\]"):
        annotate_scmpt(sentences_adata(), sentences_adata(), lr=1e-3)
    for bad, match in [
        ({"lr_grid": ()}, "lr_grid is empty"),
        ({"epochs_grid": (0,)}, "positive"),
        ({"val_size": 1.0}, "val_size"),
        ({"selection_metric": "auc"}, "selection_metric"),
        ({"class_weight": "equal"}, "class_weight"),
        ({"hidden": 0}, "hidden"),
    ]:
        with pytest.raises(ValueError, match=match):
            ScMPTParams(**bad)


def test_mlp_save_records_the_folder(tmp_path):
    """annotate_mlp(save=) saves the probe; the saved model predicts what was written."""
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b"], 40)
    X = rng.normal(size=(80, 4)).astype(np.float32) + (y == "b")[:, None] * 3
    ref = ad.AnnData(np.zeros((80, 1), np.float32), obs=pd.DataFrame({"t": y}))
    ref.obs_names = [f"r{i}" for i in range(80)]
    ref.obsm["X_e"] = X
    q = ref.copy()
    gpt.tl.annotate_mlp(q, ref, use_rep="X_e", label_key="t", save=tmp_path / "probe")
    saved = q.uns["genept_mlp"]["params"]["saved_to"]
    m = gpt.models.ScMPTModel.load(saved)
    proba = q.obsm["genept_mlp_proba"]
    proba = proba.to_numpy() if hasattr(proba, "to_numpy") else np.asarray(proba)
    np.testing.assert_allclose(m.predict_proba(q).to_numpy(), proba, atol=1e-6)
    (tmp_path / "file").write_text("x")
    with pytest.raises((ValueError, FileExistsError, NotADirectoryError)):
        gpt.tl.annotate_mlp(q, ref, use_rep="X_e", label_key="t", save=tmp_path / "file")
