"""One scMPT network trained on arrays, with its validation record.

:func:`train_one` trains the MLP / fusion network, :func:`train_linear` the linear
candidate (a logistic regression stored as a network without hidden layers).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import nn

from ._net import make_net, predict, val_loss

__all__ = [
    "LINEAR_C",
    "LINEAR_HYPER",
    "Hyper",
    "fold_scale",
    "hyper_dict",
    "input_stats",
    "refit_on_all",
    "scores",
    "train_linear",
    "train_one",
    "validate",
]


def scores(proba: np.ndarray, yv: np.ndarray, loss: float) -> dict[str, Any]:
    """The validation record of class probabilities ``proba`` for labels ``yv``."""
    pred = proba.argmax(1)
    return {
        "val_loss": float(loss),
        "val_accuracy": float((pred == yv).mean()),
        "val_f1_macro": float(f1_score(yv, pred, average="macro", zero_division=0)),
        "val_proba": proba,
    }


def record_of(proba: np.ndarray, y_va, class_weight, like: dict) -> dict[str, Any]:
    """Validation record of probabilities ``proba`` (epochs as in ``like``)."""
    yv = y_va.numpy()
    w = np.ones(proba.shape[1]) if class_weight is None else class_weight.numpy()
    nll = -np.log(np.clip(proba[np.arange(yv.size), yv], 1e-12, None))
    loss = (w[yv] * nll).sum() / max(w[yv].sum(), 1e-12)
    return {k: like[k] for k in ("epochs_run", "best_epoch")} | scores(proba, yv, loss)


def validate(model: nn.Module, xs_va, y_va, loss_fn, device: str) -> dict[str, Any]:
    """:func:`scores` of ``model`` on the validation tensors."""
    proba = predict(model, xs_va, device)
    return scores(proba, y_va.numpy(), val_loss(model, xs_va, y_va, loss_fn, device))


@dataclass(frozen=True)
class Hyper:
    lr: float
    epochs: int
    batch_size: int
    decay: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def train_one(
    xs_tr,
    y_tr,
    xs_va,
    y_va,
    *,
    in_dims: Sequence[int],
    hidden: Sequence[int],
    n_classes: int,
    hp: Hyper,
    weight_decay: float,
    class_weight,
    early_stopping: bool,
    patience: int,
    seed: int,
    device: str,
    scale: Sequence[torch.Tensor] | None = None,
) -> tuple[dict, dict[str, Any]]:
    """Train one network; returns its (CPU) state dict and validation results.

    ``scale``: one factor per dimension of each input (``ScMPTParams.network_scaling``).
    The network trains on ``x * scale``; the factors are then folded into its first
    layer (:func:`fold_scale`), so the returned network (and the validation) takes ``x``.
    """
    model = make_net(in_dims, hidden, n_classes, seed=seed).to(device)
    if scale is not None:
        scale = [s.to(device=device, dtype=torch.float32) for s in scale]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=hp.lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=hp.decay)
    loss_fn = nn.CrossEntropyLoss(weight=None if class_weight is None else class_weight.to(device))
    n = y_tr.shape[0]
    has_val = xs_va is not None
    best_loss, best_state, best_epoch, bad = math.inf, None, hp.epochs, 0
    epoch = 0
    for epoch in range(1, hp.epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, hp.batch_size):
            idx = perm[s : s + hp.batch_size]
            batch = [x[idx].to(device, non_blocking=True) for x in xs_tr]
            if scale is not None:
                batch = [x * f for x, f in zip(batch, scale, strict=True)]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(batch), y_tr[idx].to(device))
            loss.backward()
            opt.step()
        sched.step()
        if has_val and early_stopping:
            vloss = val_loss(fold_scale(model, scale), xs_va, y_va, loss_fn, device)
            if vloss < best_loss - 1e-7:
                best_loss, best_epoch, bad = vloss, epoch, 0
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
                if bad >= patience:
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    model = fold_scale(model, scale)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    info: dict[str, Any] = {"epochs_run": epoch, "best_epoch": best_epoch}
    if has_val:
        info.update(validate(model, xs_va, y_va, loss_fn, device))
    return state, info


def input_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per dimension of one input: its mean, SD (1 where constant) and branch factor.

    The factors of ``network_scaling="branch"`` are each SD over the root mean square of
    the SDs: the networks see ``(x - mean) / rms``, the z-scores times these. float32.
    """
    m, sd = x.mean(0), x.std(0)
    s = np.where(sd > 1e-8, sd, 1.0)
    rms = float(np.sqrt(np.mean(np.asarray(sd, np.float64) ** 2)))
    f = s / rms if rms > 0 else np.ones_like(s)
    return m.astype(np.float32), s.astype(np.float32), f.astype(np.float32)


def fold_scale(model: nn.Module, scale: Sequence[torch.Tensor] | None) -> nn.Module:
    """A copy of ``model`` that takes ``x`` where ``model`` takes ``x * scale``.

    The per-dimension factors multiply the columns of each branch's first linear layer
    (a network with hidden layers); ``scale=None`` returns ``model`` itself.
    """
    if scale is None:
        return model
    folded = copy.deepcopy(model)
    with torch.no_grad():
        for branch, s in zip(folded.branches, scale, strict=True):
            branch[0].weight.mul_(s.to(branch[0].weight)[None, :])
    return folded


#: inverse L2 strength of the linear candidate (scikit-learn's and celltypist's default;
#: ``ScMPTParams.linear_c``)
LINEAR_C = 1.0
#: the grid does not apply to the linear candidate: its row in ``grid`` carries these
LINEAR_HYPER = Hyper(float("nan"), 0, 0, float("nan"))


def hyper_dict(hp: Hyper, hidden: Sequence[int], C: float = LINEAR_C) -> dict[str, Any]:
    """The hyper-parameters of a candidate as recorded (the linear one: its ``C``)."""
    return hp.as_dict() if len(hidden) else {"C": float(C)}


def train_linear(
    xs_tr,
    y_tr,
    xs_va,
    y_va,
    *,
    n_classes: int,
    class_weight,
    device: str,
    C: float | Sequence[float] = LINEAR_C,
    **_: Any,
) -> tuple[dict, dict[str, Any]]:
    """The linear candidate: a logistic regression as a network without hidden layers.

    A multinomial logistic regression (L-BFGS, inverse L2 strength ``C``) on the
    concatenated inputs, stored as the head of a :class:`FusionNet` with no hidden layer.
    With several ``C`` and a validation split, each is fitted and the one with the lowest
    validation loss kept (``info["C"]``). The same outputs as :func:`train_one`;
    deterministic, so every seed gives the same weights.
    """
    Cs = [float(c) for c in np.atleast_1d(C)]
    if xs_va is None:
        Cs = Cs[-1:]
    x = np.concatenate([t.cpu().numpy() for t in xs_tr], axis=1).astype(np.float64)
    y = y_tr.numpy()
    cw = None if class_weight is None else dict(enumerate(class_weight.numpy().tolist()))
    best = None
    for c in Cs:
        state, info = _fit_linear(x, y, cw, xs_tr, xs_va, y_va, n_classes, class_weight, device, c)
        if best is None or info.get("val_loss", 0.0) < best[1].get("val_loss", 0.0):
            best = (state, info)
    return best


def refit_on_all(
    xs, y, *, hidden, hp: Hyper, epochs: int, seed: int, C: float, common, scale=None
) -> dict:
    """A candidate retrained on every labelled reference cell; returns its state dict.

    A network trains for ``epochs`` (those its early stopping chose on the split) without
    validation, on ``x * scale`` (see :func:`train_one`); a logistic regression
    (``hidden=[]``) is fitted to convergence with ``C``. ``common``: the shared keyword
    arguments of :func:`train_one`.
    """
    if len(hidden):
        hp_all = replace(hp, epochs=max(1, int(epochs)))
        return train_one(
            xs, y, None, None, in_dims=[x.shape[1] for x in xs], hidden=hidden, hp=hp_all,
            early_stopping=False, seed=seed, scale=scale, **common,
        )[0]  # fmt: skip
    return train_linear(xs, y, None, None, C=C, **common)[0]


def _fit_linear(x, y, cw, xs_tr, xs_va, y_va, n_classes, class_weight, device, C: float):
    """One logistic regression of :func:`train_linear` on the concatenated inputs ``x``."""
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on tiny references
        lr = LogisticRegression(C=C, max_iter=1000, class_weight=cw).fit(x, y)
    present = lr.classes_.astype(int)
    coef, bias = lr.coef_, lr.intercept_
    if present.size == 2:  # scikit-learn's binary form: one row for class 1
        coef, bias = np.r_[-coef / 2, coef / 2], np.r_[-bias / 2, bias / 2]
    w = np.zeros((n_classes, x.shape[1]), np.float32)
    b = np.full(n_classes, -1e4, np.float32)  # classes absent from training: never chosen
    w[present], b[present] = coef, bias
    state = {"head.weight": torch.from_numpy(w), "head.bias": torch.from_numpy(b)}
    info: dict[str, Any] = {"epochs_run": int(np.max(lr.n_iter_)), "best_epoch": 0, "C": C}
    if xs_va is not None:
        net = make_net([t.shape[1] for t in xs_tr], [], n_classes)
        net.load_state_dict(state)
        loss_fn = nn.CrossEntropyLoss(
            weight=None if class_weight is None else class_weight.to(device)
        )
        info.update(validate(net.to(device), xs_va, y_va, loss_fn, device))
    return state, info
