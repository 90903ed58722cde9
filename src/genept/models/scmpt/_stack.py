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
    "CROSSFIT_PARTS",
    "STACK",
    "STACK_MIN_WEIGHT",
    "choose_option",
    "crossfit_loglik",
    "deal",
    "embed_member",
    "fit_stack",
    "mix_proba",
    "stack_options",
    "stack_plan",
    "stack_weights",
    "train_stack",
]

#: the name of the stacked model in ``selection``
STACK = "stack"

#: candidates whose stacking weight is below this are dropped (the rest renormalised):
#: they would add training time for less than 1% of the average
STACK_MIN_WEIGHT = 0.01

#: the held-out cells are dealt into this many parts to score each set of candidates:
#: its stacking weights fit on all parts but one, its log-likelihood on that one
CROSSFIT_PARTS = 5


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


def deal(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Part ``0..k-1`` of each cell, stratified by label.

    Each label's cells are shuffled (``seed``) and dealt in turn, the next label's
    continuing where the last one stopped, so the parts differ in size by at most one.

    Examples
    --------
    >>> np.bincount(deal(np.array([0] * 7 + [1] * 3), 5, 0))
    array([2, 2, 2, 2, 2])
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    part = np.empty(labels.size, dtype=np.int64)
    start = 0
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        part[idx] = (start + np.arange(idx.size)) % k
        start += idx.size
    return part


def _dropped(weights: np.ndarray, min_weight: float = STACK_MIN_WEIGHT) -> np.ndarray:
    """``weights`` without those under ``min_weight`` (the largest stays), renormalised."""
    w = np.asarray(weights, dtype=np.float64)
    keep = w >= min_weight
    if not keep.any():
        keep = w == w.max()
    w = np.where(keep, w, 0.0)
    return w / w.sum()


def crossfit_loglik(
    p_true: np.ndarray, parts: np.ndarray, sample_weight: np.ndarray | None = None
) -> np.ndarray:
    """Each cell's log-probability of its label under a stack fit without its part.

    ``p_true`` is ``(cells, candidates)`` as in :func:`stack_weights`; for each part,
    the weights are fit on the cells of the other parts and the mix is scored on its
    own cells. A single candidate needs no weights: its log-probabilities.
    """
    P = np.clip(np.asarray(p_true, dtype=np.float64), 1e-12, None)
    if P.shape[1] == 1:
        return np.log(P[:, 0])
    s = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    out = np.empty(P.shape[0])
    for j in np.unique(parts):
        fit, score = parts != j, parts == j
        if not fit.any():  # one part: nothing to fit on but itself
            fit = score
        w = _dropped(stack_weights(P[fit], sample_weight=None if s is None else s[fit]))
        out[score] = np.log(P[score] @ w)
    return out


def stack_options(
    cands: Sequence[tuple[str, Sequence[int], Sequence[int]]],
) -> dict[str, list[str]]:
    """The sets of candidates the stack chooses among, simplest first.

    For each input: its network alone (scMPT on that input alone), then all of its own
    candidates (network and logistic regression); last every candidate (``"stack"``, or
    ``"stack(all)"`` if a smaller set already has that name). A set is named by its
    candidates joined with ``" + "``; duplicates are dropped.

    Examples
    --------
    >>> cands = [("fusion", [0, 1], [8]), ("A", [0], [8]), ("B", [1], [8]),
    ...          ("A (linear)", [0], []), ("B (linear)", [1], []), ("linear", [0, 1], [])]
    >>> list(stack_options(cands))
    ['A', 'B', 'A + A (linear)', 'B + B (linear)', 'stack']
    """
    own: dict[int, list[tuple[str, bool]]] = {}
    for name, br, hid in cands:
        if len(br) == 1:
            own.setdefault(int(br[0]), []).append((name, bool(len(hid))))
    sets: list[list[str]] = []
    for members in own.values():
        nets = [n for n, is_net in members if is_net]
        sets.append(nets[:1] or [members[0][0]])
    sets += [[n for n, _ in members] for members in own.values()]
    out: dict[str, list[str]] = {}
    for names in sets:
        if list(names) not in out.values():
            out[" + ".join(names)] = list(names)
    out[STACK if STACK not in out else f"{STACK}(all)"] = [c[0] for c in cands]
    return out


def choose_option(
    p_true: np.ndarray,
    order: Sequence[str],
    options: Mapping[str, Sequence[str]],
    labels: np.ndarray,
    *,
    sample_weight: np.ndarray | None = None,
    margin: float = 1.0,
    seed: int = 0,
) -> tuple[str, dict[str, dict[str, float]]]:
    """The simplest set of candidates whose stack is within ``margin`` SEs of the best.

    Each set of ``options`` (names of ``order``, the columns of ``p_true``) is scored by
    its cross-fitted mean log-likelihood (:func:`crossfit_loglik` over
    :data:`CROSSFIT_PARTS` parts of the held-out cells, stratified by ``labels``;
    weighted by ``sample_weight``). The best set's lead over each other set is a paired
    mean over the same cells, with its standard error; of the sets whose deficit is at
    most ``margin`` standard errors (the one-standard-error rule), the one with the fewest
    candidates is kept (ties: the higher log-likelihood). Returns its name and, per set,
    ``{"loglik": mean, "deficit": best - mean, "se": SE of that deficit}``.

    Examples
    --------
    Two candidates that are equally good on every cell: the single one is kept.

    >>> p = np.array([[0.8, 0.8], [0.6, 0.6], [0.7, 0.7], [0.9, 0.9], [0.5, 0.5]])
    >>> choose_option(p, ["A", "B"], {"A": ["A"], "stack": ["A", "B"]}, np.zeros(5))[0]
    'A'
    """
    P = np.asarray(p_true, dtype=np.float64)
    n = P.shape[0]
    s = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    s = s / s.sum()
    parts = deal(labels, CROSSFIT_PARTS, seed)
    col = {name: i for i, name in enumerate(order)}
    ll = {
        o: crossfit_loglik(P[:, [col[c] for c in cs]], parts, None if sample_weight is None else s)
        for o, cs in options.items()
    }
    mean = {o: float(s @ v) for o, v in ll.items()}
    best = max(mean, key=lambda o: mean[o])
    table: dict[str, dict[str, float]] = {}
    for o, v in ll.items():
        d = ll[best] - v
        dbar = float(s @ d)
        se = float(np.sqrt(np.sum(s**2 * (d - dbar) ** 2) * n / max(n - 1, 1)))
        table[o] = {"loglik": mean[o], "deficit": dbar, "se": se}
    within = [o for o in options if table[o]["deficit"] <= margin * table[o]["se"] + 1e-12]
    kept = min(within, key=lambda o: (len(options[o]), -mean[o]))
    return kept, table


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
    w = _dropped(weights, min_weight)
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
    run, ``runs[name]``, is reused). A stack of one network alone is trained as scMPT
    trains its seed ensemble on that input -- each seed early-stops on the split and is
    refit for its own epochs -- so that it is scMPT on that input, prediction for
    prediction (the extra split runs are spent only there). The logistic regression is
    deterministic: one member, refit on every cell with ``refit``. Returns ``(states,
    member_hidden, member_weights)``. ``scale_of(branches)``: the networks' input
    factors (see :func:`~genept.models.scmpt._fit.train_one`).
    """
    alone = len(plan) == 1  # one candidate kept: trained as scMPT on its input alone
    n_runs = sum(
        (len(seeds) * 2 - 1 if alone and refit else len(seeds)) if hid else 1
        for name, _, hid in cands
        if name in plan
    )
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
                info = info0
                if alone and i > 0:  # this seed's own early stopping on the split
                    info = run(br, hid, cfg, seed)[1]
                    progress.update()
                st = refit_on_all(
                    [tensors[j] for j in br], y_t, hidden=hid, hp=cfg,
                    epochs=info["best_epoch"], seed=seed, C=info0.get("C", LINEAR_C),
                    common=common, scale=None if scale_of is None else scale_of(br),
                )  # fmt: skip
            else:
                st = st0 if i == 0 else run(br, hid, cfg, seed)[0]
            states.append(embed_member(st, br, hid, in_dims, common["n_classes"]))
            member_hidden.append(list(hid))
            member_weights.append(plan[name] / (len(seeds) if hid else 1))
            progress.update()
    return states, member_hidden, member_weights


def fit_stack(
    cands, runs, pooled, y_sel, y_va, class_weight, names, hidden, n_folds, *, margin=1.0, seed=0
):
    """The stack's weights and its records.

    ``runs[name]`` holds each candidate's first-fold ``(score, config, state, info)``;
    ``pooled[name]`` its held-out probabilities on every fold (``None``: the first fold
    alone, ``info["val_proba"]``), in the order of the labels ``y_sel``. The set of
    candidates stacked is chosen by :func:`choose_option` (``margin``, ``seed``) among
    :func:`stack_options`. Returns the plan (kept candidates and renormalised weights),
    the record of the stack for ``selection["candidates"]`` (first-fold scores, the
    weights of every candidate, the sets compared and the one kept, ``pooled``: the mix
    on all held-out cells) and its first-fold validation record.
    """
    order = [c[0] for c in cands]
    if pooled is None:
        pooled = {n: runs[n][3]["val_proba"] for n in order}
    yv = y_sel.numpy()
    sw = None if class_weight is None else class_weight.numpy()[yv]
    P = np.stack([pooled[n][np.arange(yv.size), yv] for n in order], 1)
    w = stack_weights(P, sample_weight=sw)
    options = stack_options(cands)
    kept, table = choose_option(P, order, options, yv, sample_weight=sw, margin=margin, seed=seed)
    cols = [order.index(n) for n in options[kept]]
    w_kept = np.zeros(len(order))
    # the full set's weights are w itself; a smaller set gets its own fit
    w_kept[cols] = w if len(cols) == len(order) else stack_weights(P[:, cols], sample_weight=sw)
    plan = stack_plan(order, w_kept)
    like = runs[order[0]][3]
    rec = record_of(sum(wt * pooled[n] for n, wt in plan.items()), y_sel, class_weight, like)
    first = record_of(mix_proba({n: runs[n][3] for n in plan}, plan), y_va, class_weight, like)
    record = {
        "reps": list(names),
        "hidden": list(hidden),
        **{k: first[k] for k in ("val_accuracy", "val_f1_macro", "val_loss", "best_epoch")},
        "weights": {n: round(float(v), 6) for n, v in zip(order, w, strict=True)},
        "kept": kept,
        "options": {
            o: {k: round(v, 6) for k, v in t.items()} | {"candidates": list(options[o])}
            for o, t in table.items()
        },
        "pooled": {"folds": n_folds, "n_val": int(yv.size)}
        | {k: rec[f"val_{k}"] for k in ("accuracy", "f1_macro", "loss")},
    }
    return plan, record, first
