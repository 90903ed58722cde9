"""scMPT's ``network_scaling``: networks trained on one scale per input, folded into layer 1."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from genept.models.scmpt import ScMPTModel, ScMPTParams
from genept.models.scmpt._fit import Hyper, fold_scale, train_one
from genept.models.scmpt._net import make_net, predict

FAST = {"n_seeds": 1, "epochs_grid": (15,), "n_jobs": 1}


def test_fold_scale_gives_the_same_outputs_on_unscaled_inputs():
    rng = np.random.default_rng(0)
    net = make_net([5, 3], [8, 4], 3, seed=1)
    xs = [torch.from_numpy(rng.standard_normal((20, d)).astype(np.float32)) for d in (5, 3)]
    scale = [torch.from_numpy(rng.uniform(0.1, 3, d).astype(np.float32)) for d in (5, 3)]
    folded = fold_scale(net, scale)
    with torch.no_grad():
        want = net([x * s for x, s in zip(xs, scale, strict=True)])
        got = folded(xs)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # a copy: the original network is untouched; no scale returns the network itself
    assert not torch.equal(folded.branches[0][0].weight, net.branches[0][0].weight)
    assert fold_scale(net, None) is net


def test_train_one_with_scale_equals_training_on_scaled_inputs():
    """Training on x with ``scale`` is training on ``x * scale``, returned over x."""
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.standard_normal((120, 6)).astype(np.float32))
    y = torch.from_numpy((x[:, 0] > 0).numpy().astype(np.int64))
    s = torch.tensor([4.0, 0.5, 0.5, 0.5, 0.5, 0.5])
    kw = dict(
        in_dims=[6], hidden=[16], n_classes=2, hp=Hyper(1e-2, 8, 32, 0.95), weight_decay=0.01,
        class_weight=None, patience=3, seed=0, device="cpu",
    )  # fmt: skip
    tr, va = slice(0, 90), slice(90, 120)
    st_a, info_a = train_one([x[tr]], y[tr], [x[va]], y[va], early_stopping=True, scale=[s], **kw)
    st_b, info_b = train_one([x[tr] * s], y[tr], [x[va] * s], y[va], early_stopping=True, **kw)
    assert info_a["best_epoch"] == info_b["best_epoch"]
    np.testing.assert_allclose(info_a["val_proba"], info_b["val_proba"], atol=1e-5)
    net_a, net_b = make_net([6], [16], 2), make_net([6], [16], 2)
    net_a.load_state_dict(st_a)
    net_b.load_state_dict(st_b)
    np.testing.assert_allclose(
        predict(net_a, [x], "cpu"), predict(net_b, [x * s], "cpu"), atol=1e-5
    )


def _adata(x: np.ndarray, y: np.ndarray) -> ad.AnnData:
    obs = pd.DataFrame({"cell_type": y}, index=[f"c{i}" for i in range(len(y))])
    a = ad.AnnData(np.zeros((len(y), 1), np.float32), obs=obs)
    a.obsm["X_a"] = x
    return a


def _blobs(n=240, seed=0):
    """Two signal dimensions of SD ~3 and 60 noise dimensions of SD 0.05."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = np.array([[0, 0], [3, 0], [0, 3]], float)
    signal = centres[y] + rng.standard_normal((n, 2))
    noise = 0.05 * rng.standard_normal((n, 60))
    return _adata(np.c_[signal, noise].astype(np.float32), np.array(["a", "b", "c"])[y])


def test_branch_scaling_keeps_small_noise_dimensions_small():
    """z-scoring lifts 60 tiny noise dimensions to the signal's scale; one scale per input
    keeps them small, so the networks fit new cells better."""
    ref, query = _blobs(), _blobs(600, seed=1)
    acc = {}
    for mode in ("branch", "feature"):
        m = ScMPTModel.fit(ref, reps=["X_a"], network_scaling=mode, select="fusion", **FAST)
        pred = m.predict_proba(query).idxmax(axis=1).to_numpy()
        acc[mode] = float((pred == query.obs["cell_type"].to_numpy()).mean())
    assert acc["branch"] > acc["feature"] + 0.1, acc  # measured 0.91 against 0.69


def test_equal_scales_make_branch_and_feature_the_same():
    """Inputs whose dimensions all have the same SD: one scale per input is z-scoring."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((150, 8)).astype(np.float32)
    x = (x - x.mean(0)) / x.std(0) * 2.5  # every dimension SD 2.5
    y = np.where(x[:, 0] + x[:, 1] > 0, "p", "q")
    a = _adata(x.astype(np.float32), y)
    probs = []
    for mode in ("branch", "feature"):
        m = ScMPTModel.fit(a, reps=["X_a"], network_scaling=mode, **FAST)
        probs.append(m.predict_proba(a).to_numpy())
    np.testing.assert_allclose(probs[0], probs[1], atol=1e-4)


def test_network_scaling_values():
    assert ScMPTParams().network_scaling == "branch"
    with pytest.raises(ValueError, match="network_scaling must be 'branch'"):
        ScMPTParams(network_scaling="layer")


def test_annotate_mlp_takes_network_scaling():
    import genept as gpt

    ref, query = _blobs(), _blobs(300, seed=3)
    acc = {}
    for mode in ("branch", "feature"):
        gpt.tl.annotate_mlp(
            query, ref, use_rep="X_a", network_scaling=mode, epochs=15, n_jobs=1, key_added="m"
        )
        assert query.uns["m"]["params"]["network_scaling"] == mode
        acc[mode] = float((query.obs["m"].astype(str) == query.obs["cell_type"]).mean())
    assert acc["branch"] > acc["feature"] + 0.1, acc
    with pytest.raises(ValueError, match="network_scaling"):
        gpt.tl.annotate_mlp(query, ref, use_rep="X_a", network_scaling="none")
