"""The training options of scMPT, written once: :class:`ScMPTParams`.

:meth:`ScMPTModel.fit <genept.models.scmpt.ScMPTModel.fit>` and
:func:`genept.tl.annotate_scmpt` take these options as keyword arguments (validated
into one :class:`ScMPTParams`) or as ``params=ScMPTParams(...)``; :func:`takes_params`
puts them in both signatures and their docs.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

import numpy as np

from ..._core._device import check_device_name, resolve_device
from ..._core._docs import doc_device, doc_params

__all__ = ["SCMPT_PAPER_GRID", "SELECTION_CELLS", "ScMPTParams", "takes_params"]

#: A grid of the size the scMPT paper searched (appendix A.2 names the four searched
#: hyper-parameters -- initial learning rate, epochs, batch size, exponential decay
#: rate -- but not their values; these are the usual values for such a search).
#: 3**4 = 81 configurations: pass them as ``lr_grid=SCMPT_PAPER_GRID["lr"]`` etc. on a GPU.
SCMPT_PAPER_GRID: dict[str, tuple] = {
    "lr": (1e-2, 1e-3, 1e-4),
    "epochs": (10, 20, 50),
    "batch_size": (32, 64, 128),
    "decay": (0.9, 0.95, 0.99),
}

#: validation cells the candidates of scMPT's model selection are compared on, in all
#: folds (``selection_folds="auto"``): a standard error of about 0.018 on an accuracy of
#: 0.85, and no extra fold from 2,000 reference cells on (the 30-s budget of 2,400 cells)
SELECTION_CELLS = 400

#: the docs of every option, injected into the docstrings of fit and annotate_scmpt
PARAMS_DOC = """\
hidden
    Width of each branch's dense layer (or a list of widths for deeper branches).
lr_grid, epochs_grid, batch_size_grid, decay_grid
    Values searched for the initial learning rate, most epochs, batch size and the
    per-epoch decay factor of :class:`~torch.optim.lr_scheduler.ExponentialLR`.
weight_decay
    AdamW's decoupled weight decay.
val_size
    Fraction of the reference held out (stratified) for the grid search, early
    stopping and validation metrics. If the reference is too small for a stratified
    split (fewer than two cells in most classes, or fewer validation cells than
    classes) or ``val_size=0``, the first value of each grid is used, the model is
    trained on all cells for that number of epochs without early stopping, a warning
    is issued and validation metrics are NaN. Classes with a single cell are kept in
    training only.
n_seeds
    Networks in the seed ensemble.
refit
    After the selection on the validation split, retrain the chosen model on every
    labelled reference cell: each seed network for the number of epochs its early
    stopping chose, a logistic regression to convergence. The validation metrics are
    those of the networks trained on the training part. ``False``: keep those.
early_stopping, patience
    Stop when the validation loss has not improved for ``patience`` epochs and keep
    the best epoch's weights.
class_weight
    ``None``, ``"balanced"`` or ``{class: weight}`` for the loss.
standardize
    z-score each input dimension with the reference's statistics (not in the
    paper; it makes one learning-rate grid fit representations of any scale, e.g.
    PCA). ``False`` feeds the raw embeddings as the paper does.
network_scaling
    How the networks (the fusion and the MLP on each input) see a standardised input.
    ``"branch"`` (default): each input centred and divided by one number, the root
    mean square of its dimensions' standard deviations, so that it keeps its own
    geometry (a PCA's leading components stay larger than its trailing ones, a
    broadly varying gene larger than a rare one) at a scale the learning-rate grid
    fits. ``"feature"``: every dimension z-scored, as the logistic regressions see
    them. The scaling is folded into each network's first layer, so saved models
    and prediction take the z-scored inputs either way. Only with
    ``standardize=True``. With the other defaults on three labelled datasets
    (``benchmarks/annotation_real.py``, 3 splits) ``"branch"`` raised the fusions'
    test accuracy by 0.006 on average (pbmc68k_reduced +0.001, pbmc3k +0.003,
    bassez +0.014; worst cell -0.007) and scMPT on one representation by 0.006.
selection_metric
    Validation score that picks the configuration and the candidate model (ties:
    lower validation loss).
select
    What is trained from the candidates: the fusion of all representations, each
    representation alone (an MLP probe of the same width) and the linear fusion
    ``"linear"`` (no hidden layer: a multinomial logistic regression on the
    concatenated standardised inputs), all scored on the same held-out cells (every
    fold of ``selection_folds``). ``"stack"`` (default): a weighted average of the
    candidates' probabilities -- here also a logistic regression on each
    representation alone, ``"<key> (linear)"`` -- whose weights maximise the
    likelihood of the held-out labels (stacking, the "super learner" of van der Laan et
    al. 2007; candidates under 1% are dropped): a weak or noisy branch gets little
    weight, complementary ones share it. Which candidates are mixed is chosen first:
    each representation's network alone (scMPT on that representation), each
    representation's own candidates, or all of them, each set scored by its
    cross-fitted log-likelihood (its weights fit on four fifths of the held-out cells
    and scored on the fifth, in turn); the set with the fewest candidates within
    ``selection_margin`` standard errors of the best one is kept, so a fusion that
    validation cannot tell apart from one of its branches falls back to that branch
    (``selection["candidates"]["stack"]["kept"]``, the sets' scores under
    ``"options"``): on 10 splits of pbmc68k_reduced, PCA + GenePT-w kept GenePT-w's
    network in 8 and scored 0.846 against 0.847 for scMPT on GenePT-w (0.841 when
    every candidate was mixed). ``"best"``: one candidate, or ``"fusion+linear"`` (the average of
    the fusion's and the linear fusion's probabilities), which is kept unless another
    candidate is better on the held-out cells by more than ``selection_margin``
    standard errors. On three real datasets (pbmc68k_reduced, pbmc3k,
    bassez_tumor_immune; 7 fusions, 3 splits each) ``"stack"`` scored 0.006 higher
    test accuracy than ``"best"`` on average, and fell more than 0.005 below its best
    single-branch model in 2 of 21 cases instead of 6. With a single representation
    there is nothing to select. ``"fusion"``: the fusion only, as in the paper. The
    candidates' scores, the weights and the winner are recorded in
    ``ScMPTModel.selection`` and ``uns[key_added]["selection"]``.
selection_folds
    On how many folds of the reference the candidates are compared: a stratified
    cross-validation whose first fold is the validation split (the others hold out
    disjoint cells of the same size; each trains every candidate once, with the
    configuration, ``C`` and number of epochs the first fold chose, without early
    stopping), so the stacking weights (or the selection) see every held-out cell of
    all folds. ``"auto"`` (default): as many folds as give about 400 validation cells
    in all, at most ``1 / val_size`` -- one fold from 2,000 reference cells on, five
    below 500; ``1``: the validation split alone. A 160-cell validation split has a
    standard error of about 0.03 on an accuracy of 0.85, as large as the differences
    between candidates: on bassez_tumor_immune (792 reference cells, three folds,
    ``select="best"``) PCA + GenePT-w kept PCA alone in 3 of 3 splits and scored
    0.896 test accuracy, as PCA alone, against 0.856 with one fold, which kept the
    average.
selection_groups
    ``obs`` column of the reference with each cell's group -- donor, sample or batch
    -- or ``None`` (default: folds of random cells). With a column, the validation
    split and the selection folds hold out whole groups (scikit-learn's
    ``StratifiedGroupKFold``; at most ``1 / val_size`` folds and as many as there are
    groups), so the grid search, early stopping and the stacking weights measure how
    each candidate transfers to groups it has not seen -- the situation of a query
    from new donors -- instead of to new cells of the same donors. Needs at least two
    groups and no missing value. Measured with two sources in the reference and a
    third as the query (three immune data sets, 4 fusions each): -0.005 mean accuracy
    against the default folds (one held-out source is a noisy estimate of a new one),
    so it is off by default; it is meant for references with many donors.
linear_c
    Inverse L2 strength ``C`` of the linear fusion's logistic regression (1, default:
    scikit-learn's and celltypist's); several values: the one with the lowest
    validation loss on the first fold (the last one without a validation split).
    Choosing among 0.01 / 0.1 / 1 that way was a wash on three real datasets (7
    fusions, 3 splits each: mean test accuracy -0.001, from -0.022 for PCA + GenePT-w
    to +0.019 for PCA + GenePT-s), so the default stays one value.
selection_margin
    (``select="stack"``) How far below the best set of candidates, in standard errors
    of the paired difference of their cross-fitted log-likelihoods over the held-out
    cells, a set with fewer candidates may be and still be kept (the
    one-standard-error rule; ``0``: the set with the best cross-fitted
    log-likelihood). (``select="best"``) How much better on validation a candidate must be than
    ``"fusion+linear"`` to replace it, in standard errors of the average's own
    validation estimate (the one-standard-error rule; for accuracy
    ``sqrt(p (1 - p) / n_val)``); ``0``: the best by ``selection_metric`` (ties keep
    the average). A branch that is pure noise loses by many standard errors, so the
    selection still falls back to the better branch alone.
n_jobs
    CPU threads for torch while training and predicting; ``None``:
    :attr:`genept.settings.n_jobs`, and if that is ``None`` too, the cores this
    process may use minus those other processes keep busy now (at least 1). torch's
    thread count is restored afterwards.
random_state
    Seed of the split and first seed of the ensemble (the global torch RNG is not
    touched).
{doc_device}
params
    All of the above as one :class:`~genept.models.scmpt.ScMPTParams`; keyword
    arguments given as well override its fields.""".replace("{doc_device}", doc_device)


def _floats(v) -> tuple[float, ...]:
    return tuple(float(x) for x in ([v] if np.isscalar(v) else v))


def _ints(v) -> tuple[int, ...]:
    return tuple(int(x) for x in ([v] if np.isscalar(v) else v))


@dataclass(frozen=True, kw_only=True)
class ScMPTParams:
    """Training options of scMPT (see :func:`genept.tl.annotate_scmpt`), validated once.

    Examples
    --------
    >>> p = ScMPTParams(hidden=256, lr_grid=(1e-3,), n_seeds=1)
    >>> p.hidden, p.lr_grid
    ((256,), (0.001,))
    """

    hidden: int | Sequence[int] = 512
    lr_grid: Sequence[float] = (1e-3,)
    epochs_grid: Sequence[int] = (30,)
    batch_size_grid: Sequence[int] = (64,)
    decay_grid: Sequence[float] = (0.95,)
    weight_decay: float = 0.01
    val_size: float = 0.2
    n_seeds: int = 3
    early_stopping: bool = True
    refit: bool = True
    patience: int = 5
    class_weight: Literal["balanced"] | Mapping[str, float] | None = None
    standardize: bool = True
    network_scaling: Literal["branch", "feature"] = "branch"
    selection_metric: Literal["accuracy", "f1_macro", "loss"] = "accuracy"
    select: Literal["stack", "best", "fusion"] = "stack"
    selection_margin: float = 1.0
    selection_folds: int | Literal["auto"] = "auto"
    selection_groups: str | None = None
    linear_c: float | Sequence[float] = 1.0
    n_jobs: int | None = None
    random_state: int = 0
    device: str = "auto"
    _grids: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        hid = _ints(self.hidden)
        if not hid or min(hid) < 1:
            raise ValueError(f"hidden must be positive widths, got {self.hidden!r}")
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen)
        set_("hidden", hid)
        grids = {
            "lr": _floats(self.lr_grid),
            "epochs": _ints(self.epochs_grid),
            "batch_size": _ints(self.batch_size_grid),
            "decay": _floats(self.decay_grid),
        }
        for name, values in grids.items():
            if not values:
                raise ValueError(f"{name}_grid is empty")
            if not all(np.isfinite(values)) or min(values) <= 0:
                raise ValueError(f"{name}_grid must hold positive values, got {list(values)}")
            set_(f"{name}_grid", values)
        set_("_grids", grids)
        set_("device", "auto" if self.device is None else check_device_name(self.device))
        if int(self.n_seeds) < 1:
            raise ValueError(f"n_seeds must be >= 1, got {self.n_seeds}")
        if int(self.patience) < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")
        if self.selection_metric not in {"accuracy", "f1_macro", "loss"}:
            raise ValueError(
                "selection_metric must be 'accuracy', 'f1_macro' or 'loss', got "
                f"{self.selection_metric!r}"
            )
        if not (np.isfinite(float(self.selection_margin)) and float(self.selection_margin) >= 0):
            raise ValueError(
                f"selection_margin must be a finite number >= 0, got {self.selection_margin!r}"
            )
        if self.network_scaling not in {"branch", "feature"}:
            raise ValueError(
                "network_scaling must be 'branch' (one scale per input) or 'feature' "
                f"(z-score every dimension), got {self.network_scaling!r}"
            )
        if self.select not in {"stack", "best", "fusion"}:
            raise ValueError(
                f"select must be 'stack' (a mix of the fusion and each branch, weighted on "
                f"held-out cells), 'best' (the candidate that validates best) or 'fusion' "
                f"(the paper's fusion only), got {self.select!r}"
            )
        if self.n_jobs is not None:
            from ..._core._device import resolve_n_jobs

            resolve_n_jobs(self.n_jobs)  # refuses 0, bools, non-integers
        if not 0 <= float(self.val_size) < 1:
            raise ValueError(f"val_size must be in [0, 1), got {self.val_size}")
        cs = _floats(self.linear_c)
        if not cs or not all(np.isfinite(c) and c > 0 for c in cs):
            raise ValueError(f"linear_c must be positive numbers, got {self.linear_c!r}")
        set_("linear_c", cs)
        f = self.selection_folds
        if not (f == "auto" or (isinstance(f, int | np.integer) and not isinstance(f, bool))):
            raise TypeError(f"selection_folds must be 'auto' or an integer >= 1, got {f!r}")
        most = self.max_folds()
        if f != "auto" and not 1 <= f <= most:
            raise ValueError(
                f"selection_folds must be between 1 and {most} (1 / val_size, val_size="
                f"{self.val_size}), got {f}; or 'auto'"
            )
        g = self.selection_groups
        if g is not None and not (isinstance(g, str) and g):
            raise TypeError(f"selection_groups must be None or an obs column name, got {g!r}")
        if not float(self.weight_decay) >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        cw = self.class_weight
        if isinstance(cw, str) and cw != "balanced":
            raise ValueError(f"class_weight must be None, 'balanced' or a dict, got {cw!r}")
        if not (cw is None or isinstance(cw, str | Mapping)):
            raise TypeError(
                f"class_weight must be None, 'balanced' or a dict, got {type(cw).__name__}"
            )
        set_("class_weight", dict(cw) if isinstance(cw, Mapping) else cw)
        for k, t in (
            ("n_seeds", int),
            ("patience", int),
            ("random_state", int),
            ("val_size", float),
            ("weight_decay", float),
            ("early_stopping", bool),
            ("standardize", bool),
        ):
            set_(k, t(getattr(self, k)))

    def max_folds(self) -> int:
        """The most selection folds ``val_size`` allows (``1 / val_size``; 1 without a split)."""
        return max(1, round(1 / float(self.val_size))) if float(self.val_size) > 0 else 1

    def n_folds(self, n_val: int) -> int:
        """The selection folds for a validation split of ``n_val`` cells (see ``selection_folds``)."""
        if self.selection_folds != "auto":
            return int(self.selection_folds)
        return int(min(self.max_folds(), max(1, math.ceil(SELECTION_CELLS / max(n_val, 1)))))

    @classmethod
    def from_options(cls, params: ScMPTParams | None = None, **options: Any) -> ScMPTParams:
        """``params`` (or the defaults) with ``options`` replacing fields; unknown names refused."""
        names = cls.names()
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise TypeError(f"unknown option(s) {unknown}; the options are {names}")
        if params is not None and not isinstance(params, ScMPTParams):
            raise TypeError(f"params must be an ScMPTParams, got {type(params).__name__}")
        return replace(params, **options) if params is not None else cls(**options)

    @classmethod
    def names(cls) -> list[str]:
        """The option names, in order."""
        return [f.name for f in fields(cls) if f.init]

    @property
    def grids(self) -> dict[str, tuple]:
        """``{"lr": ..., "epochs": ..., "batch_size": ..., "decay": ...}``."""
        return dict(self._grids)

    def torch_device(self) -> str:
        """:attr:`device` resolved (``"auto"`` -> ``"cuda"`` or ``"cpu"``)."""
        return resolve_device(self.device)

    @staticmethod
    def document(fn: Callable) -> Callable:
        """Decorator for functions taking ``params=None, **options``: see :func:`takes_params`."""
        return takes_params()(fn)

    def as_dict(self) -> dict[str, Any]:
        """The options as plain lists/values (for ``uns`` and JSON)."""
        d = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def takes_params(doc_marker: str = "{scmpt_params}") -> Callable:
    """Decorator: put :class:`ScMPTParams`' options into ``fn``'s signature and docstring.

    ``fn`` takes ``params=None, **options``; its signature (for ``help()``, IDEs and
    Sphinx) lists the options as keyword-only parameters with their defaults, and
    ``doc_marker`` in its docstring is replaced by :data:`PARAMS_DOC`.
    """

    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        before = [p for p in sig.parameters.values() if p.kind != p.VAR_KEYWORD]
        defaults = ScMPTParams()
        new = [
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=getattr(defaults, f.name),
                annotation=f.type,
            )
            for f in fields(ScMPTParams)
            if f.init
        ]
        fn.__signature__ = (
            sig.replace(parameters=before[:-1] + new + before[-1:])
            if any(p.name == "params" for p in before[-1:])
            else sig.replace(parameters=before + new)
        )
        if fn.__doc__ and doc_marker in fn.__doc__:
            doc_params(**{doc_marker.strip("{}"): PARAMS_DOC})(fn)
        return fn

    return deco
