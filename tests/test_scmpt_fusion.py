"""scMPT model selection (fusion vs each branch alone), thread sizing, selection save/load,
empty cells and label dtypes (issue 15, item 3)."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

import genept as gpt
from genept._core import _device
from genept._core._device import available_cores, torch_n_threads, torch_threads
from genept.models import ScMPTModel
from genept.models.scmpt._fit import train_linear
from genept.tl import annotate_mlp, annotate_scmpt

C_GRID = (0.01, 0.1, 1.0)

# the model selection of select="best" (select="stack", the default: test_scmpt_stack.py)
FAST = dict(
    hidden=32, epochs_grid=(40,), lr_grid=(3e-3,), patience=8, n_jobs=1, device="cpu", select="best"
)


@pytest.fixture(autouse=True)
def _quiet():
    progress, gpt.settings.progress = gpt.settings.progress, False
    yield
    gpt.settings.progress = progress


def _adata(y, reps: dict[str, np.ndarray], prefix="c") -> ad.AnnData:
    n = len(y)
    a = ad.AnnData(
        np.zeros((n, 1), np.float32),
        obs=pd.DataFrame({"cell_type": y}, index=[f"{prefix}{i}" for i in range(n)]),
    )
    for k, v in reps.items():
        a.obsm[k] = v.astype(np.float32)
    return a


def noise_branch_data(n=240, seed=0):
    """Branch A: 4 overlapping Gaussian clusters (informative); branch B: 300-dim noise."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.array(list("abcd")), n // 4)
    centers = rng.normal(scale=1.3, size=(4, 6))
    a = centers[np.searchsorted(list("abcd"), y)] + rng.normal(size=(n, 6))
    b = rng.normal(size=(n, 300))
    return _adata(y, {"A": a, "B": b})


def complementary_data(n=240, seed=0):
    """A separates a/b (c and d look alike there), B separates c/d (a and b alike)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.array(list("abcd")), n // 4)
    ca = {"a": [4, 0], "b": [-4, 0], "c": [0, 4], "d": [0, 4]}
    cb = {"a": [0, 4], "b": [0, 4], "c": [4, 0], "d": [-4, 0]}
    a = np.array([ca[c] for c in y], float) + rng.normal(size=(n, 2))
    b = np.array([cb[c] for c in y], float) + rng.normal(size=(n, 2))
    return _adata(
        y, {"A": np.c_[a, rng.normal(size=(n, 3))], "B": np.c_[b, rng.normal(size=(n, 3))]}
    )


# ------------------------------------------------------------------- model selection
def test_selection_drops_a_pure_noise_branch():
    ref = noise_branch_data()
    m = ScMPTModel.fit(ref, reps=["A", "B"], n_seeds=2, **FAST)
    sel = m.selection
    cand = sel["candidates"]
    assert set(cand) == {"fusion", "A", "B", "linear", "fusion+linear"}
    # the noise branch alone is near chance (4 classes), the informative one is not
    assert cand["B"]["val_accuracy"] < 0.45 < 0.7 < cand["A"]["val_accuracy"]
    assert cand["A"]["val_accuracy"] > cand["fusion"]["val_accuracy"]
    assert sel["chosen"] == "A" and sel["reps"] == ["A"] and m.branches == [0]
    # the winner's first seed is the selection run itself
    assert m.validation["accuracy_per_seed"][0] == cand["A"]["val_accuracy"]
    # the network reads only A: its first layer is 6 wide
    assert m.state_dicts[0]["branches.0.0.weight"].shape == (32, 6)
    # the grid lists every (candidate, configuration) run
    assert m.grid["candidate"] == ["fusion", "A", "B", "linear"]
    assert m.grid["val_accuracy"][1] == cand["A"]["val_accuracy"]

    # the paper's behaviour stays reachable: the fusion only
    paper = ScMPTModel.fit(ref, reps=["A", "B"], n_seeds=1, **{**FAST, "select": "fusion"})
    assert paper.selection["chosen"] == "fusion" and paper.branches == [0, 1]
    assert list(paper.selection["candidates"]) == ["fusion"]
    assert paper.selection["candidates"]["fusion"]["val_accuracy"] == pytest.approx(
        cand["fusion"]["val_accuracy"]
    )


def test_selection_keeps_the_fusion_of_complementary_branches():
    ref = complementary_data()
    m = ScMPTModel.fit(ref, reps=["A", "B"], n_seeds=1, **FAST)
    cand = m.selection["candidates"]
    # each branch alone confuses one pair of classes (about 3/4 right); together all 4
    assert cand["A"]["val_accuracy"] < 0.85 and cand["B"]["val_accuracy"] < 0.85
    assert cand["fusion"]["val_accuracy"] > 0.95 and cand["linear"]["val_accuracy"] > 0.95
    # no candidate beats the fusion+linear average by a standard error: it is kept
    assert m.selection["chosen"] == "fusion+linear" and m.branches == [0, 1]
    assert m.member_hidden == [[32], []]
    # the logistic regression of the average is refit on every reference cell: it is
    # scikit-learn's on the standardised inputs (independent reference computation)
    from sklearn.linear_model import LogisticRegression

    assert m.selection["refit_on_all"] is True
    z = np.hstack(
        [(ref.obsm[k] - mu) / sd for k, mu, sd in zip("AB", m.means, m.stds, strict=True)]
    )
    y = ref.obs["cell_type"].to_numpy()
    assert m.hyperparameters["C"] == 1.0  # scikit-learn's default, recorded
    want = LogisticRegression(C=1.0, max_iter=1000).fit(z, y).predict_proba(z)
    lin = ScMPTModel(
        reps=["A", "B"], widths=m.widths, classes=m.classes, hidden=[],
        state_dicts=[m.state_dicts[1]], means=m.means, stds=m.stds,
    )  # fmt: skip
    np.testing.assert_allclose(lin.predict_proba(ref).to_numpy(), want, atol=1e-4)
    # without the refit the average keeps the regression fitted on the training part
    kept = ScMPTModel.fit(ref, reps=["A", "B"], n_seeds=1, refit=False, **FAST)
    assert kept.selection["chosen"] == "fusion+linear" and kept.member_hidden == [[32], []]
    assert not kept.selection["refit_on_all"]
    assert not torch.equal(kept.state_dicts[1]["head.weight"], m.state_dicts[1]["head.weight"])


def test_selection_margin_against_the_average():
    from genept.models.scmpt._train import margins_over_default

    # known answer: 4 validation cells, the default right on 2, a candidate on 3
    y = torch.tensor([0, 1, 0, 1])
    default = {
        "val_proba": np.array([[0.9, 0.1], [0.6, 0.4], [0.4, 0.6], [0.2, 0.8]]),
        "val_accuracy": 0.5,
        "val_loss": 0.0,
    }
    cand = {"val_proba": np.array([[0.8, 0.2], [0.3, 0.7], [0.7, 0.3], [0.6, 0.4]]),
            "val_accuracy": 0.75, "val_loss": 0.0}  # fmt: skip
    ((diff, se),) = margins_over_default({"c": cand}, default, y, "accuracy").values()
    assert diff == pytest.approx(0.25) and se == pytest.approx(np.sqrt(0.5 * 0.5 / 4))
    ((diff, se),) = margins_over_default({"c": cand}, default, y, "loss").values()
    nll = -np.log([0.9, 0.4, 0.4, 0.8])
    assert diff == 0.0 and se == pytest.approx(nll.std(ddof=1) / 2)

    # a noise branch: "A" alone beats the average clearly; with an unreachable margin the
    # average is kept, and with margin 0 the plain best on validation wins
    ref = noise_branch_data()
    m = ScMPTModel.fit(ref, reps=["A", "B"], n_seeds=1, **FAST)
    vs = m.selection["candidates"]["A"]["vs_default"]
    assert m.selection["chosen"] == "A" and vs["diff"] > vs["se"] > 0
    keep = ScMPTModel.fit(ref, reps=["A", "B"], n_seeds=1, selection_margin=1e9, **FAST)
    assert keep.selection["chosen"] == "fusion+linear" and keep.member_hidden == [[32], []]
    cand = keep.selection["candidates"]
    best = max(cand, key=lambda n: (cand[n]["val_accuracy"], -cand[n]["val_loss"]))
    # (on the first fold alone, where `val_accuracy` was measured)
    plain = ScMPTModel.fit(
        ref, reps=["A", "B"], n_seeds=1, selection_margin=0, selection_folds=1, **FAST
    )
    assert cand[plain.selection["chosen"]]["val_accuracy"] == cand[best]["val_accuracy"]
    with pytest.raises(ValueError, match="selection_margin"):
        ScMPTModel.fit(ref, reps=["A", "B"], selection_margin=-1, **FAST)


def test_extra_folds_hold_out_disjoint_stratified_cells():
    from genept.models.scmpt._folds import extra_folds, stratified_split

    codes = np.repeat(np.arange(4), [100, 60, 30, 11])
    split = stratified_split(codes, 0.2, 0)
    folds = extra_folds(codes, split, 5, 5, 0)
    assert len(folds) == 4
    held = [split[1]] + [va for _, va in folds]
    # every labelled cell is held out exactly once over the five folds
    np.testing.assert_array_equal(np.sort(np.concatenate(held)), np.arange(codes.size))
    for tr, va in folds:
        assert np.intersect1d(tr, va).size == 0 and tr.size + va.size == codes.size
        # stratified: each class's share of the held-out cells within one cell of 1/5
        np.testing.assert_allclose(np.bincount(codes[va], minlength=4), [20, 12, 6, 2.2], atol=1)
    assert [len(extra_folds(codes, split, k, 5, 0)) for k in (1, 2, 3)] == [0, 1, 2]
    # val_size 0.5: the second fold swaps the two halves
    half = stratified_split(codes, 0.5, 0)
    ((tr, va),) = extra_folds(codes, half, 2, 2, 0)
    np.testing.assert_array_equal(va, half[0])
    np.testing.assert_array_equal(tr, half[1])


def test_selection_folds_auto_and_validation():
    from genept.models import ScMPTParams
    from genept.models.scmpt._params import SELECTION_CELLS

    p = ScMPTParams()
    assert p.selection_folds == "auto" and p.max_folds() == 5 and SELECTION_CELLS == 400
    # known answers: ceil(400 / validation cells), at most 1 / val_size
    assert [p.n_folds(n) for n in (600, 400, 300, 150, 100, 20)] == [1, 1, 2, 3, 4, 5]
    assert ScMPTParams(val_size=0.3).max_folds() == 3
    assert ScMPTParams(selection_folds=3).n_folds(1000) == 3
    with pytest.raises(ValueError, match="between 1 and 5"):
        ScMPTParams(selection_folds=6)
    with pytest.raises(ValueError, match="between 1 and 5"):
        ScMPTParams(selection_folds=0)
    for bad in ("all", True, 2.5):
        with pytest.raises(TypeError, match="selection_folds must be 'auto'"):
            ScMPTParams(selection_folds=bad)


def test_selection_pools_every_fold():
    ref = noise_branch_data()  # 240 cells: a 48-cell split, five folds
    m = ScMPTModel.fit(ref, reps=["A", "B"], n_seeds=1, **FAST)
    sel = m.selection
    assert sel["folds"] == 5 and sel["chosen"] == "A"
    cand = sel["candidates"]
    for name in ("fusion", "A", "B", "linear", "fusion+linear"):
        assert cand[name]["pooled"]["folds"] == 5 and cand[name]["pooled"]["n_val"] == 240
    # the margins are measured on the pooled cells: the average's standard error
    acc = cand["fusion+linear"]["pooled"]["accuracy"]
    vs = cand["A"]["vs_default"]
    assert vs["se"] == pytest.approx(np.sqrt(acc * (1 - acc) / 240))
    assert vs["diff"] == pytest.approx(cand["A"]["pooled"]["accuracy"] - acc)
    # the noise branch is near chance on all 240 cells, the informative one is not
    assert cand["B"]["pooled"]["accuracy"] < 0.4 < 0.7 < cand["A"]["pooled"]["accuracy"]
    # one fold: the first split alone, as before (no pooled records)
    one = ScMPTModel.fit(ref, reps=["A", "B"], n_seeds=1, selection_folds=1, **FAST)
    assert one.selection["folds"] == 1 and "pooled" not in one.selection["candidates"]["A"]
    assert one.selection["candidates"]["A"]["val_accuracy"] == cand["A"]["val_accuracy"]


def test_annotate_scmpt_reports_the_selection():
    ref = noise_branch_data()
    query = noise_branch_data(seed=1)
    annotate_scmpt(query, ref, reps=["A", "B"], n_seeds=1, **FAST)
    uns = query.uns["genept_scmpt"]
    assert uns["selection"]["chosen"] == "A"
    assert uns["params"]["select"] == "best"
    assert set(uns["selection"]["candidates"]) == {"fusion", "A", "B", "linear", "fusion+linear"}
    # the query was predicted by the A-only network: it matches a model fitted on A alone
    alone = ScMPTModel.fit(ref, reps=["A"], n_seeds=1, **FAST)
    np.testing.assert_allclose(
        query.obsm["genept_scmpt_proba"], alone.predict_proba(query).to_numpy(), atol=1e-6
    )


def linear_data(n=240, seed=0):
    """4 classes separated by one direction each in 40 dimensions, split over A and B."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.array(list("abcd")), n // 4)
    x = rng.normal(size=(n, 40))
    x[np.arange(n), np.searchsorted(list("abcd"), y) * 10] += 3.0
    return _adata(y, {"A": x[:, :20], "B": x[:, 20:]})


def test_linear_candidate_is_a_logistic_regression_on_both_inputs(tmp_path):
    ref = linear_data()
    m = ScMPTModel.fit(ref, reps=["A", "B"], n_seeds=1, **FAST)
    cand = m.selection["candidates"]
    assert cand["linear"]["reps"] == ["A", "B"] and cand["linear"]["hidden"] == []
    # classes a, b live in A and c, d in B: a single branch cannot tell the other pair
    assert max(cand["A"]["val_accuracy"], cand["B"]["val_accuracy"]) < 0.8
    assert cand["linear"]["val_accuracy"] > 0.8
    # a linear model, forced and checked against its closed form: softmax(z W^T + b)
    paper = ScMPTModel.fit(ref, reps=["A", "B"], n_seeds=1, **FAST)
    lin = ScMPTModel(
        reps=["A", "B"], widths=[20, 20], classes=paper.classes, hidden=[],
        state_dicts=[{"head.weight": torch.ones(4, 40) * torch.arange(40.0) / 40,
                      "head.bias": torch.tensor([0.1, -0.2, 0.3, 0.0])}],
        means=paper.means, stds=paper.stds,
    )  # fmt: skip
    q = linear_data(seed=1)
    z = np.c_[
        (q.obsm["A"] - paper.means[0]) / paper.stds[0],
        (q.obsm["B"] - paper.means[1]) / paper.stds[1],
    ]
    logits = z @ (np.ones((4, 40)) * np.arange(40.0) / 40).T + [0.1, -0.2, 0.3, 0.0]
    ref_p = np.exp(logits - logits.max(1, keepdims=True))
    ref_p /= ref_p.sum(1, keepdims=True)
    np.testing.assert_allclose(lin.predict_proba(q).to_numpy(), ref_p, atol=1e-5)

    # the fusion+linear ensemble: an MLP and that regression, averaged half and half
    mlp = paper.state_dicts[0]
    both = ScMPTModel(
        reps=["A", "B"], widths=[20, 20], classes=paper.classes, hidden=paper.hidden,
        state_dicts=[mlp, lin.state_dicts[0]], member_hidden=[paper.hidden, []],
        means=paper.means, stds=paper.stds,
    )  # fmt: skip
    alone = ScMPTModel(
        reps=["A", "B"], widths=[20, 20], classes=paper.classes, hidden=paper.hidden,
        state_dicts=[mlp], means=paper.means, stds=paper.stds,
    )  # fmt: skip
    np.testing.assert_allclose(
        both.predict_proba(q).to_numpy(),
        (alone.predict_proba(q).to_numpy() + ref_p) / 2,
        atol=1e-5,
    )
    both.save(tmp_path / "both")
    back = ScMPTModel.load(tmp_path / "both")
    assert back.member_hidden == [paper.hidden, []]
    pd.testing.assert_frame_equal(back.predict_proba(q), both.predict_proba(q))
    with pytest.raises(ValueError, match="member_hidden has 1 entries for 2"):
        ScMPTModel(
            reps=["A", "B"], widths=[20, 20], classes=paper.classes, hidden=[],
            state_dicts=[mlp, mlp], member_hidden=[[]], means=paper.means, stds=paper.stds,
        )  # fmt: skip


def test_linear_candidate_takes_the_C_of_lowest_validation_loss():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    # few cells, three informative features among 100 noisy ones: C=1 over-fits (its
    # validation log-loss is 1.06 against 0.84-0.91), stronger L2 wins on validation
    rng = np.random.default_rng(0)
    n, d = 120, 100
    y = np.repeat(np.arange(3), n // 3)
    x = rng.standard_normal((n, d))
    x[:, :3] += 1.5 * np.eye(3)[y]
    tr, va = np.arange(n) % 4 != 0, np.arange(n) % 4 == 0
    t = lambda a: [torch.from_numpy(a.astype(np.float32))]  # noqa: E731
    yt = torch.from_numpy(y)
    _, info = train_linear(
        t(x[tr]), yt[tr], t(x[va]), yt[va], n_classes=3, class_weight=None, device="cpu",
        C=C_GRID,
    )  # fmt: skip
    # independent reference: scikit-learn's validation log-loss of each C
    losses = {
        c: log_loss(y[va], LogisticRegression(C=c, max_iter=1000).fit(x[tr], y[tr]).predict_proba(x[va]))
        for c in C_GRID
    }  # fmt: skip
    assert info["C"] == min(losses, key=losses.get)
    assert info["val_loss"] == pytest.approx(losses[info["C"]], rel=1e-3)
    assert info["C"] < 1.0  # the over-fitting default is not the one kept here
    # without validation cells there is nothing to choose by: the last (given) C
    _, info = train_linear(
        t(x), yt, None, None, n_classes=3, class_weight=None, device="cpu", C=C_GRID
    )
    assert info["C"] == C_GRID[-1]


def test_linear_c_option_is_validated_recorded_and_refit():
    from sklearn.linear_model import LogisticRegression

    from genept.models import ScMPTParams

    assert ScMPTParams().linear_c == (1.0,)
    for bad in (0, -1.0, (), (0.1, float("nan"))):
        with pytest.raises(ValueError, match="linear_c must be positive"):
            ScMPTParams(linear_c=bad)
    ref = linear_data(seed=2)
    m = ScMPTModel.fit(ref, reps=["A", "B"], n_seeds=1, linear_c=C_GRID, selection_margin=1e9,
                       **FAST)  # fmt: skip
    lin = m.selection["candidates"]["linear"]
    C = lin["hyperparameters"]["C"]
    assert C in C_GRID and m.hyperparameters["C"] == C
    # the average's regression is that C's, refit on every reference cell
    z = np.hstack(
        [(ref.obsm[k] - mu) / sd for k, mu, sd in zip("AB", m.means, m.stds, strict=True)]
    )
    want = LogisticRegression(C=C, max_iter=1000).fit(z, ref.obs["cell_type"].to_numpy())
    got = ScMPTModel(
        reps=["A", "B"], widths=m.widths, classes=m.classes, hidden=[],
        state_dicts=[m.state_dicts[1]], means=m.means, stds=m.stds,
    )  # fmt: skip
    np.testing.assert_allclose(got.predict_proba(ref).to_numpy(), want.predict_proba(z), atol=1e-4)


def test_ensemble_candidate_scores_the_average_of_fusion_and_linear():
    ref = linear_data(seed=3)
    m = ScMPTModel.fit(ref, reps=["A", "B"], n_seeds=2, **FAST)
    cand = m.selection["candidates"]
    ens = cand["fusion+linear"]
    assert ens["reps"] == ["A", "B"] and ens["hyperparameters"]["C"] == 1.0
    assert ens["hyperparameters"]["lr"] == cand["fusion"]["hyperparameters"]["lr"]
    # never worse on validation than the chosen candidate, which is the best of all
    best = max(c["val_accuracy"] for c in cand.values())
    assert cand[m.selection["chosen"]]["val_accuracy"] == best
    n_lin = sum(h == [] for h in m.member_hidden)
    if m.selection["chosen"] == "fusion+linear":
        assert len(m.state_dicts) == 4 and n_lin == 2
    else:
        assert len(m.state_dicts) == 2


def test_params_validate_select_and_n_jobs():
    from genept.models import ScMPTParams

    assert ScMPTParams().select == "stack" and ScMPTParams().n_jobs is None
    with pytest.raises(ValueError, match="select must be 'stack'"):
        ScMPTParams(select="all")
    with pytest.raises(ValueError, match="n_jobs"):
        ScMPTParams(n_jobs=0)


# ------------------------------------------------------------------- save / load
def test_saved_model_keeps_the_selection(tmp_path):
    ref = noise_branch_data()
    m = ScMPTModel.fit(ref, reps=["A", "B"], n_seeds=2, **FAST)
    m.save(tmp_path / "m")
    back = ScMPTModel.load(tmp_path / "m")
    assert back.branches == m.branches == [0]
    assert back.selection == json.loads(json.dumps(m.selection))
    assert back.selection["chosen"] == "A"
    q = noise_branch_data(seed=2)
    pd.testing.assert_frame_equal(back.predict_proba(q), m.predict_proba(q))
    out = annotate_scmpt(q, model=tmp_path / "m", copy=True, n_jobs=1)
    assert out.uns["genept_scmpt"]["selection"]["chosen"] == "A"


def test_version_1_models_load_as_fusions(tmp_path):
    """Folders saved before the selection existed (no branches/selection) still load."""
    ref = complementary_data()
    m = ScMPTModel.fit(ref, reps=["A", "B"], n_seeds=1, **{**FAST, "select": "fusion"})
    m.save(tmp_path / "old")
    cfg_file = tmp_path / "old" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    for k in ("branches", "selection"):
        del cfg[k]
    cfg["version"] = 1
    cfg_file.write_text(json.dumps(cfg))
    old = ScMPTModel.load(tmp_path / "old")
    assert old.branches == [0, 1] and old.selection == {}
    pd.testing.assert_frame_equal(old.predict_proba(ref), m.predict_proba(ref))


# ------------------------------------------------------------------- threads
def test_thread_sizing_is_restored(monkeypatch):
    from genept.models.scmpt import _train

    before = torch.get_num_threads()
    target = 2 if before != 2 else 1
    seen = []
    real = _train.train_one

    def spy(*a, **k):
        seen.append(torch.get_num_threads())
        return real(*a, **k)

    monkeypatch.setattr(_train, "train_one", spy)
    ref = complementary_data(n=80)
    m = ScMPTModel.fit(ref, reps=["A", "B"], n_seeds=1, **{**FAST, "n_jobs": target})
    assert seen and set(seen) == {target}
    assert torch.get_num_threads() == before
    # prediction too, and after an error inside the block
    m.predict_proba(ref, n_jobs=target)
    assert torch.get_num_threads() == before
    monkeypatch.setattr(_train, "train_one", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        ScMPTModel.fit(ref, reps=["A", "B"], n_seeds=1, **{**FAST, "n_jobs": target})
    assert torch.get_num_threads() == before


def test_thread_count_follows_free_cores_and_settings(monkeypatch):
    monkeypatch.setattr(_device, "available_cores", lambda: 8)
    monkeypatch.setattr(_device, "busy_cores", lambda *a, **k: 3.0)
    assert torch_n_threads() == 5  # 8 cores, 3 kept busy by other processes
    monkeypatch.setattr(_device, "busy_cores", lambda *a, **k: 20.0)
    assert torch_n_threads() == 1  # a saturated machine: one thread, never 0
    monkeypatch.setattr(_device, "busy_cores", lambda *a, **k: 0.0)
    assert torch_n_threads() == 8
    monkeypatch.setattr(gpt.settings, "n_jobs", 3)
    assert torch_n_threads() == 3  # settings.n_jobs wins over auto
    assert torch_n_threads(2) == 2  # an explicit n_jobs wins over settings
    with torch_threads(2) as n:
        assert n == 2 == torch.get_num_threads()


def test_available_and_busy_cores_are_sane():
    n = available_cores()
    assert (
        1
        <= n
        <= (len(_device.os.sched_getaffinity(0)) if hasattr(_device.os, "sched_getaffinity") else n)
    )
    assert _device.busy_cores(samples=2, interval=0.0) >= 0


# ------------------------------------------------------------------- bad input
@pytest.mark.parametrize("which", ["A", "B", "both"])
def test_empty_cells_get_no_label_scmpt(which):
    """A cell all-zero in one branch (or both) is not labelled, whichever branch won."""
    ref = complementary_data()
    query = complementary_data(n=40, seed=3)
    for k in ("A", "B") if which == "both" else (which,):
        query.obsm[k][[0, 5]] = 0
    annotate_scmpt(query, ref, reps=["A", "B"], n_seeds=1, **FAST)
    lab = query.obs["genept_scmpt"]
    assert lab.isna().tolist() == [i in (0, 5) for i in range(40)]
    assert (query.obs["genept_scmpt_confidence"].iloc[[0, 5]] == 0).all()
    assert np.isnan(query.obsm["genept_scmpt_proba"][[0, 5]]).all()
    assert np.isfinite(query.obsm["genept_scmpt_proba"][1:5]).all()
    assert query.uns["genept_scmpt"]["n_empty"] == 2
    # the metrics count only labelled cells
    assert query.uns["genept_scmpt"]["metrics"]["n_cells"] == 38


def test_empty_branch_unused_by_the_winner_still_unlabelled():
    ref = noise_branch_data()
    query = noise_branch_data(n=40, seed=4)
    query.obsm["B"][3] = 0  # empty in the noise branch, which the chosen model ignores
    annotate_scmpt(query, ref, reps=["A", "B"], n_seeds=1, **FAST)
    assert query.uns["genept_scmpt"]["selection"]["chosen"] == "A"
    assert pd.isna(query.obs["genept_scmpt"].iloc[3])
    assert query.obs["genept_scmpt"].drop(query.obs_names[3]).notna().all()


def test_empty_cells_get_no_label_mlp():
    ref = complementary_data()
    query = complementary_data(n=40, seed=3)
    query.obsm["A"][[2, 7]] = 0
    annotate_mlp(query, ref, use_rep="A", hidden=32, epochs=30, lr=3e-3, device="cpu", n_jobs=1)
    assert query.obs["genept_mlp"].isna().tolist() == [i in (2, 7) for i in range(40)]
    assert np.isnan(query.obsm["genept_mlp_proba"][[2, 7]]).all()
    assert (query.obs["genept_mlp_confidence"].iloc[[2, 7]] == 0).all()


def _relabel(adata, mapping, dtype=None):
    vals = [mapping[v] for v in adata.obs["cell_type"]]
    adata.obs["cell_type"] = pd.Series(vals, index=adata.obs_names, dtype=dtype)
    return adata


@pytest.mark.parametrize(
    "ref_map, ref_dtype, query_map, query_dtype",
    [
        # int codes in the reference, strings in the query
        (
            {"a": 0, "b": 1, "c": 2, "d": 3},
            "int64",
            {"a": "0", "b": "1", "c": "2", "d": "3"},
            object,
        ),
        # categorical reference, object query
        (
            {"a": "T", "b": "B", "c": "NK", "d": "Mono"},
            "category",
            {"a": "T", "b": "B", "c": "NK", "d": "Mono"},
            object,
        ),
        # float reference (1.0), int query (1)
        (
            {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0},
            "float64",
            {"a": 1, "b": 2, "c": 3, "d": 4},
            "int64",
        ),
        # int categorical reference, float query with a missing label
        (
            {"a": 1, "b": 2, "c": 3, "d": 4},
            "category",
            {"a": 1.0, "b": 2.0, "c": 3.0, "d": np.nan},
            "float64",
        ),
    ],
)
@pytest.mark.parametrize("method", ["mlp", "scmpt"])
def test_query_metrics_compare_labels_across_dtypes(
    method, ref_map, ref_dtype, query_map, query_dtype
):
    ref = _relabel(complementary_data(), ref_map, ref_dtype)
    query = complementary_data(n=80, seed=5)
    truth_letters = query.obs["cell_type"].to_numpy().copy()
    query = _relabel(query, query_map, query_dtype)
    if method == "mlp":
        annotate_mlp(query, ref, use_rep="A", hidden=32, epochs=30, lr=3e-3, device="cpu", n_jobs=1)
        key = "genept_mlp"
    else:
        annotate_scmpt(query, ref, reps=["A", "B"], n_seeds=1, **FAST)
        key = "genept_scmpt"
    # independent reference: map predictions back to the letters they stand for
    back = {str(v if not isinstance(v, float) else int(v)): k for k, v in ref_map.items()}
    pred_letters = np.array([back[str(p)] for p in query.obs[key]])
    labelled = np.array([not pd.isna(query_map[t]) for t in truth_letters])
    expected = float((pred_letters == truth_letters)[labelled].mean())
    m = query.uns[key]["metrics"]
    assert m["n_cells"] == int(labelled.sum())
    assert m["accuracy"] == pytest.approx(expected)
    assert expected > 0.6  # A alone gets a/b right: the comparison is not all-miss


def test_refit_retrains_the_chosen_network_on_every_reference_cell():
    ref = noise_branch_data()
    a = ScMPTModel.fit(ref, reps=["A"], n_seeds=1, **FAST)
    b = ScMPTModel.fit(ref, reps=["A"], n_seeds=1, refit=False, **FAST)
    # the same selection and validation (networks trained on the training part) ...
    assert a.validation["accuracy_per_seed"] == b.validation["accuracy_per_seed"]
    assert a.selection["refit_on_all"] and not b.selection["refit_on_all"]
    # ... but the kept network is retrained on all cells for the chosen epoch count:
    # the same as training on all cells (no split) for that many epochs
    e = a.validation["best_epoch_per_seed"][0]
    assert 1 <= e <= 40
    with pytest.warns(UserWarning, match="too small for a stratified validation split"):
        c = ScMPTModel.fit(ref, reps=["A"], n_seeds=1, **{**FAST, "epochs_grid": (e,)}, val_size=0)
    for k, v in a.state_dicts[0].items():
        torch.testing.assert_close(v, c.state_dicts[0][k])
    assert any(not torch.equal(v, b.state_dicts[0][k]) for k, v in a.state_dicts[0].items())
