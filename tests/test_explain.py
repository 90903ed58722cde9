"""gpt.tl.explain_annotation (IG, LIME), gpt.bm.marker_recovery, gpt.pl.attributions.

A small synthetic setup with the packaged MiniLM (offline): cells of type "B" always
express MS4A1 (highest), cells of type "T" never do; the other genes are random in both.
An MLP probe on GenePT-s then separates the types by the presence of the gene name
MS4A1, which both attribution methods must find.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import genept as gpt
from genept.models import ScMPTModel, ScMPTParams

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

GENES = ["MS4A1", "ACTB", "GAPDH", "RPL3", "MALAT1", "TPT1", "EEF1A1", "B2M", "FTL", "TMSB4X"]
PLANTED = "MS4A1"


def _params(**kw):
    base = dict(
        hidden=(16,), lr_grid=(1e-3,), epochs_grid=(20,), batch_size_grid=(16,),
        decay_grid=(1.0,), val_size=0.0, n_seeds=1, early_stopping=False,
        random_state=0, device="cpu",
    )  # fmt: skip
    base.update(kw)
    return ScMPTParams(**base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, minilm):
    """adata with GenePT-s, an MLP probe saved to a folder and its annotation in obs/uns."""
    import torch

    torch.set_num_threads(1)
    gpt.settings.progress = False
    rng = np.random.default_rng(0)
    n = 40
    X = np.zeros((n, len(GENES)), dtype=np.float32)
    labels = np.array(["B"] * (n // 2) + ["T"] * (n // 2))
    for i in range(n):
        others = rng.choice(np.arange(1, len(GENES)), size=5, replace=False)
        X[i, others] = rng.uniform(0.5, 2.0, size=5)
        if labels[i] == "B":
            X[i, 0] = 3.0
    adata = ad.AnnData(sparse.csr_matrix(X), obs=pd.DataFrame({"cell_type": labels}))
    adata.obs_names = [f"c{i}" for i in range(n)]
    adata.var_names = GENES
    gpt.tl.embed_cells(adata, method="s", model=minilm, cache=False)
    folder = tmp_path_factory.mktemp("model") / "mlp"
    model = ScMPTModel.fit(adata, label_key="cell_type", reps=["X_genept_s"], params=_params())
    model.save(folder)
    gpt.tl.annotate_scmpt(adata, model=model, key_added="genept_mlp", device="cpu")
    # not yet saturated (probabilities ~0.97-0.99): IG converges in a few dozen steps
    return adata, model, folder


@pytest.fixture
def explain(minilm):
    """explain_annotation with the session's MiniLM (loaded once)."""

    def run(*args, **kw):
        kw.setdefault("encoder", minilm)
        return gpt.tl.explain_annotation(*args, **kw)

    return run


def test_ig_completeness_and_layout(trained, explain):
    adata, model, folder = trained
    a = adata.copy()
    cells = ["c0", "c1", "c25"]
    explain(a, "genept_mlp", "ig", model=folder, groupby="cell_type", cells=cells, n_steps=48)
    p = a.uns["genept_mlp_attributions_params"]["ig"]
    # f(x) is the model's own probability of the cell's true class (independent path)
    proba = model.predict_proba(a[cells], device="cpu")
    want = [proba.loc[c, t] for c, t in zip(cells, ["B", "B", "T"], strict=True)]
    np.testing.assert_allclose(p["f_x"], want, atol=1e-5)
    # completeness: per-cell attributions sum to f(x) - f(baseline)
    M = a.obsm["genept_mlp_attributions_ig"]
    assert sparse.issparse(M) and M.shape == (a.n_obs, a.n_vars)
    rows = a.obs_names.get_indexer(cells)
    sums = np.asarray(M[rows].sum(1)).ravel()
    gap = np.asarray(p["f_x"]) - np.asarray(p["f_baseline"])
    assert np.abs(gap).max() > 0.05  # a non-trivial difference to explain
    # (the probe's ReLU kinks slow the quadrature's convergence: a few percent at 48 steps)
    np.testing.assert_allclose(sums, gap, atol=2e-3 + 0.06 * np.abs(gap).max())
    # only genes of each cell's sentence get attributions; unexplained rows are empty
    expressed = a.X[rows].toarray() > 0
    assert not (M[rows].toarray()[~expressed]).any()
    assert M[np.setdiff1d(np.arange(a.n_obs), rows)].nnz == 0
    # the tidy table: per group mean over explained cells (absent gene counts 0)
    t = a.uns["genept_mlp_attributions"]
    assert list(t.columns) == [
        "method", "group", "gene", "attribution", "n_cells", "n_cells_group"
    ]  # fmt: skip
    b = t[t["group"] == "B"].set_index("gene")
    dense = M[rows[:2]].toarray()
    np.testing.assert_allclose(
        b["attribution"].to_numpy(), dense[:, a.var_names.get_indexer(b.index)].mean(0), rtol=1e-5
    )
    assert (b["n_cells_group"] == 2).all()
    assert b.loc[PLANTED, "n_cells"] == 2


def test_ig_finer_steps_converge(trained, explain):
    adata, model, _ = trained
    errs = []
    for steps in (2, 24):
        a = adata.copy()
        explain(
            a, "genept_mlp", "ig", model=model, groupby="cell_type", cells=["c3"], n_steps=steps
        )
        errs.append(abs(a.uns["genept_mlp_attributions_params"]["ig"]["completeness_error"][0]))
    assert errs[1] < errs[0] or errs[1] < 1e-3


@pytest.mark.parametrize("method", ["lime", "ig"])
def test_planted_gene_is_top(trained, method, explain):
    adata, model, _ = trained
    a = adata.copy()
    explain(
        a, "genept_mlp", method, model=model, groupby="cell_type", groups=["B"], n_cells=4,
        n_samples=60, n_steps=16, random_state=0,
    )  # fmt: skip
    t = a.uns["genept_mlp_attributions"]
    top = t[(t["group"] == "B") & (t["method"] == method)].iloc[0]
    assert top["gene"] == PLANTED
    assert top["attribution"] > 0


def test_deterministic_with_seed_and_both_methods_in_one_table(trained, explain):
    adata, model, _ = trained
    outs = []
    for seed in (0, 0, 1):
        a = adata.copy()
        explain(
            a, "genept_mlp", "lime", model=model, groupby="cell_type", n_cells=3,
            n_samples=30, random_state=seed,
        )  # fmt: skip
        outs.append(a)
    t0, t1, t2 = (o.uns["genept_mlp_attributions"] for o in outs)
    pd.testing.assert_frame_equal(t0, t1)
    p0, p2 = (o.uns["genept_mlp_attributions_params"]["lime"] for o in (outs[0], outs[2]))
    assert p0["cells"] != p2["cells"] or not t0.equals(t2)
    # a second method adds its rows next to the first one's
    a = outs[0]
    explain(a, "genept_mlp", "ig", model=model, groupby="cell_type", n_cells=3, n_steps=4)
    t = a.uns["genept_mlp_attributions"]
    assert set(t["method"]) == {"ig", "lime"}
    pd.testing.assert_frame_equal(t[t["method"] == "lime"].reset_index(drop=True), t0)
    assert set(a.uns["genept_mlp_attributions_params"]) == {"ig", "lime"}


def test_results_survive_h5ad(trained, tmp_path, explain):
    adata, model, _ = trained
    a = adata.copy()
    out = explain(
        a, "genept_mlp", "lime", model=model, groupby="cell_type", n_cells=1, n_samples=10,
        copy=True,
    )  # fmt: skip
    assert "genept_mlp_attributions" in out.uns and "genept_mlp_attributions" not in a.uns
    explain(a, "genept_mlp", "lime", model=model, groupby="cell_type", n_cells=2, n_samples=20)
    a.write_h5ad(tmp_path / "x.h5ad")
    b = ad.read_h5ad(tmp_path / "x.h5ad")
    t = b.uns["genept_mlp_attributions"]
    assert isinstance(t, pd.DataFrame)
    np.testing.assert_allclose(
        t["attribution"].to_numpy(), a.uns["genept_mlp_attributions"]["attribution"].to_numpy()
    )
    assert (
        b.obsm["genept_mlp_attributions_lime"] != a.obsm["genept_mlp_attributions_lime"]
    ).nnz == 0


def test_scmpt_text_branch_other_branch_fixed(trained, explain):
    adata, _, _ = trained
    a = adata.copy()
    rng = np.random.default_rng(1)
    a.obsm["X_expr"] = rng.normal(size=(a.n_obs, 4)).astype(np.float32)
    m = ScMPTModel.fit(a, label_key="cell_type", reps=["X_expr", "X_genept_s"], params=_params())
    gpt.tl.annotate_scmpt(a, model=m, key_added="genept_scmpt", device="cpu")
    explain(a, "genept_scmpt", "ig", model=m, groupby="cell_type", cells=["c2", "c30"], n_steps=32)
    p = a.uns["genept_scmpt_attributions_params"]["ig"]
    assert p["rep"] == "X_genept_s"
    proba = m.predict_proba(a[["c2", "c30"]], device="cpu")
    np.testing.assert_allclose(p["f_x"], [proba.loc["c2", "B"], proba.loc["c30", "T"]], atol=1e-5)
    gap = np.asarray(p["f_x"]) - np.asarray(p["f_baseline"])
    np.testing.assert_allclose(p["completeness_error"], 0, atol=2e-3 + 0.03 * np.abs(gap).max())


def test_errors_name_the_explainable_annotators(trained):
    adata, model, _ = trained
    a = adata.copy()
    gpt.tl.annotate_knn(a, a, use_rep="X_genept_s", label_key="cell_type", key_added="knn")
    with pytest.raises(ValueError, match=r"annotate_mlp.*annotate_scmpt"):
        gpt.tl.explain_annotation(a, "knn", "ig", model=model)
    # a GenePT-w-only model: nothing to attribute
    a.obsm["X_genept_w"] = np.asarray(a.obsm["X_genept_s"])[:, ::-1].copy()
    a.uns["genept_w"] = {"params": {"method": "w"}}
    mw = ScMPTModel.fit(a, label_key="cell_type", reps=["X_genept_w"], params=_params())
    gpt.tl.annotate_scmpt(a, model=mw, key_added="w_mlp", device="cpu")
    with pytest.raises(ValueError, match=r"GenePT-w.*annotate_mlp.*annotate_scmpt"):
        gpt.tl.explain_annotation(a, "w_mlp", "lime", model=mw)
    with pytest.raises(ValueError, match="GenePT-w"):
        gpt.tl.explain_annotation(a, "w_mlp", "lime", model=mw, rep="X_genept_w")
    with pytest.raises(ValueError, match="needs the trained model"):
        gpt.tl.explain_annotation(a, "genept_mlp", "ig")
    with pytest.raises(ValueError, match="method must be"):
        gpt.tl.explain_annotation(a, "genept_mlp", "shap", model=model)
    with pytest.raises(KeyError, match="annotate first"):
        gpt.tl.explain_annotation(a, "nothing_here", "ig", model=model)
    with pytest.raises(ValueError, match="n_steps"):
        gpt.tl.explain_annotation(a, "genept_mlp", "ig", model=model, n_steps=0)
    assert "genept_mlp_attributions" not in a.uns  # nothing half-written


def test_wrong_encoder_is_reported(trained, explain):
    adata, _, _ = trained
    a = adata.copy()
    a.obsm["X_genept_s"] = np.roll(np.asarray(a.obsm["X_genept_s"]), 1, axis=0)  # not these cells'
    m = ScMPTModel.fit(a, label_key="cell_type", reps=["X_genept_s"], params=_params())
    gpt.tl.annotate_scmpt(a, model=m, key_added="genept_mlp", device="cpu")
    with pytest.raises(ValueError, match="do not embed to"):
        explain(a, "genept_mlp", "ig", model=m, n_cells=2, n_steps=2)


def test_marker_recovery_hand_computed():
    t = pd.DataFrame(
        {
            "method": ["ig"] * 5 + ["lime"] * 5,
            "group": "NK",
            "gene": ["NKG7", "ACTB", "GNLY", "RPL3", "KLRD1", "GNLY", "KLRD1", "ACTB", "NKG7", "RPL3"],
            "attribution": [5, 4, 3, 2, 1, 5, 4, 3, 2, 1],
        }
    )  # fmt: skip
    markers = {"NK": {"nkg7", "GNLY", "KLRD1", "PRF1"}}
    r = gpt.bm.marker_recovery(t, markers, k=3).iloc[0]
    # candidates: 5 genes of the sentences, 3 of them markers; a random 3 hold 3*3/5
    assert (r["n_candidates"], r["n_marker_candidates"]) == (5, 3)
    assert r["random_expected"] == pytest.approx(1.8)
    assert (r["ig_n_markers"], r["ig_markers"]) == (2, "NKG7, GNLY")
    assert (r["lime_n_markers"], r["lime_markers"]) == (2, "GNLY, KLRD1")
    # top sets {NKG7, ACTB, GNLY} and {GNLY, KLRD1, ACTB}: 2 shared of 4
    assert r["jaccard"] == pytest.approx(0.5)
    assert r["markers_both"] == "GNLY"
    # P(X >= 2) for X ~ Hypergeom(N=5, K=3, n=3): (3*2 + 1) / 10
    assert r["ig_p_value"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="no group of the table has markers"):
        gpt.bm.marker_recovery(t, {"B": {"MS4A1"}})


def test_marker_sets_and_cellmarker(tmp_path):
    cm = tmp_path / "cm.csv"
    cm.write_text(
        'Tissue,CT,Gene\nBlood,B cell,"MS4A1, CD79A"\nLung,B cell,CD19\nBlood,T cell,CD3E\n'
    )
    long = gpt.bm.cellmarker_markers(cm, tissue="Blood")
    assert long.to_dict("list") == {
        "tissue": ["Blood", "Blood", "Blood"],
        "cell_type": ["B cell", "B cell", "T cell"],
        "gene": ["MS4A1", "CD79A", "CD3E"],
    }
    pang = pd.DataFrame({"cell_type": ["B cells", "B cells"], "gene": ["cd19", "PAX5"]})
    m = gpt.bm.marker_sets(
        pang, long, groups={"B": {"panglao": ["B cells"], "cellmarker": ["B cell"]}}
    )
    assert m == {"B": {"CD19", "PAX5", "MS4A1", "CD79A"}}
    with pytest.raises(KeyError, match="B celss"):
        gpt.bm.marker_sets(pang, groups={"B": {"panglao": ["B celss"]}})


@pytest.mark.skipif(
    not (SHARED_DATA / "markers" / "PanglaoDB_markers_27_Mar_2020.tsv").exists(),
    reason="../shared/data/markers not present",
)
def test_pbmc68k_marker_types_exist_in_the_real_tables():
    d = SHARED_DATA / "markers"
    cm = gpt.bm.cellmarker_markers(d / "CellMarker2_Human_Aug.csv")
    m = gpt.bm.marker_sets(
        d / "PanglaoDB_markers_27_Mar_2020.tsv", cm, groups=gpt.bm.PBMC68K_MARKER_TYPES
    )
    assert {"CD14", "LYZ"} <= m["CD14+ Monocyte"] and "NKG7" in m["CD56+ NK"]
    assert "MS4A1" in m["CD19+ B"]


def test_plot_highlights_markers(trained):
    import matplotlib

    matplotlib.use("Agg")
    t = pd.DataFrame(
        {"method": "ig", "group": ["B", "B", "T"], "gene": ["MS4A1", "ACTB", "CD3E"],
         "attribution": [0.5, 0.1, 0.3]}
    )  # fmt: skip
    axes = gpt.pl.attributions(t, markers={"B": {"MS4A1"}}, n_genes=5, show=False)
    ax = axes.ravel()[0]
    labels = [lab.get_text() for lab in ax.get_yticklabels()]
    assert labels == ["MS4A1", "ACTB"]
    assert list(ax.get_yticks()) == [1, 0]  # longest bar on top
    colors = [lab.get_color() for lab in ax.get_yticklabels()]
    assert colors[0] == "#d62728" and colors[1] != "#d62728"
    assert "1/2 markers" in ax.get_title()
    with pytest.raises(KeyError, match="not in the attribution table"):
        gpt.pl.attributions(t, groups=["NK"], show=False)


def test_selection_without_the_text_branch_is_refused(trained):
    """An scMPT model whose selection kept only the expression branch ignores the
    sentences: explaining it is refused with the reason, before any attribution."""
    import copy

    adata, _, _ = trained
    a = adata.copy()
    a.obsm["X_expr"] = np.random.default_rng(2).normal(size=(a.n_obs, 4)).astype(np.float32)
    m = ScMPTModel.fit(a, label_key="cell_type", reps=["X_expr", "X_genept_s"], params=_params())
    alone = ScMPTModel.fit(a, label_key="cell_type", reps=["X_expr"], params=_params())
    kept = copy.copy(m)
    kept.branches, kept.state_dicts = [0], alone.state_dicts
    kept.selection = {"chosen": "X_expr"}
    np.testing.assert_allclose(
        kept.predict_proba(a, device="cpu").to_numpy(),
        alone.predict_proba(a, device="cpu").to_numpy(),
        atol=1e-6,
    )
    gpt.tl.annotate_scmpt(a, model=kept, key_added="sel", device="cpu")
    with pytest.raises(ValueError, match=r"selection kept 'X_expr'.*select='fusion'"):
        gpt.tl.explain_annotation(a, "sel", "ig", model=kept)
    assert "sel_attributions" not in a.uns


def test_encoder_loaded_in_inference_mode_still_explains(trained):
    """A model whose weights were created under torch.inference_mode (loaded lazily by a
    first encode) still gives gradients; encode() itself no longer loads it there."""
    import torch

    from genept.encoders import SentenceTransformerEncoder

    fresh = SentenceTransformerEncoder("all-MiniLM-L6-v2", device="cpu")
    fresh.encode(["CD3E MS4A1"], cache=False, show_progress=False)
    assert not any(t.is_inference() for t in [*fresh.model.parameters(), *fresh.model.buffers()])
    tainted = SentenceTransformerEncoder("all-MiniLM-L6-v2", device="cpu")
    with torch.inference_mode():
        tainted.model  # noqa: B018 - loads the model: its buffers become inference tensors
    assert any(b.is_inference() for b in tainted.model.buffers())
    adata, model, _ = trained
    a = adata.copy()
    gpt.tl.explain_annotation(
        a, "genept_mlp", "ig", model=model, encoder=tainted, cells=["c0"], n_steps=48
    )
    p = a.uns["genept_mlp_attributions_params"]["ig"]
    gap = np.asarray(p["f_x"]) - np.asarray(p["f_baseline"])
    np.testing.assert_allclose(p["completeness_error"], 0, atol=2e-3 + 0.06 * np.abs(gap).max())


@pytest.mark.parametrize("weights", [None, [0.8, 0.2]])
def test_ig_on_a_fusion_plus_linear_ensemble(trained, explain, weights):
    """A model whose networks differ (an MLP and a logistic regression, averaged with
    equal weights or a stack's): integrated gradients of the average still sum to
    f(x) - f(baseline), and f(x) is the model's weighted probability."""
    import torch

    adata, model, _ = trained
    a = adata.copy()
    g = torch.Generator().manual_seed(0)
    lin = {
        "head.weight": torch.randn(2, model.widths[0], generator=g) * 0.3,
        "head.bias": torch.zeros(2),
    }
    both = ScMPTModel(
        reps=model.reps, widths=model.widths, classes=model.classes, hidden=model.hidden,
        state_dicts=[model.state_dicts[0], lin], member_hidden=[model.hidden, []],
        means=model.means, stds=model.stds, member_weights=weights,
    )  # fmt: skip
    gpt.tl.annotate_scmpt(a, model=both, key_added="both", device="cpu")
    cells = ["c0", "c25"]
    explain(a, "both", "ig", model=both, groupby="cell_type", cells=cells, n_steps=48)
    p = a.uns["both_attributions_params"]["ig"]
    proba = both.predict_proba(a[cells], device="cpu")
    want = [proba.loc[c, t] for c, t in zip(cells, ["B", "T"], strict=True)]
    np.testing.assert_allclose(p["f_x"], want, atol=1e-5)
    rows = a.obs_names.get_indexer(cells)
    sums = np.asarray(a.obsm["both_attributions_ig"][rows].sum(1)).ravel()
    gap = np.asarray(p["f_x"]) - np.asarray(p["f_baseline"])
    np.testing.assert_allclose(sums, gap, atol=2e-3 + 0.06 * np.abs(gap).max())


def test_sentences_of_a_gene_mask_are_rebuilt(trained, explain, minilm):
    """GenePT-s built from var['highly_variable'] genes: the same sentences are explained."""
    adata, model, folder = trained
    a = adata.copy()
    hv = np.ones(a.n_vars, bool)
    masked = ["ACTB", "B2M", "FTL"]
    hv[a.var_names.get_indexer(masked)] = False
    a.var["highly_variable"] = hv
    # the annotation's text branch rebuilt from the masked genes (the model is unchanged)
    gpt.tl.embed_cells(a, method="s", model=minilm, cache=False)
    assert a.uns["genept_s"]["params"]["mask_var"] == "highly_variable"
    gpt.tl.annotate_scmpt(a, model=model, key_added="genept_mlp", device="cpu")
    cells = ["c0", "c1", "c25"]
    explain(a, "genept_mlp", "ig", model=folder, groupby="cell_type", cells=cells, n_steps=8)
    M = a.obsm["genept_mlp_attributions_ig"].toarray()
    rows = a.obs_names.get_indexer(cells)
    # only genes of the masked sentences are credited; each explained cell has some
    assert not M[:, a.var_names.get_indexer(masked)].any()
    assert (np.abs(M[rows]).sum(1) > 0).all()
    # without the mask column the sentences cannot be rebuilt: a clear error
    del a.var["highly_variable"]
    with pytest.raises(ValueError, match="store it as a var column"):
        explain(a, "genept_mlp", "ig", model=folder, groupby="cell_type", cells=cells, n_steps=4)


def test_explaining_runs_with_nested_openmp_off(trained, explain, nested_openmp, monkeypatch):
    """The per-cell attribution loop runs inside openmp_unnested (see that function)."""
    import genept.tl._explain as ex

    lib, seen = nested_openmp, []
    real = ex._ig_cell

    def spy(*a, **k):
        seen.append(lib.levels)
        return real(*a, **k)

    monkeypatch.setattr(ex, "_ig_cell", spy)
    adata, model, _ = trained
    explain(adata.copy(), "genept_mlp", "ig", model=model, cells=["c0", "c25"], n_steps=8)
    assert seen == [1, 1] and lib.levels == 255
