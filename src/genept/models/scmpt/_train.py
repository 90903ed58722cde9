"""Training of scMPT: model selection and the seed ensemble (appendix A.2).

:func:`train` is the whole procedure on arrays: a stratified validation split of the
reference; every candidate model (the fusion of all inputs and, with ``select="stack"``
or ``"best"``, each input alone and the linear fusion) with every grid configuration
scored with the first seed (below 2,000 reference cells each candidate is also trained
on further folds and the candidates are compared on all held-out cells); then the
stack of the candidates (:mod:`._stack`) or the chosen candidate and configuration
trained with every seed of the ensemble.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from scanpy import logging as logg
from sklearn.metrics import f1_score

from ..._core._progress import progress_bar
from ._fit import (
    LINEAR_C,
    LINEAR_HYPER,
    Hyper,
    hyper_dict,
    record_of,
    refit_on_all,
    train_linear,
    train_one,
)
from ._folds import more_folds, selection_split
from ._params import ScMPTParams
from ._stack import STACK, fit_stack, train_stack

__all__ = ["TrainResult", "train"]

_VAL_KEYS = ("val_accuracy", "val_f1_macro", "val_loss", "best_epoch")


def mean_of(a: dict, b: dict, y_va, class_weight) -> dict[str, Any]:
    """Validation record of the average of two models' probabilities."""
    return record_of((a["val_proba"] + b["val_proba"]) / 2, y_va, class_weight, a)


def margins_over_default(
    infos: Mapping[str, dict], default: dict, y_va, metric: str
) -> dict[str, tuple[float, float]]:
    """Each candidate's validation advantage over the default, and the default's standard error.

    The one-standard-error rule (Hastie, Tibshirani & Friedman, *The Elements of
    Statistical Learning*, 7.10): the advantage is the difference in ``metric``
    (accuracy, macro-F1, or the loss with its sign flipped) and the yardstick is the
    standard error of the default's own validation estimate -- ``sqrt(p (1 - p) / n)``
    for accuracy (also used for macro-F1) and the standard error of the mean per-cell
    log-loss for ``"loss"``.
    """
    yv = y_va.numpy()
    n = yv.size
    if metric == "loss":
        nll = -np.log(np.clip(default["val_proba"][np.arange(n), yv], 1e-12, None))
        se = float(nll.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    else:
        acc = float(default["val_accuracy"])
        se = float(np.sqrt(acc * (1 - acc) / n)) if n else float("inf")
    out = {}
    for name, info in infos.items():
        if metric == "loss":
            diff = float(default["val_loss"] - info["val_loss"])
        else:
            diff = float(info[f"val_{metric}"] - default[f"val_{metric}"])
        out[name] = (diff, se)
    return out


def class_weights(class_weight, classes: np.ndarray, codes: np.ndarray):
    if class_weight is None:
        return None
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(
                f"class_weight must be None, 'balanced' or a dict, got {class_weight!r}"
            )
        counts = np.bincount(codes, minlength=classes.size).astype(np.float64)
        w = codes.size / (classes.size * np.maximum(counts, 1))
    elif isinstance(class_weight, Mapping):
        unknown = set(map(str, class_weight)) - set(classes)
        if unknown:
            raise ValueError(f"class_weight names unknown classes {sorted(unknown)}")
        w = np.array([float(class_weight.get(c, 1.0)) for c in classes])
    else:
        raise TypeError(
            f"class_weight must be None, 'balanced' or a dict, got {type(class_weight).__name__}"
        )
    return torch.tensor(w, dtype=torch.float32)


def summarise_validation(infos, split, codes, n_classes) -> dict[str, Any]:
    nan = float("nan")
    if split is None:
        return {
            "accuracy_mean": nan,
            "accuracy_sd": nan,
            "f1_macro_mean": nan,
            "f1_macro_sd": nan,
            "ensemble_accuracy": nan,
            "ensemble_f1_macro": nan,
        }
    acc = np.array([i["val_accuracy"] for i in infos])
    f1 = np.array([i["val_f1_macro"] for i in infos])
    sd = lambda a: float(a.std(ddof=1)) if a.size > 1 else 0.0  # noqa: E731
    yv = codes[split[1]]
    ens = np.mean([i["val_proba"] for i in infos], axis=0).argmax(1)
    return {
        "accuracy_mean": float(acc.mean()),
        "accuracy_sd": sd(acc),
        "f1_macro_mean": float(f1.mean()),
        "f1_macro_sd": sd(f1),
        "accuracy_per_seed": acc.tolist(),
        "f1_macro_per_seed": f1.tolist(),
        "best_epoch_per_seed": [int(i["best_epoch"]) for i in infos],
        "ensemble_accuracy": float((ens == yv).mean()),
        "ensemble_f1_macro": float(f1_score(yv, ens, average="macro", zero_division=0)),
    }


@dataclass
class TrainResult:
    """What :func:`train` returns: the ensemble's weights and the validation record.

    ``branches`` are the indices (into the inputs) of the representations the chosen
    network reads; ``selection`` records the candidates and their validation scores;
    ``member_hidden`` gives the hidden widths of each state (``[]``: linear).
    """

    states: list[dict]
    hyperparameters: dict[str, Any]
    validation: dict[str, Any]
    grid: dict[str, list]
    seeds: list[int]
    branches: list[int]
    selection: dict[str, Any]
    hidden: list[int]
    member_hidden: list[list[int]]
    member_weights: list[float] | None = None


def candidates(
    names: Sequence[str], select: str, hidden: Sequence[int]
) -> list[tuple[str, list[int], list[int]]]:
    """The models compared on validation: the fusion, each input alone, the linear fusion.

    ``select="fusion"`` (the paper) or a single input: the fusion only. A candidate is
    ``(name, branch indices, hidden widths)``; the fusion is named ``"fusion"``
    (``"fusion(all)"`` if an input is itself called ``"fusion"``), a single branch by its
    ``obsm`` key, and the linear fusion -- no hidden layer: a multinomial logistic
    regression on the concatenated, standardised inputs -- ``"linear"`` (``"linear(all)"``
    likewise, always last); the linear fusion is left out when ``hidden`` is already
    empty. ``select="stack"`` adds a logistic regression on each input alone, named
    ``"<key> (linear)"``, before the linear fusion.
    """
    all_ = list(range(len(names)))
    hidden = list(hidden)
    fusion = "fusion(all)" if "fusion" in names else "fusion"
    if select == "fusion" or len(names) == 1:
        return [(fusion if len(names) > 1 else names[0], all_, hidden)]
    out = [(fusion, all_, hidden)] + [(n, [i], hidden) for i, n in enumerate(names)]
    if hidden:
        if select == "stack":
            taken = set(names)  # an input named "X (linear)" keeps its own name
            out += [
                (f"{n} (linear)" if f"{n} (linear)" not in taken else f"{n} (linear #{i})", [i], [])
                for i, n in enumerate(names)
            ]
        out.append(("linear(all)" if "linear" in names else "linear", all_, []))
    return out


def ensemble_name(names: Sequence[str]) -> str:
    """The name of the candidate that averages the fusion and the linear fusion."""
    return "fusion+linear(all)" if "fusion+linear" in names else "fusion+linear"


def train(
    xs: Sequence[np.ndarray],
    codes: np.ndarray,
    classes: np.ndarray,
    p: ScMPTParams,
    *,
    dev: str,
    names: Sequence[str] | None = None,
    scales: Sequence[np.ndarray] | None = None,
    groups: np.ndarray | None = None,
) -> TrainResult:
    """Model selection on a stratified split, then the seed ensemble (standardised ``xs``).

    ``scales``: per input, the factors the networks see it multiplied by
    (``ScMPTParams.network_scaling``; folded into their first layers). ``None``: 1.
    ``groups``: an integer group (donor, batch) per cell; the validation split and the
    selection folds then hold out whole groups (:func:`._folds.group_folds`).

    Every candidate of :func:`candidates` (with ``select="best"``: the fusion and each
    input alone) is trained with every grid configuration and the first seed on the
    same split; the best ``(candidate, configuration)`` by ``selection_metric`` (ties:
    lower validation loss, then the earlier candidate -- the fusion) is then trained
    with the remaining seeds.
    """
    names = list(names) if names is not None else [f"rep{i}" for i in range(len(xs))]
    n_bytes = sum(x.nbytes for x in xs)
    store = dev if n_bytes < 2**30 else "cpu"  # big data stays on CPU, batches move
    tensors = [torch.from_numpy(np.ascontiguousarray(x)).to(store) for x in xs]
    y_t = torch.from_numpy(codes.astype(np.int64))
    scale_t = None if scales is None else [torch.as_tensor(c, dtype=torch.float32) for c in scales]

    def scale_of(br: Sequence[int]) -> list[torch.Tensor] | None:
        return None if scale_t is None else [scale_t[i] for i in br]

    n_classes = int(classes.size)
    cw = class_weights(p.class_weight, classes, codes)
    split, group_rest = selection_split(codes, p.val_size, p.random_state, groups)
    configs = [Hyper(*c) for c in itertools.product(*p.grids.values())]
    seeds = [p.random_state + i for i in range(p.n_seeds)]
    cands = candidates(names, p.select if split is not None else "fusion", p.hidden)
    # more folds for the comparison of candidates (fusion, branches, linear, average)
    compare = len(cands) > 2 and not cands[-1][2]
    folds = (
        more_folds(
            codes, split, p.n_folds(split[1].size), p.max_folds(), p.random_state, group_rest
        )
        if compare and split is not None
        else []
    )
    common = {
        "n_classes": n_classes,
        "weight_decay": p.weight_decay,
        "class_weight": cw,
        "patience": p.patience,
        "device": dev,
    }
    n_search = sum(len(configs) if hid else 1 for _, _, hid in cands)
    progress = progress_bar(
        (n_search if n_search > 1 and split is not None else 0)
        + len(folds) * len(cands)
        + len(seeds) * (2 if p.refit and split is not None else 1),
        desc="scMPT",
        unit="run",
    )
    grid: dict[str, list] = {k: [] for k in ("candidate", "lr", "epochs", "batch_size", "decay")}

    def record(name: str, hp: Hyper, info: dict) -> None:
        grid["candidate"].append(name)
        for k, v in hp.as_dict().items():
            grid[k].append(v)
        for k in _VAL_KEYS:
            grid[k].append(info[k])

    def dims(br: list[int]) -> list[int]:
        return [xs[i].shape[1] for i in br]

    states, infos = [], []
    chosen, branches, hidden = cands[0]
    linear_run = None  # (state, info) of the linear fusion when the ensemble wins
    plan = None  # select="stack": {candidate: weight}
    member_weights = None
    scores: dict[str, dict[str, Any]] = {}
    if split is None:
        hp = configs[0]
        warnings.warn(
            f"the reference ({codes.size} labelled cells, {n_classes} classes) is too small "
            f"for a stratified validation split of val_size={p.val_size}; training on all "
            f"cells with the first value of each grid ({hp.as_dict()}) for a fixed number of "
            "epochs, without early stopping"
            + (", and the fusion of all inputs (no model selection)" if len(xs) > 1 else "")
            + "; validation metrics are NaN",
            UserWarning,
            stacklevel=4,
        )
        for seed in seeds:
            st, info = (train_one if hidden else train_linear)(
                tensors,
                y_t,
                None,
                None,
                in_dims=dims(branches),
                hidden=hidden,
                hp=hp,
                early_stopping=False,
                seed=seed,
                **common,
                **({"scale": scale_of(branches)} if hidden else {"C": p.linear_c}),
            )
            states.append(st)
            infos.append(info)
            progress.update()
        n_train, n_val = codes.size, 0
    else:
        tr, va = split

        def fold_of(tr: np.ndarray, va: np.ndarray) -> tuple:
            tr_t, va_t = torch.from_numpy(tr), torch.from_numpy(va)
            xs_tr = [t[tr_t.to(t.device)] for t in tensors]
            xs_va = [t[va_t.to(t.device)] for t in tensors]
            return xs_tr, y_t[tr_t], xs_va, y_t[va_t]

        first = fold_of(tr, va)
        y_va = first[3]
        n_train, n_val = tr.size, va.size
        for k in _VAL_KEYS:
            grid[k] = []

        def run(br, hid, hp: Hyper, seed: int, fold: tuple = first, C=p.linear_c, stop=True):
            xs_tr, y_tr, xs_va, y_va = fold
            return (train_one if hid else train_linear)(
                [xs_tr[i] for i in br],
                y_tr,
                [xs_va[i] for i in br],
                y_va,
                in_dims=dims(br),
                hidden=hid,
                hp=hp,
                early_stopping=p.early_stopping and stop,
                seed=seed,
                **common,
                **({"scale": scale_of(br)} if hid else {"C": C}),  # C: several by val. loss
            )

        def score_of(info: dict) -> tuple:
            if p.selection_metric == "loss":
                return (-info["val_loss"],)
            return (info[f"val_{p.selection_metric}"], -info["val_loss"])

        hp, best_first = configs[0], None
        if n_search > 1:
            best_score = None
            runs: dict[str, tuple] = {}  # each candidate's best (score, cfg, state, info)
            for name, br, hid in cands:
                cand_best = None
                for cfg in configs if hid else [LINEAR_HYPER]:
                    st, info = run(br, hid, cfg, seeds[0])
                    record(name, cfg, info)
                    score = score_of(info)
                    if cand_best is None or score > cand_best[0]:
                        cand_best = (score, cfg, st, info)
                    if best_score is None or score > best_score:
                        best_score, hp, best_first = score, cfg, (st, info)
                        chosen, branches, hidden = name, br, hid
                    progress.update()
                _, cfg, _, info = runs[name] = cand_best
                scores[name] = {
                    "reps": [names[i] for i in br],
                    "hidden": list(hid),
                    **{k: info[k] for k in _VAL_KEYS},
                    "hyperparameters": hyper_dict(cfg, hid, info.get("C", LINEAR_C)),
                }
            # the average of the fusion and the linear fusion (an MLP and a logistic
            # regression on the same inputs): scored on the same validation cells
            fusion_name, lin_name = cands[0][0], cands[-1][0]
            if compare:
                f_run, l_run = runs[fusion_name], runs[lin_name]
                # every candidate again on the other folds (first seed, the configuration,
                # C and epochs of the first fold, no early stopping: the held-out cells
                # are not looked at): the comparison pools all held-out cells
                sel = {n: r[3] for n, r in runs.items()}
                y_sel = y_va
                if folds:
                    probas = {n: [r[3]["val_proba"]] for n, r in runs.items()}
                    ys = [y_va]
                    for f_tr, f_va in folds:
                        fold = fold_of(f_tr, f_va)
                        ys.append(fold[3])
                        for name, br, hid in cands:
                            _, cfg, _, info = runs[name]
                            C = info.get("C", LINEAR_C)
                            if p.early_stopping:
                                cfg = replace(cfg, epochs=max(1, int(info["best_epoch"])))
                            _, info = run(br, hid, cfg, seeds[0], fold=fold, C=C, stop=False)
                            probas[name].append(info["val_proba"])
                            progress.update()
                    y_sel = torch.cat(ys)
                    sel = {
                        n: record_of(np.concatenate(ps), y_sel, cw, runs[n][3])
                        for n, ps in probas.items()
                    }
                info = mean_of(f_run[3], l_run[3], y_va, cw)  # on the first fold
                ens = ensemble_name(names)
                scores[ens] = {
                    "reps": list(names),
                    "hidden": list(p.hidden),
                    **{k: info[k] for k in _VAL_KEYS},
                    "hyperparameters": {**hyper_dict(f_run[1], p.hidden), "C": l_run[3]["C"]},
                }
                # the ensemble is the default; another candidate replaces it only if it
                # is better on validation by more than `selection_margin` standard errors
                # of the average's own estimate (small validation sets are noisy)
                if folds:
                    sel[ens] = mean_of(sel[fusion_name], sel[lin_name], y_sel, cw)
                    for n, rec in sel.items():  # what the comparison below saw
                        scores[n]["pooled"] = {"folds": 1 + len(folds), "n_val": y_sel.numel()}
                        scores[n]["pooled"] |= {k[4:]: rec[k] for k in _VAL_KEYS[:3]}
                else:
                    sel[ens] = info
                margins = margins_over_default(
                    {n: r for n, r in sel.items() if n != ens}, sel[ens], y_sel, p.selection_metric
                )
                for n, (diff, se) in margins.items():
                    scores[n]["vs_default"] = {"diff": diff, "se": se}
                ahead = [n for n, (diff, se) in margins.items() if diff > p.selection_margin * se]
                if p.select == STACK:
                    # a convex mix of every candidate, weighted by the likelihood of the
                    # held-out labels (all folds) under the mix of their probabilities
                    pooled = {n: np.concatenate(probas[n]) for n in probas} if folds else None
                    plan, scores[STACK], stack_first = fit_stack(
                        cands, runs, pooled, y_sel, y_va, cw, names, p.hidden, 1 + len(folds),
                        margin=p.selection_margin, seed=p.random_state,
                    )  # fmt: skip
                    chosen, hp = STACK, f_run[1]
                    branches, hidden = list(range(len(xs))), list(p.hidden)
                elif ahead:
                    chosen = max(ahead, key=lambda n: score_of(sel[n]))
                    _, hp, st0, info0 = runs[chosen]
                    best_first = (st0, info0)
                    _, branches, hidden = next(c for c in cands if c[0] == chosen)
                else:
                    hp, best_first = f_run[1], (f_run[2], f_run[3])
                    chosen, branches, hidden = ens, cands[0][1], cands[0][2]
                    linear_run = (l_run[2], l_run[3])
        if plan is not None:
            states, member_hidden, member_weights = train_stack(
                plan, cands, runs, seeds, p.refit, tensors, y_t, run, progress, common=common,
                scale_of=scale_of,
            )  # fmt: skip
            infos = [stack_first]  # the stack's probabilities on the first fold
        else:
            for i, seed in enumerate(seeds):
                # a logistic regression is deterministic: its selection run serves every seed
                if best_first is not None and (i == 0 or not hidden):
                    st, info = best_first
                else:
                    st, info = run(branches, hidden, hp, seed)
                    if n_search == 1 and i == 0:
                        record(chosen, hp, info)
                        scores[chosen] = {
                            "reps": [names[j] for j in branches],
                            "hidden": list(hidden),
                            **{k: info[k] for k in _VAL_KEYS},
                            "hyperparameters": hyper_dict(hp, hidden, info.get("C", LINEAR_C)),
                        }
                states.append(st)
                infos.append(info if linear_run is None else mean_of(info, linear_run[1], y_va, cw))
                progress.update()
            if p.refit and hidden:
                # each seed network retrained on every labelled reference cell (validation
                # ones included) for the epochs its early stopping chose on the split
                for i, seed in enumerate(seeds):
                    states[i] = refit_on_all(
                        [tensors[j] for j in branches], y_t, hidden=hidden, hp=hp,
                        epochs=infos[i]["best_epoch"], seed=seed, C=LINEAR_C, common=common,
                        scale=scale_of(branches),
                    )  # fmt: skip
                    progress.update()
    progress.close()
    if member_weights is None:
        member_hidden = [list(hidden)] * len(states)
    # the logistic regression's C (chosen on validation), when the model has one
    lin = linear_run[1] if linear_run is not None else infos[0] if not hidden else {}
    lin_C = float(lin.get("C", LINEAR_C))
    refit = split is not None and p.refit and (linear_run is not None or not hidden)
    if refit:
        # the logistic regression needs no early stopping: once chosen (alone or in the
        # average) it is refit on every labelled reference cell, validation ones included
        # (the validation scores above are those of the fit on the training part)
        lin_state = refit_on_all(
            [tensors[i] for i in branches], y_t, hidden=[], hp=hp, epochs=0, seed=0, C=lin_C,
            common=common,
        )  # fmt: skip
        if not hidden:
            states = [lin_state] * len(states)
    if linear_run is not None:
        # the logistic regression is deterministic: one copy per seed network makes the
        # ensemble's average exactly half MLPs, half logistic regression
        states += [lin_state if refit else linear_run[0]] * len(seeds)
        member_hidden += [[]] * len(seeds)
    validation = summarise_validation(infos, split, codes, n_classes)
    validation.update(n_train=int(n_train), n_val=int(n_val))
    selection = {
        "select": p.select,
        "metric": p.selection_metric,
        "chosen": chosen,
        "reps": [names[i] for i in branches],
        "hidden": list(hidden),
        "candidates": scores,
        "refit_on_all": bool(split is not None and p.refit),
        "folds": 1 + len(folds) if split is not None else 0,
        "grouped": groups is not None and split is not None,
    }
    if plan is not None:
        selection["weights"] = dict(plan)  # the kept candidates, renormalised
    if len(cands) > 1:
        logg.info(
            "    model selection on validation: "
            + ", ".join(
                f"{n} {s[f'val_{p.selection_metric}']:.3f}"
                if p.selection_metric != "loss"
                else f"{n} {s['val_loss']:.3f}"
                for n, s in scores.items()
            )
            + f" -> {chosen}"
            + (f" ({scores[STACK]['kept']})" if plan is not None else "")
        )
    logg.debug(f"trained {len(states)} networks")
    return TrainResult(
        states=states,
        hyperparameters=(
            {**hp.as_dict(), "weight_decay": p.weight_decay}
            if hidden
            else hyper_dict(hp, [], lin_C)
        )
        | ({"C": lin_C} if linear_run is not None else {}),
        validation=validation,
        grid=grid,
        seeds=seeds,
        branches=list(branches),
        selection=selection,
        hidden=list(hidden),
        member_hidden=member_hidden,
        member_weights=member_weights,
    )
