"""Neural annotators: the MLP probe (one representation) and scMPT (several, fused).

Both train a :class:`genept.models.ScMPTModel` (the network, grid search, seed ensemble,
save/load live in :mod:`genept.models.scmpt`) and write its predictions in the layout of
:mod:`._common`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from anndata import AnnData

from ..._core._docs import doc_adata, doc_copy, doc_device, doc_params
from ..._core._labels import as_key_list, check_key_added, check_query, paired_reps
from ..._core._maps import MODEL_MAPS_WARNING
from ..._utils import check_adata, write_results
from ...models.scmpt import ScMPTModel, ScMPTParams
from ._common import annotation_writes, query_metrics

__all__ = ["annotate_mlp", "annotate_scmpt"]


def _write_model_results(
    adata: AnnData,
    model: ScMPTModel,
    *,
    method: str,
    params: dict[str, Any],
    label_key: str | None,
    key_added: str,
    device: str,
    n_jobs: int | None,
    copy: bool,
    maps_checked: bool = False,
) -> AnnData | None:
    with warnings.catch_warnings():
        if maps_checked:  # warned before training against the reference itself
            warnings.filterwarnings("ignore", message=MODEL_MAPS_WARNING)
        p = model.predict_proba(adata, device=device, n_jobs=n_jobs).to_numpy()
    empty = np.isnan(p).all(axis=1)
    pred = np.asarray(model.classes, dtype=object)[np.nan_to_num(p, nan=-1).argmax(1)]
    pred[empty] = None
    uns: dict[str, Any] = {
        "method": method,
        "params": params,
        "hyperparameters": model.hyperparameters,
        "validation": model.validation,
        "n_empty": int(empty.sum()),
    }
    if model.selection:
        uns["selection"] = model.selection
    if model.grid and model.grid.get("lr"):
        uns["grid"] = model.grid
    metrics = query_metrics(adata, label_key, pred)
    if metrics is not None:
        uns["metrics"] = metrics
    writes = annotation_writes(adata, key_added, model.classes, p, uns, pred=pred)
    return write_results(adata, writes, copy=copy)


@doc_params(doc_copy=doc_copy, doc_device=doc_device)
def annotate_mlp(
    adata: AnnData,
    reference: AnnData,
    *,
    use_rep: str = "X_genept_w",
    label_key: str = "cell_type",
    hidden: int | Sequence[int] = (256,),
    lr: float = 1e-3,
    epochs: int = 200,
    batch_size: int = 64,
    decay: float = 1.0,
    weight_decay: float = 1e-4,
    val_size: float = 0.1,
    early_stopping: bool = True,
    patience: int = 10,
    class_weight: Literal["balanced"] | Mapping[str, float] | None = None,
    standardize: bool = True,
    network_scaling: Literal["branch", "feature"] = "branch",
    random_state: int = 0,
    device: str = "auto",
    n_jobs: int | None = None,
    save: str | os.PathLike | None = None,
    key_added: str = "genept_mlp",
    copy: bool = False,
) -> AnnData | None:
    """Annotate cells with an MLP probe trained on one frozen representation.

    The scMPT paper's baseline (a small MLP on a frozen encoder, there scikit-learn's
    default :class:`~sklearn.neural_network.MLPClassifier`), here in torch: dense ReLU
    layers of widths ``hidden``, a softmax output, AdamW, cross-entropy. Early stopping
    on the loss of a stratified validation split (``val_size``) of the reference keeps
    the best epoch; ``val_size=0`` trains on all cells for ``epochs``.

    Parameters
    ----------
    adata, reference, use_rep, label_key, key_added, copy
        As in :func:`annotate_knn`.
    hidden
        Widths of the hidden layers.
    lr, epochs, batch_size, decay, weight_decay
        AdamW learning rate, most epochs, mini-batch size, per-epoch exponential
        learning-rate decay (1: constant) and decoupled weight decay.
    val_size, early_stopping, patience
        Validation fraction, whether to stop when its loss has not improved for
        ``patience`` epochs (the best epoch's weights are kept).
    class_weight
        ``None``, ``"balanced"`` (weights inversely proportional to class size) or a
        ``{class: weight}`` dict for the loss.
    standardize
        z-score each input dimension with the reference's mean and SD (stored with the
        model and applied to ``adata``).
    network_scaling
        ``"branch"`` (default): the network sees the representation centred and divided
        by one number (the root mean square of its dimensions' SDs), so that it keeps
        its own geometry; ``"feature"``: every dimension z-scored. See
        :func:`annotate_scmpt`.
    random_state
        Seed of the split, initialisation and batch order (the global torch RNG is not
        touched).
    {doc_device}
    n_jobs
        CPU threads for torch while training and predicting; ``None``:
        :attr:`genept.settings.n_jobs`, else the cores not busy with other processes
        (see :func:`annotate_scmpt`). torch's thread count is restored afterwards.
    save
        Folder where the trained probe is saved (:meth:`ScMPTModel.save`; checked
        before training), recorded in ``uns[key_added]["params"]["saved_to"]`` so that
        :func:`genept.tl.explain_annotation` finds it.

    Returns
    -------
    As :func:`annotate_knn` (empty cells get no label); ``uns[key_added]`` also holds
    ``hyperparameters`` and ``validation`` (accuracy and macro-F1 on the validation split).

    Examples
    --------
    >>> gpt.tl.annotate_mlp(query, reference, use_rep="X_genept_w", label_key="cell_type")  # doctest: +SKIP
    """
    check_adata(adata)
    check_query(adata)
    check_key_added(key_added, label_key)
    if not isinstance(use_rep, str):
        raise TypeError(
            f"annotate_mlp takes one obsm key, got {use_rep!r}; use annotate_scmpt to fuse several"
        )
    p = ScMPTParams(
        hidden=hidden,
        lr_grid=(lr,),
        epochs_grid=(epochs,),
        batch_size_grid=(batch_size,),
        decay_grid=(decay,),
        weight_decay=weight_decay,
        val_size=val_size,
        n_seeds=1,
        early_stopping=early_stopping,
        patience=patience,
        class_weight=class_weight,
        standardize=standardize,
        network_scaling=network_scaling,
        random_state=random_state,
        device=device,
        n_jobs=n_jobs,
    )
    paired_reps(adata, reference, [use_rep])  # widths and gene maps, before training
    if save is not None:
        ScMPTModel.check_save_path(save)  # fail before training, not after
    model = ScMPTModel.fit(reference, label_key=label_key, reps=[use_rep], params=p)
    params = {
        "use_rep": use_rep,
        "label_key": label_key,
        "hidden": model.hidden,
        "lr": lr,
        "epochs": epochs,
        "batch_size": batch_size,
        "decay": decay,
        "weight_decay": weight_decay,
        "val_size": val_size,
        "early_stopping": early_stopping,
        "patience": patience,
        "class_weight": p.class_weight,
        "standardize": standardize,
        "network_scaling": network_scaling,
        "random_state": random_state,
        "device": p.torch_device(),
    }
    if save is not None:
        params["saved_to"] = str(model.save(save))
    return _write_model_results(
        adata,
        model,
        method="mlp",
        params=params,
        label_key=label_key,
        key_added=key_added,
        device=device,
        n_jobs=n_jobs,
        copy=copy,
        maps_checked=True,
    )


@ScMPTParams.document
@doc_params(doc_adata=doc_adata, doc_copy=doc_copy)
def annotate_scmpt(
    adata: AnnData,
    reference: AnnData | None = None,
    *,
    label_key: str = "cell_type",
    expr_rep: str = "X_scGPT",
    text_rep: str = "X_genept_s",
    reps: Sequence[str] | None = None,
    model: ScMPTModel | str | os.PathLike | None = None,
    key_added: str = "genept_scmpt",
    save: str | os.PathLike | None = None,
    copy: bool = False,
    params: ScMPTParams | None = None,
    **options: Any,
) -> AnnData | None:
    """Annotate cells with scMPT: a fusion network on two (or more) frozen representations.

    scMPT (section 3.2, appendix A.2): each representation -- by default scGPT's
    ``obsm[expr_rep]`` and a text encoder's ``obsm[text_rep]`` -- goes through its own
    dense layer of width ``hidden`` with ReLU; the outputs are concatenated and a softmax
    layer predicts the label. Training uses AdamW with an exponential learning-rate decay
    (stepped each epoch) and cross-entropy. The initial learning rate, epochs, batch size
    and decay rate are chosen by grid search on a stratified validation split
    (``val_size``) of the reference, scoring each configuration with seed
    ``random_state``; the chosen configuration is then trained with ``n_seeds`` seeds
    (``random_state``, ``random_state + 1``, ...), the mean and SD of their validation
    accuracy and macro-F1 are reported and the query is predicted with the seeds'
    averaged probabilities.

    **Stacking** (``select="stack"``, the default): on the same validation split the
    fusion is trained together with each representation alone (the same network with
    one branch: an MLP probe; and a logistic regression, ``"<key> (linear)"``) and the
    linear fusion (``"linear"``: a logistic regression on the concatenated
    standardised representations). The query is
    predicted with a weighted average of their probabilities, the weights chosen to
    maximise the likelihood of the held-out labels (stacking; the "super learner" of
    van der Laan, Polley & Hubbard 2007): a weak or noisy branch gets little weight
    and complementary ones share it, so the model does not fall below its better
    branch by more than noise. Below 2,000 reference cells the candidates are also
    trained on further folds of the reference (``selection_folds="auto"``: a
    stratified cross-validation whose first fold is the validation split, until about
    400 held-out cells are pooled) and the weights are fitted on all held-out cells.
    (The paper's fusion alone can fall below its better input when the other one is
    weak or noisy: on pbmc68k_reduced, PCA fused with GenePT-s scored 0.771 against
    0.829 for the PCA probe.) ``select="best"`` keeps one candidate, or the average of
    the fusion and the linear fusion unless another candidate is better by more than
    ``selection_margin`` standard errors; ``select="fusion"`` keeps the paper's
    fusion-only training. The weights and every candidate's validation scores are in
    ``uns[key_added]["selection"]``.

    **Input scaling.** Each representation is standardised with the reference's
    statistics (``standardize``). The logistic regressions see every dimension
    z-scored; the networks (``network_scaling="branch"``, the default) see each
    representation centred and divided by one number, the root mean square of its
    dimensions' standard deviations, so that it keeps its own geometry: a PCA's
    trailing components and rarely expressed genes stay small instead of being blown
    up to the scale of the informative ones. ``network_scaling="feature"`` z-scores
    every dimension for the networks too (the default before).

    The paper used ``hidden=4096``, 5 seeds and a per-dataset grid over the four
    hyper-parameters whose values it does not list; :data:`SCMPT_PAPER_GRID` is a grid
    of that kind (81 configurations). The defaults here -- ``hidden=512``, learning rate
    1e-3, at most 30 epochs with early stopping (patience 5), batches of 64, decay
    0.95, 3 seeds -- reach the same accuracy as width 4096 with two learning rates on
    pbmc68k_reduced (5 stratified splits: 0.809 vs 0.813 mean, 0.829 vs 0.814 on split
    0) in a fraction of the time. With the stack (four folds for 560 cells, one for
    2,400), ``benchmarks/bench_scmpt_speed.py`` measured 11 s for 560 reference cells
    and 12 s for 2,400 on 2 quiet cores, 23 s and 20 s while two other processes kept
    both cores busy, where the former defaults (width 4096, the fusion only) took 32 s
    and 148 s busy in the same run. On CPU, torch runs with as many threads as there are cores
    not busy with other processes (``n_jobs``): its default of one thread per core made
    training 20-50 times slower on a busy machine.

    Parameters
    ----------
    {doc_adata}
        The query cells to annotate.
    reference
        Labelled cells with the same representations; not needed with ``model``.
    label_key
        Label column of ``reference.obs`` (missing labels -- NaN, ``""``, ``"nan"`` -- are
        dropped with a warning); when ``adata.obs`` has it too, query metrics are
        computed (labels compared by value); ``key_added`` must differ from it.
    expr_rep, text_rep
        The two ``obsm`` keys fused (any two keys work, e.g. ``"X_pca"``).
    reps
        Several ``obsm`` keys (one branch each); overrides ``expr_rep``/``text_rep``.
    {scmpt_params}
    model
        A trained :class:`ScMPTModel` (or the folder it was saved to): annotate
        ``adata`` with it, without training (``reference`` must then be ``None``).
    key_added
        Where results are written.
    save
        Folder where the trained model is saved (:meth:`ScMPTModel.save`); checked
        before training (an existing file there is refused).
    {doc_copy}

    Returns
    -------
    As :func:`annotate_knn` (empty cells -- all zeros in any of the representations,
    also one the chosen model does not read -- get no label); ``uns[key_added]`` also
    holds ``hyperparameters`` (the chosen configuration), ``selection`` (``select``,
    ``metric``, ``chosen``: ``"fusion"`` or the ``obsm`` key of the winning branch,
    ``reps`` it reads, ``folds``, and ``candidates``: each candidate's best validation
    accuracy, macro-F1, loss, best epoch and hyper-parameters on the validation split,
    and with several folds ``pooled``: its accuracy, macro-F1 and loss on the held-out
    cells of all folds, which the selection compared), ``grid`` (the same for every
    candidate and configuration, with a ``candidate`` column) and ``validation``
    (``accuracy_mean``, ``accuracy_sd``, ``f1_macro_mean``, ``f1_macro_sd`` over seeds
    -- sample SD --, per-seed values and the seed ensemble's
    ``ensemble_accuracy``/``ensemble_f1_macro``). The validation split also chose the
    model and hyper-parameters, so these scores are optimistic; use a labelled query
    for an unbiased estimate.

    Examples
    --------
    >>> gpt.tl.annotate_scmpt(query, reference, label_key="cell_type", save="scmpt_model")  # doctest: +SKIP
    >>> m = gpt.models.ScMPTModel.load("scmpt_model")  # doctest: +SKIP
    >>> gpt.tl.annotate_scmpt(other, model=m)  # doctest: +SKIP
    >>> query.uns["genept_scmpt"]["selection"]["chosen"]  # doctest: +SKIP
    'fusion'
    >>> gpt.tl.annotate_scmpt(query, reference, select="fusion")  # the paper: fusion only  # doctest: +SKIP
    >>> from genept.models import SCMPT_PAPER_GRID as G  # doctest: +SKIP
    >>> gpt.tl.annotate_scmpt(query, reference, hidden=4096, n_seeds=5, lr_grid=G["lr"], epochs_grid=G["epochs"], batch_size_grid=G["batch_size"], decay_grid=G["decay"], select="fusion", device="cuda")  # doctest: +SKIP
    """
    check_adata(adata)
    check_query(adata)
    check_key_added(key_added, label_key)
    p = ScMPTParams.from_options(params, **options)
    if model is not None:
        if reference is not None:
            raise ValueError(
                "pass either `reference` (to train) or `model` (a trained one), not both"
            )
        fitted = model if isinstance(model, ScMPTModel) else ScMPTModel.load(model)
        info = {
            "reps": fitted.reps,
            "label_key": fitted.label_key,
            "hidden": fitted.hidden,
            "n_seeds": len(fitted.seeds),
            "pretrained": True,
            "device": p.torch_device(),
        }
    else:
        if reference is None:
            raise TypeError("annotate_scmpt needs a labelled `reference` or a trained `model`")
        keys = as_key_list(reps if reps is not None else [expr_rep, text_rep], "reps")
        paired_reps(adata, reference, keys)  # widths and gene maps, before training
        if save is not None:
            ScMPTModel.check_save_path(save)  # fail before training, not after
        fitted = ScMPTModel.fit(reference, label_key=label_key, reps=keys, params=p)
        info = {
            "reps": keys,
            "label_key": label_key,
            **p.as_dict(),
            "hidden": fitted.hidden,
            "device": p.torch_device(),
            "pretrained": False,
        }
        if save is not None:
            info["saved_to"] = str(fitted.save(save))
    return _write_model_results(
        adata,
        fitted,
        method="scmpt",
        params=info,
        label_key=label_key,
        key_added=key_added,
        device=p.device,
        n_jobs=p.n_jobs,
        copy=copy,
        maps_checked=reference is not None,
    )
