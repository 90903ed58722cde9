"""Stacking of scMPT's candidates: a convex mix of their probabilities (``select="stack"``).

The weights maximise the likelihood of the held-out labels under the mixture
``sum_k w_k P_k(y | x)`` of the candidates' out-of-fold probabilities (the "super
learner" of van der Laan, Polley & Hubbard 2007, *Stat. Appl. Genet. Mol. Biol.* 6:25,
with the log-likelihood as its loss): the expectation-maximisation updates of a mixture
whose components are fixed, which increase the likelihood at every step. Each kept
candidate is then one or more members of the ensemble, written as a network over every
input (zero weights for the inputs it does not read), so that prediction needs no
knowledge of the candidates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ._fit import LINEAR_C, record_of, refit_on_all
from ._net import make_net

__all__ = [
    "STACK",
    "STACK_MIN_WEIGHT",
    "embed_member",
    "fit_stack",
    "mix_proba",
    "stack_plan",
    "stack_weights",
    "train_stack",
]

#: the name of the stacked model in ``selection``
STACK = "stack"

#: candidates whose stacking weight is below this are dropped (the rest renormalised):
#: they would add training time for less than 1% of the average
STACK_MIN_WEIGHT = 0.01


def stack_weights(
    p_true: np.ndarray,
    *,
    sample_weight: np.ndarray | None = None,
    iters: int = 1000,
    tol: float = 1e-10,
) -> np.ndarray:
    """Mixture weights of candidates that maximise ``sum_i s_i log sum_k w_k p_true[i, k]``.

    Parameters
    ----------
    p_true
        ``(cells, candidates)``: the probability each candidate gave the true label of
        each held-out cell.
    sample_weight
        ``s_i``, a weight per cell (``None``: 1), e.g. the class weight of its label.
    iters, tol
        Most EM steps, and the change of the mean log-likelihood that stops them.

    Returns
    -------
    Non-negative weights summing to 1, one per candidate.

    Examples
    --------
    >>> p = np.array([[0.9, 0.5], [0.8, 0.5], [0.7, 0.5]])
    >>> stack_weights(p).round(3)  # the first candidate is better on every cell
    array([1., 0.])
    """
    P = np.clip(np.asarray(p_true, dtype=np.float64), 1e-12, None)
    if P.ndim != 2 or P.shape[1] < 1:
        raise ValueError(f"p_true must be (cells, candidates), got shape {P.shape}")
    k = P.shape[1]
    w = np.full(k, 1.0 / k)
    if P.shape[0] == 0:
        return w
    s = np.ones(P.shape[0]) if sample_weight is None else np.asarray(sample_weight, float)
    if s.shape != (P.shape[0],) or not (np.all(np.isfinite(s)) and np.all(s >= 0) and s.sum() > 0):
        raise ValueError("sample_weight must be one non-negative weight per cell, not all 0")
    s = s / s.sum()
    last = -np.inf
    for _ in range(iters):
        mix = P @ w
        ll = float(s @ np.log(mix))
        w = s @ (P * w / mix[:, None])
        if ll - last < tol:
            break
        last = ll
    w = np.where(w < 1e-9, 0.0, w)
    return w / w.sum()


def embed_member(
    state: Mapping[str, torch.Tensor],
    branches: Sequence[int],
    hidden: Sequence[int],
    in_dims: Sequence[int],
    n_classes: int,
) -> dict[str, torch.Tensor]:
    """A network over ``branches`` written as the same network over every input.

    The branches it does not read get zero weights, and so do their columns of the
    output layer: the outputs are those of the original network for any input.

    Parameters
    ----------
    state
        State dict of ``make_net([in_dims[b] for b in branches], hidden, n_classes)``.
    branches
        Indices of the inputs the network reads.
    hidden
        Its hidden widths (``[]``: a logistic regression).
    in_dims
        Widths of every input.
    n_classes
        Outputs.
    """
    full = {
        k: torch.zeros_like(v) for k, v in make_net(in_dims, hidden, n_classes).state_dict().items()
    }
    out_w = [int(hidden[-1]) if len(hidden) else int(d) for d in in_dims]
    offsets = np.concatenate([[0], np.cumsum(out_w)])
    local_offset = 0
    for j, b in enumerate(branches):
        prefix, target = f"branches.{j}.", f"branches.{b}."
        for name, value in state.items():
            if name.startswith(prefix):
                full[target + name[len(prefix) :]] = value.detach().clone()
        width = out_w[b]
        full["head.weight"][:, offsets[b] : offsets[b] + width] = state["head.weight"][
            :, local_offset : local_offset + width
        ]
        local_offset += width
    full["head.bias"] = state["head.bias"].detach().clone()
    return full


def stack_plan(
    names: Sequence[str], weights: np.ndarray, min_weight: float = STACK_MIN_WEIGHT
) -> dict[str, float]:
    """The candidates kept in the stack and their renormalised weights (``>= min_weight``)."""
    w = np.asarray(weights, dtype=np.float64)
    keep = w >= min_weight
    if not keep.any():
        keep = w == w.max()
    w = np.where(keep, w, 0.0)
    w = w / w.sum()
    return {n: float(v) for n, v in zip(names, w, strict=True) if v > 0}


def mix_proba(records: Mapping[str, dict[str, Any]], plan: Mapping[str, float]) -> np.ndarray:
    """The stack's probabilities on the first fold: the weighted mix of the candidates'."""
    return sum(wt * records[n]["val_proba"] for n, wt in plan.items())


def train_stack(
    plan, cands, runs, seeds, refit, tensors, y_t, run, progress, *, common, scale_of=None
):
    """The members of the stack: each kept candidate's networks, written over every input.

    A network candidate gives one member per seed (weight ``w / n_seeds``): with
    ``refit``, trained on every reference cell for the epochs the first seed's early
    stopping chose on the split, else trained on the split (the first seed's selection
    run, ``runs[name]``, is reused). The logistic regression is deterministic: one
    member, refit on every cell with ``refit``. Returns ``(states, member_hidden,
    member_weights)``. ``scale_of(branches)``: the networks' input factors (see
    :func:`~genept.models.scmpt._fit.train_one`).
    """
    n_runs = sum((len(seeds) if hid else 1) for name, _, hid in cands if name in plan)
    if progress.total is not None:
        progress.total = progress.n + n_runs
        progress.refresh()
    in_dims = [t.shape[1] for t in tensors]
    states, member_hidden, member_weights = [], [], []
    for name, br, hid in cands:
        if name not in plan:
            continue
        _, cfg, st0, info0 = runs[name]
        for i, seed in enumerate(seeds if hid else seeds[:1]):
            if refit:
                st = refit_on_all(
                    [tensors[j] for j in br], y_t, hidden=hid, hp=cfg,
                    epochs=info0["best_epoch"], seed=seed, C=info0.get("C", LINEAR_C),
                    common=common, scale=None if scale_of is None else scale_of(br),
                )  # fmt: skip
            else:
                st = st0 if i == 0 else run(br, hid, cfg, seed)[0]
            states.append(embed_member(st, br, hid, in_dims, common["n_classes"]))
            member_hidden.append(list(hid))
            member_weights.append(plan[name] / (len(seeds) if hid else 1))
            progress.update()
    return states, member_hidden, member_weights


def fit_stack(cands, runs, pooled, y_sel, y_va, class_weight, names, hidden, n_folds):
    """The stack's weights and its records.

    ``runs[name]`` holds each candidate's first-fold ``(score, config, state, info)``;
    ``pooled[name]`` its held-out probabilities on every fold (``None``: the first fold
    alone, ``info["val_proba"]``), in the order of the labels ``y_sel``. Returns the
    plan (kept candidates and renormalised weights), the record of the stack for
    ``selection["candidates"]`` (first-fold scores, the raw weights, ``pooled``: the
    mix on all held-out cells) and its first-fold validation record.
    """
    order = [c[0] for c in cands]
    if pooled is None:
        pooled = {n: runs[n][3]["val_proba"] for n in order}
    yv = y_sel.numpy()
    sw = None if class_weight is None else class_weight.numpy()[yv]
    w = stack_weights(
        np.stack([pooled[n][np.arange(yv.size), yv] for n in order], 1), sample_weight=sw
    )
    plan = stack_plan(order, w)
    like = runs[order[0]][3]
    rec = record_of(sum(wt * pooled[n] for n, wt in plan.items()), y_sel, class_weight, like)
    first = record_of(mix_proba({n: runs[n][3] for n in plan}, plan), y_va, class_weight, like)
    record = {
        "reps": list(names),
        "hidden": list(hidden),
        **{k: first[k] for k in ("val_accuracy", "val_f1_macro", "val_loss", "best_epoch")},
        "weights": {n: round(float(v), 6) for n, v in zip(order, w, strict=True)},
        "pooled": {"folds": n_folds, "n_val": int(yv.size)}
        | {k: rec[f"val_{k}"] for k in ("accuracy", "f1_macro", "loss")},
    }
    return plan, record, first
