"""scMPT's stacking (``select="stack"``): weights, members written over every input, I/O."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

import genept as gpt
from genept.models import ScMPTModel, ScMPTParams
from genept.models.scmpt._net import make_net
from genept.models.scmpt._stack import (
    CROSSFIT_PARTS,
    choose_option,
    crossfit_loglik,
    deal,
    embed_member,
    stack_options,
    stack_plan,
    stack_weights,
)
from genept.tl import annotate_scmpt
from test_scmpt_fusion import FAST, complementary_data, noise_branch_data

FAST = {**FAST, "select": "stack"}  # the default


@pytest.fixture(autouse=True)
def _quiet():
    progress, gpt.settings.progress = gpt.settings.progress, False
    yield
    gpt.settings.progress = progress


# ------------------------------------------------------------------- the weights
def _loglik(P, w):
    return float(np.log(np.clip(P @ w, 1e-300, None)).mean())


def test_stack_weights_maximise_the_mixture_likelihood():
    """Against an independent optimiser over the simplex (scipy SLSQP)."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(0)
    # three candidates, each right on a different part of the cells
    P = rng.uniform(0.05, 0.4, size=(300, 3))
    P[:100, 0] += 0.55
    P[100:180, 1] += 0.55
    P[180:, 2] += 0.3
    w = stack_weights(P)
    assert w.shape == (3,) and np.all(w >= 0) and w.sum() == pytest.approx(1.0)
    ref = minimize(
        lambda v: -_loglik(P, v),
        np.full(3, 1 / 3),
        method="SLSQP",
        bounds=[(0, 1)] * 3,
        constraints=[{"type": "eq", "fun": lambda v: v.sum() - 1}],
    ).x
    assert _loglik(P, w) == pytest.approx(_loglik(P, ref), abs=1e-6)
    np.testing.assert_allclose(w, ref, atol=5e-3)
    # every candidate helps here: none is dropped
    assert np.all(w > 0.1)


def test_stack_weights_edge_cases():
    # a candidate better on every cell takes all the weight
    P = np.array([[0.9, 0.5, 0.2], [0.8, 0.5, 0.1], [0.7, 0.6, 0.3]])
    np.testing.assert_allclose(stack_weights(P), [1, 0, 0], atol=1e-6)
    # identical candidates share it equally; one candidate gets 1
    np.testing.assert_allclose(stack_weights(np.full((5, 2), 0.3)), [0.5, 0.5])
    np.testing.assert_allclose(stack_weights(np.full((5, 1), 0.3)), [1.0])
    with pytest.raises(ValueError, match="cells, candidates"):
        stack_weights(np.ones(4))
    # tiny weights are dropped and the rest renormalised
    plan = stack_plan(["f", "A", "B"], np.array([0.6, 0.395, 0.005]))
    assert plan == pytest.approx({"f": 0.6 / 0.995, "A": 0.395 / 0.995})


def test_stack_weights_with_cell_weights_equal_duplicated_cells():
    """A cell of weight 2 counts as that cell twice (class weights of the loss)."""
    rng = np.random.default_rng(3)
    P = rng.uniform(0.05, 1.0, size=(60, 3))
    s = rng.integers(0, 4, size=60)
    dup = np.repeat(P, s, axis=0)
    np.testing.assert_allclose(stack_weights(P, sample_weight=s), stack_weights(dup), atol=1e-6)
    for bad in (np.ones(5), -np.ones(60), np.zeros(60)):
        with pytest.raises(ValueError, match="sample_weight"):
            stack_weights(P, sample_weight=bad)
    # balanced class weights reach the stack
    ref = complementary_data()
    m = ScMPTModel.fit(ref, reps=["A", "B"], n_seeds=1, class_weight="balanced", **FAST)
    assert m.selection["chosen"] == "stack"
    assert sum(m.selection["weights"].values()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("branches", "hidden"), [([1], [8]), ([0], [8, 4]), ([2], []), ([0, 2], [])]
)
def test_a_member_over_every_input_computes_the_same(branches, hidden):
    in_dims, n_classes = [3, 5, 4], 6
    net = make_net([in_dims[b] for b in branches], hidden, n_classes, seed=1)
    full = make_net(in_dims, hidden, n_classes)
    full.load_state_dict(embed_member(net.state_dict(), branches, hidden, in_dims, n_classes))
    xs = [torch.randn(7, d) for d in in_dims]
    with torch.no_grad():
        want = net([xs[b] for b in branches])
        got = full(xs)
        # the inputs it does not read change nothing
        other = [x if i in branches else x + 100 for i, x in enumerate(xs)]
        got_other = full(other)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_other, want)


# ------------------------------------------------------- which candidates are stacked
def test_deal_is_stratified_and_balanced():
    labels = np.repeat([0, 1, 2], [23, 7, 2])
    parts = deal(labels, 5, seed=3)
    assert set(parts) == set(range(5))
    sizes = np.bincount(parts)
    assert sizes.max() - sizes.min() <= 1  # 32 cells -> 7, 7, 6, 6, 6
    for c in range(3):  # each label spread as evenly as it can be
        per = np.bincount(parts[labels == c], minlength=5)
        assert per.max() - per.min() <= 1
    np.testing.assert_array_equal(parts, deal(labels, 5, seed=3))  # seeded
    assert not np.array_equal(parts, deal(labels, 5, seed=4))


def test_crossfit_loglik_fits_each_part_on_the_others():
    rng = np.random.default_rng(0)
    P = rng.uniform(0.05, 1, size=(40, 3))
    parts = np.arange(40) % 4
    got = crossfit_loglik(P, parts)
    for j in range(4):  # independent recomputation, part by part
        w = stack_weights(P[parts != j])
        w = np.where(w >= 0.01, w, 0.0)
        w /= w.sum()
        np.testing.assert_allclose(got[parts == j], np.log(P[parts == j] @ w))
    # one candidate: its own log-probabilities
    np.testing.assert_allclose(crossfit_loglik(P[:, [1]], parts), np.log(P[:, 1]))


def test_stack_options_list_each_input_alone_then_all():
    cands = [
        ("fusion", [0, 1, 2], [8]),
        *[(k, [i], [8]) for i, k in enumerate("ABC")],
        *[(f"{k} (linear)", [i], []) for i, k in enumerate("ABC")],
        ("linear", [0, 1, 2], []),
    ]
    opts = stack_options(cands)
    assert list(opts) == [
        "A", "B", "C", "A + A (linear)", "B + B (linear)", "C + C (linear)", "stack"
    ]  # fmt: skip
    assert opts["stack"] == [c[0] for c in cands]
    # networks without hidden layers: an input's only candidate is listed once
    flat = [("fusion", [0, 1], []), ("A", [0], []), ("B", [1], [])]
    assert stack_options(flat) == {"A": ["A"], "B": ["B"], "stack": ["fusion", "A", "B"]}
    # an input called "stack" keeps its name; the set of every candidate gets another
    named = [("fusion", [0, 1], []), ("stack", [0], []), ("B", [1], [])]
    assert stack_options(named) == {
        "stack": ["stack"], "B": ["B"], "stack(all)": ["fusion", "stack", "B"]
    }  # fmt: skip


def test_choose_option_keeps_the_simplest_set_within_the_margin():
    rng = np.random.default_rng(1)
    n = 200
    labels = np.arange(n) % 4
    good = rng.uniform(0.6, 0.95, n)
    # "B" adds nothing to "A" (the same probabilities): the single network is kept
    order = ["A", "B", "fusion"]
    opts = {"A": ["A"], "B": ["B"], "stack": order}
    tie = np.stack([good, good, good], 1)
    kept, table = choose_option(tie, order, opts, labels)
    assert kept == "A" and table["A"]["deficit"] == pytest.approx(0.0, abs=1e-9)
    # a fusion that is right where each branch is unsure: the full stack, by many SEs
    a = np.where(labels < 2, 0.9, 0.3)
    b = np.where(labels < 2, 0.3, 0.9)
    sharp = np.stack([a, b, np.full(n, 0.95)], 1)
    kept, table = choose_option(sharp, order, opts, labels)
    assert kept == "stack"
    assert table["A"]["deficit"] > 5 * table["A"]["se"] > 0
    assert table["stack"]["loglik"] == pytest.approx(np.log(0.95))
    # a set a little better than the simplest one but within noise: kept with margin 0
    slightly = np.stack([good, np.clip(good + rng.normal(0.01, 0.1, n), 0.05, 1), good], 1)
    by_loglik = max(
        opts, key=lambda o: choose_option(slightly, order, opts, labels)[1][o]["loglik"]
    )
    assert choose_option(slightly, order, opts, labels, margin=0)[0] == by_loglik
    assert choose_option(slightly, order, opts, labels, margin=1e6)[0] == "A"
    # the parts are the library's (seeded by the model's random_state)
    assert CROSSFIT_PARTS == 5


# ------------------------------------------------------------------- the model
def test_stack_weights_out_a_pure_noise_branch_and_predicts_the_weighted_mix(tmp_path):
    ref = noise_branch_data()
    m = ScMPTModel.fit(ref, reps=["A", "B"], n_seeds=2, **FAST)
    sel = m.selection
    assert sel["chosen"] == "stack" and sel["reps"] == ["A", "B"] and m.branches == [0, 1]
    raw = sel["candidates"]["stack"]["weights"]
    # the fusion, each branch alone (an MLP and a logistic regression), the linear fusion
    assert set(raw) == {"fusion", "A", "B", "A (linear)", "B (linear)", "linear"}
    assert sum(raw.values()) == pytest.approx(1.0)
    # the noise branch alone is near chance: (almost) no weight; the informative one most
    assert raw["B"] + raw["B (linear)"] < 0.05
    assert raw["A"] + raw["A (linear)"] > 0.5
    # and the sets compared: the noise adds nothing, so the stack keeps A's own candidates
    options = sel["candidates"]["stack"]["options"]
    assert list(options) == ["A", "B", "A + A (linear)", "B + B (linear)", "stack"]
    assert sel["candidates"]["stack"]["kept"] in {"A", "A + A (linear)"}
    assert options["B"]["deficit"] > 10 * options["B"]["se"]
    plan = sel["weights"]
    assert set(plan) <= {"A", "A (linear)"}
    assert sum(plan.values()) == pytest.approx(1.0) and all(v >= 0.01 for v in plan.values())
    # members: two seeds per network candidate, one per logistic regression
    n_members = sum(1 if "linear" in n else 2 for n in plan)
    assert len(m.state_dicts) == len(m.member_weights) == len(m.member_hidden) == n_members
    # each member is one candidate: which branches it reads tells which; their weights
    # add up to the candidate's
    got: dict[str, float] = {}
    for st, hid, w in zip(m.state_dicts, m.member_hidden, m.member_weights, strict=True):
        if hid == []:  # a logistic regression: columns 0-5 read A, 6-305 read B
            head = st["head.weight"].abs()
            reads = tuple(b for b, cols in enumerate((head[:, :6], head[:, 6:])) if cols.sum() > 0)
            name = {(0, 1): "linear", (0,): "A (linear)", (1,): "B (linear)"}[reads]
        else:
            reads = tuple(b for b in (0, 1) if st[f"branches.{b}.0.weight"].abs().sum() > 0)
            name = {(0, 1): "fusion", (0,): "A", (1,): "B"}[reads]
        got[name] = got.get(name, 0.0) + w
    assert got == pytest.approx(plan)
    # predict_proba is the weighted mix of the members (independent recomputation)
    q = noise_branch_data(seed=2)
    proba = m.predict_proba(q).to_numpy()
    xs = [
        torch.from_numpy((q.obsm[k] - mu) / sd)
        for k, mu, sd in zip("AB", m.means, m.stds, strict=True)
    ]
    want = np.zeros_like(proba)
    for st, hid, w in zip(m.state_dicts, m.member_hidden, m.member_weights, strict=True):
        net = make_net(m.widths, hid, len(m.classes))
        net.load_state_dict(st)
        with torch.no_grad():
            want += w * torch.softmax(net(xs), 1).double().numpy()
    np.testing.assert_allclose(proba, want, atol=1e-6)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    # on new cells of the same clusters the stack is as good as the informative branch
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=1.3, size=(4, 6))  # noise_branch_data(seed=0)'s clusters
    y_new = np.repeat(np.array(list("abcd")), 100)
    obs = pd.DataFrame({"cell_type": y_new}, index=[f"n{i}" for i in range(400)])
    new = ad.AnnData(np.zeros((400, 1), np.float32), obs=obs)
    rng = np.random.default_rng(7)
    new.obsm["A"] = (
        centers[np.searchsorted(list("abcd"), y_new)] + rng.normal(size=(400, 6))
    ).astype(np.float32)
    new.obsm["B"] = rng.normal(size=(400, 300)).astype(np.float32)
    only_a = ScMPTModel.fit(ref, reps=["A"], n_seeds=2, **FAST)
    acc = lambda model: (model.predict_proba(new).idxmax(axis=1).to_numpy() == y_new).mean()  # noqa: E731
    assert acc(m) > 0.7 and acc(m) >= acc(only_a) - 0.05
    # save / load keeps the weights and the predictions
    m.save(tmp_path / "m")
    back = ScMPTModel.load(tmp_path / "m")
    assert back.member_weights == pytest.approx(m.member_weights)
    assert back.selection == json.loads(json.dumps(m.selection))
    pd.testing.assert_frame_equal(back.predict_proba(q), m.predict_proba(q))


def xor_data(n=240, seed=0) -> ad.AnnData:
    """A: two classes no line separates (XOR of the two signs); B: 50-dim noise."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.array(list("ab")), n // 2)
    sign = rng.choice([-1, 1], size=n)
    a = np.stack([sign * 2.0, np.where(y == "a", sign, -sign) * 2.0], 1)
    obs = pd.DataFrame({"cell_type": y}, index=[f"x{i}" for i in range(n)])
    out = ad.AnnData(np.zeros((n, 1), np.float32), obs=obs)
    out.obsm["A"] = (a + rng.normal(scale=0.5, size=(n, 2))).astype(np.float32)
    out.obsm["B"] = rng.normal(size=(n, 50)).astype(np.float32)
    return out


def test_a_stack_that_keeps_one_network_is_scmpt_on_that_input():
    ref, q = xor_data(), xor_data(seed=3)
    m = ScMPTModel.fit(ref, reps=["A", "B"], n_seeds=2, **FAST)
    stack = m.selection["candidates"]["stack"]
    # A's logistic regression is near chance (XOR) and B is noise: A's network alone
    assert stack["kept"] == "A" and m.selection["weights"] == {"A": 1.0}
    assert stack["options"]["B"]["deficit"] > 10 * stack["options"]["B"]["se"]
    alone = ScMPTModel.fit(ref, reps=["A"], n_seeds=2, **FAST)
    # the same seeds, each with its own early stopping and refit: the same predictions
    pd.testing.assert_frame_equal(m.predict_proba(q), alone.predict_proba(q))
    assert (m.predict_proba(q).idxmax(axis=1) == q.obs["cell_type"]).mean() > 0.95


def test_stack_of_complementary_branches_leans_on_the_fusions():
    ref = complementary_data()
    m = ScMPTModel.fit(ref, reps=["A", "B"], n_seeds=1, **FAST)
    raw = m.selection["candidates"]["stack"]["weights"]
    # each branch alone confuses a pair of classes: the fusions carry the mix
    assert raw["fusion"] + raw["linear"] > 0.8
    assert m.selection["candidates"]["stack"]["kept"] == "stack"
    assert m.selection["candidates"]["A (linear)"]["val_accuracy"] < 0.85
    assert m.validation["accuracy_mean"] > 0.95
    assert m.selection["candidates"]["stack"]["pooled"]["accuracy"] > 0.95
    # without the refit the first seed's network is the selection run itself
    kept = ScMPTModel.fit(ref, reps=["A", "B"], n_seeds=1, refit=False, **FAST)
    assert not kept.selection["refit_on_all"]
    assert kept.selection["weights"] == pytest.approx(m.selection["weights"])


def test_annotate_scmpt_stack_records_the_weights():
    ref, q = complementary_data(), complementary_data(seed=5)
    annotate_scmpt(q, ref, reps=["A", "B"], n_seeds=1, key_added="s", **FAST)
    sel = q.uns["s"]["selection"]
    assert sel["chosen"] == "stack" and sum(sel["weights"].values()) == pytest.approx(1.0)
    assert (q.obs["s"].astype(str) == q.obs["cell_type"]).mean() > 0.9


def test_member_weights_are_validated_and_default_to_equal(tmp_path):
    ref = complementary_data()
    m = ScMPTModel.fit(ref, reps=["A", "B"], n_seeds=2, **{**FAST, "select": "fusion"})
    assert m.member_weights == [0.5, 0.5]
    kw = dict(reps=m.reps, widths=m.widths, classes=m.classes, hidden=m.hidden,
              state_dicts=m.state_dicts, means=m.means, stds=m.stds)  # fmt: skip
    for bad in ([1.0], [1, -1], [0, 0], [np.nan, 1]):
        with pytest.raises(ValueError, match="member_weights"):
            ScMPTModel(**kw, member_weights=bad)
    assert ScMPTModel(**kw, member_weights=[3, 1]).member_weights == [0.75, 0.25]
    # folders saved before member_weights existed load with equal weights
    m.save(tmp_path / "v3")
    cfg_file = tmp_path / "v3" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    del cfg["member_weights"]
    cfg["version"] = 3
    cfg_file.write_text(json.dumps(cfg))
    old = ScMPTModel.load(tmp_path / "v3")
    assert old.member_weights == [0.5, 0.5]
    pd.testing.assert_frame_equal(old.predict_proba(ref), m.predict_proba(ref))


def test_select_values():
    assert {ScMPTParams(select=s).select for s in ("stack", "best", "fusion")} == {
        "stack",
        "best",
        "fusion",
    }
    with pytest.raises(ValueError, match="select must be 'stack'"):
        ScMPTParams(select="all")
