"""The trained scMPT classifier: :class:`ScMPTModel` with fit, predict, save and load.

scMPT (section 3.2, appendix A.2): one dense ReLU branch per frozen representation,
concatenated, softmax output; hyper-parameters chosen by grid search on a stratified
validation split, a seed ensemble. Saved as a folder of two files written atomically
as a pair (``config.json`` + ``weights.pt`` carrying the same save id) and loaded with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg

from ..._core._device import resolve_device, torch_threads
from ..._core._labels import as_key_list, check_query, empty_rows, get_rep, reference_labels
from ..._core._maps import check_gene_maps, recorded_gene_maps
from ..._utils import check_adata
from ._params import ScMPTParams, takes_params

__all__ = ["ScMPTModel"]


class ScMPTModel:
    """A trained scMPT classifier: one dense ReLU branch per frozen representation.

    Built by :meth:`fit` (or :func:`annotate_scmpt` with ``save=``), stored by
    :meth:`save` and read back by :meth:`load`; :meth:`predict_proba` or
    ``annotate_scmpt(adata, model=model)`` annotate new cells without retraining. With a
    single representation it is the MLP probe of :func:`annotate_mlp`.

    Attributes
    ----------
    reps
        ``obsm`` keys of the branches, in order.
    widths
        Input width of each branch.
    classes
        Class names (output order).
    hidden
        Widths of each branch's dense layers (scMPT: ``[4096]``; ``[]`` for the linear
        fusion).
    member_hidden
        The hidden widths of each network of ``state_dicts`` (``[]``: a logistic
        regression; ``"fusion+linear"``: the seed networks, then as many copies of the
        logistic regression, so that their average is half of each).
    member_weights
        The weight of each network in the averaged probabilities (equal, but for the
        stack of ``select="stack"``: each kept candidate's weight, split among its
        seeds). A member that reads fewer branches than ``reps`` is stored as a network
        over all of them with zero weights for the others.
    label_key
        Label column the model was trained on.
    hyperparameters
        ``lr``, ``epochs``, ``batch_size``, ``decay``, ``weight_decay`` used.
    validation
        Validation results of the seed ensemble (mean/SD over seeds); for the stack,
        those of its weighted mix on the validation split (one value, SD 0).
    grid
        Validation results of every (candidate, grid configuration) pair (column lists).
    branches
        Indices into ``reps`` of the representations the networks read: all of them
        for the fusion and the stack, one when a single branch validated best
        (``select="best"``).
    selection
        The model selection: ``select`` (``"stack"``, ``"best"`` or ``"fusion"``),
        ``metric``, ``chosen`` (``"stack"``, ``"fusion"``, ``"linear"``,
        ``"fusion+linear"`` or the ``obsm`` key of the winning branch), ``reps`` (the
        keys it reads), ``weights`` (the stack's candidates and their weights) and
        ``candidates`` (each candidate's validation accuracy, macro-F1, loss, best
        epoch and hyper-parameters; ``pooled``: on the held-out cells of every fold).
        Empty for models saved before genept recorded it (they are fusions of all
        ``reps``).

    Notes
    -----
    Prediction needs every key of ``reps`` in ``obsm``, also those the chosen network
    does not read: a cell that is empty (all zeros) in any of them gets no label.
    """

    _FORMAT = "genept-scmpt"
    #: 2: ``branches`` and ``selection`` (version-1 folders load as fusions of all reps);
    #: 3: ``member_hidden`` (the linear and fusion+linear candidates);
    #: 4: ``member_weights`` (``select="stack"``)
    _VERSION = 4

    def __init__(
        self,
        *,
        reps: Sequence[str],
        widths: Sequence[int],
        classes: Sequence[str],
        hidden: Sequence[int],
        state_dicts: Sequence[Mapping[str, Any]],
        means: Sequence[np.ndarray],
        stds: Sequence[np.ndarray],
        label_key: str | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
        validation: Mapping[str, Any] | None = None,
        grid: Mapping[str, Any] | None = None,
        seeds: Sequence[int] | None = None,
        branches: Sequence[int] | None = None,
        selection: Mapping[str, Any] | None = None,
        member_hidden: Sequence[Sequence[int]] | None = None,
        member_weights: Sequence[float] | None = None,
        gene_maps: Mapping[str, str | None] | None = None,
    ):
        self.reps = list(reps)
        self.gene_maps = {k: (str(v) if v else None) for k, v in dict(gene_maps or {}).items()}
        self.widths = [int(w) for w in widths]
        self.classes = [str(c) for c in classes]
        self.hidden = [int(h) for h in hidden]
        self.state_dicts = list(state_dicts)
        self.means = [np.asarray(m, dtype=np.float32) for m in means]
        self.stds = [np.asarray(s, dtype=np.float32) for s in stds]
        self.label_key = label_key
        self.hyperparameters = dict(hyperparameters or {})
        self.validation = dict(validation or {})
        self.grid = dict(grid or {})
        self.seeds = list(seeds) if seeds is not None else list(range(len(self.state_dicts)))
        if not (len(self.reps) == len(self.widths) == len(self.means) == len(self.stds)):
            raise ValueError("reps, widths, means and stds must have one entry per branch")
        if not self.state_dicts:
            raise ValueError("a model needs at least one trained network (state dict)")
        self.branches = (
            list(range(len(self.reps))) if branches is None else [int(b) for b in branches]
        )
        if (
            not self.branches
            or len(set(self.branches)) != len(self.branches)
            or not all(0 <= b < len(self.reps) for b in self.branches)
        ):
            raise ValueError(
                f"branches must be distinct indices into reps (0..{len(self.reps) - 1}), "
                f"got {self.branches}"
            )
        self.selection = dict(selection or {})
        self.member_hidden = (
            [list(self.hidden)] * len(self.state_dicts)
            if member_hidden is None
            else [[int(h) for h in m] for m in member_hidden]
        )
        if len(self.member_hidden) != len(self.state_dicts):
            raise ValueError(
                f"member_hidden has {len(self.member_hidden)} entries for "
                f"{len(self.state_dicts)} state dicts"
            )
        n = len(self.state_dicts)
        w = np.full(n, 1.0 / n) if member_weights is None else np.asarray(member_weights, float)
        if w.shape != (n,) or not (np.all(np.isfinite(w)) and np.all(w >= 0) and w.sum() > 0):
            raise ValueError(
                f"member_weights must be {n} non-negative numbers (one per state dict), "
                f"got {member_weights!r}"
            )
        self.member_weights = (w / w.sum()).tolist()

    @property
    def net_widths(self) -> list[int]:
        """Input widths of the network's branches (``widths`` of the chosen ``reps``)."""
        return [self.widths[b] for b in self.branches]

    def __repr__(self) -> str:
        return (
            f"ScMPTModel(reps={self.reps}, widths={self.widths}, hidden={self.hidden}, "
            f"n_classes={len(self.classes)}, n_seeds={len(self.seeds)}, "
            f"uses={[self.reps[b] for b in self.branches]})"
        )

    # ---------------------------------------------------------------- training
    @classmethod
    @takes_params()
    def fit(
        cls,
        reference: AnnData,
        *,
        label_key: str = "cell_type",
        reps: Sequence[str] = ("X_scGPT", "X_genept_s"),
        params: ScMPTParams | None = None,
        **options: Any,
    ) -> ScMPTModel:
        """Train on ``reference``: model selection on a validation split, then a seed ensemble.

        With several ``reps``, the fusion and each representation alone are trained on
        the same validation split with every grid configuration, together with the
        linear fusion (a logistic regression); ``select="stack"`` (default) keeps a
        weighted average of them, ``select="best"`` the best (see :attr:`selection`).

        Parameters
        ----------
        reference
            Labelled cells with the representations ``reps`` in ``obsm``. Cells without
            a label, or whose representation is all zeros (empty cells), are left out.
        label_key
            Label column of ``reference.obs``.
        reps
            ``obsm`` keys, one branch each.
        {scmpt_params}

        Returns
        -------
        The trained model.

        Examples
        --------
        >>> m = gpt.models.ScMPTModel.fit(ref, label_key="cell_type", reps=["X_pca", "X_genept_s"], n_seeds=1)  # doctest: +SKIP
        >>> m.selection["chosen"], m.selection["candidates"]["fusion"]["val_accuracy"]  # doctest: +SKIP
        ('fusion', 0.83)
        """
        from ._fit import input_stats  # torch: imported on first use
        from ._train import train

        p = ScMPTParams.from_options(params, **options)
        check_adata(reference, "reference")
        check_query(reference, "reference")
        keys = as_key_list(reps, "reps")
        dev = p.torch_device()
        y, keep = reference_labels(reference, label_key)
        xs = [get_rep(reference, k, "reference") for k in keys]
        empty = empty_rows(xs)
        if (empty & keep).any():
            logg.warning(
                f"{int((empty & keep).sum())} reference cells have an all-zero representation "
                "(empty cells); they are left out of training"
            )
            y = y[~empty[keep]]
            keep = keep & ~empty
            if np.unique(y).size < 2:
                raise ValueError("fewer than two classes remain after dropping empty cells")
        classes, codes = np.unique(y, return_inverse=True)
        xs = [x[keep] for x in xs]
        groups = None
        if p.selection_groups is not None:
            from ._folds import check_groups

            col = p.selection_groups
            if col not in reference.obs:
                raise KeyError(
                    f"selection_groups={col!r} is not a column of reference.obs "
                    f"(columns: {list(reference.obs.columns)})"
                )
            groups = check_groups(
                reference.obs[col].to_numpy()[keep], int(keep.sum()), f"reference.obs[{col!r}]"
            )
        means, stds, factors = [], [], []
        for x in xs:
            if p.standardize:
                m, s, f = input_stats(x)
            else:
                m, s, f = np.zeros(x.shape[1]), np.ones(x.shape[1]), None
            means.append(m.astype(np.float32))
            stds.append(s.astype(np.float32))
            factors.append(f)
        start = logg.info(
            f"training scMPT on {keys} ({int(keep.sum())} cells, {classes.size} classes, "
            f"{math.prod(len(g) for g in p.grids.values())} configurations x {p.n_seeds} "
            f"seeds, device {dev})"
        )
        z = [(x - m) / s for x, m, s in zip(xs, means, stds, strict=True)]
        # network_scaling="branch": the networks see (x - m) / rms, one scale per input
        scales = factors if p.standardize and p.network_scaling == "branch" else None
        with torch_threads(p.n_jobs):
            res = train(z, codes, classes, p, dev=dev, names=keys, scales=scales, groups=groups)
        logg.info(
            f"    finished: {res.hyperparameters}, validation accuracy "
            f"{res.validation['accuracy_mean']:.3f} (SD {res.validation['accuracy_sd']:.3f})",
            time=start,
        )
        return cls(
            reps=keys,
            widths=[x.shape[1] for x in xs],
            classes=classes,
            hidden=res.hidden,
            member_hidden=res.member_hidden,
            member_weights=res.member_weights,
            state_dicts=res.states,
            means=means,
            stds=stds,
            label_key=label_key,
            hyperparameters=res.hyperparameters,
            validation=res.validation,
            grid=res.grid,
            seeds=res.seeds,
            branches=res.branches,
            selection=res.selection,
            gene_maps=recorded_gene_maps(reference, keys),
        )

    # ---------------------------------------------------------------- inference
    def predict_proba(
        self,
        adata: AnnData,
        *,
        device: str = "auto",
        batch_size: int = 4096,
        n_jobs: int | None = None,
    ) -> pd.DataFrame:
        """Class probabilities of ``adata``'s cells, averaged over the seed ensemble.

        Parameters
        ----------
        adata
            Cells with every representation of :attr:`reps` in ``obsm``.
        device
            Torch device (``"auto"``: :attr:`genept.settings.device`).
        batch_size
            Cells per forward pass.
        n_jobs
            CPU threads (see :func:`genept.tl.annotate_scmpt`); torch's thread count is
            restored afterwards.

        Returns
        -------
        A DataFrame indexed by ``obs_names`` with one column per class; cells whose
        representation is all zeros in any of :attr:`reps` (empty cells) get a row of
        NaN.

        Examples
        --------
        >>> m.predict_proba(query).idxmax(axis=1).head()  # doctest: +SKIP
        """
        import torch

        from ._net import make_net, predict

        check_adata(adata)
        check_query(adata)
        dev = resolve_device(device)
        check_gene_maps(
            recorded_gene_maps(adata, self.reps),
            self.gene_maps,
            "of `adata` and the model's reference",
        )
        xs = []
        for key, width in zip(self.reps, self.widths, strict=True):
            x = get_rep(adata, key)
            if x.shape[1] != width:
                raise ValueError(
                    f"obsm[{key!r}] has {x.shape[1]} columns but the model was trained on "
                    f"{width}; use the same encoder (and the same PCA) as the reference"
                )
            xs.append(x)
        empty = empty_rows(xs)
        ts = [torch.from_numpy((xs[b] - self.means[b]) / self.stds[b]) for b in self.branches]
        proba = np.zeros((adata.n_obs, len(self.classes)))
        with torch_threads(n_jobs):
            members = zip(self.state_dicts, self.member_hidden, self.member_weights, strict=True)
            for st, hid, w in members:
                net = make_net(self.net_widths, hid, len(self.classes)).to(dev)
                net.load_state_dict(st)
                proba += w * predict(net, ts, dev, batch_size).reshape(adata.n_obs, -1)
        proba[empty] = np.nan
        return pd.DataFrame(
            proba, index=adata.obs_names.copy(), columns=pd.Index(self.classes, dtype=object)
        )

    def networks(self, device: str = "cpu") -> list[Any]:
        """The trained networks of the seed ensemble, in evaluation mode, frozen.

        Each is a ``torch.nn.Module`` mapping a list of the standardised inputs of
        :attr:`branches` (``(x - means[b]) / stds[b]`` for ``b`` in ``branches``, in
        that order) to class logits; :meth:`predict_proba` averages their softmax
        with :attr:`member_weights`.
        Used by :func:`genept.tl.explain_annotation` to take gradients.

        Examples
        --------
        >>> nets = model.networks()  # doctest: +SKIP
        >>> len(nets) == len(model.state_dicts)  # doctest: +SKIP
        True
        """
        from ._net import make_net

        out = []
        for st, hid in zip(self.state_dicts, self.member_hidden, strict=True):
            net = make_net(self.net_widths, hid, len(self.classes))
            net.load_state_dict(st)
            net.eval()
            for q in net.parameters():
                q.requires_grad_(False)
            out.append(net.to(device))
        return out

    # ---------------------------------------------------------------- persistence
    def config(self) -> dict[str, Any]:
        """Everything but the weights, JSON-serialisable."""
        return {
            "format": self._FORMAT,
            "version": self._VERSION,
            "reps": self.reps,
            "widths": self.widths,
            "classes": self.classes,
            "hidden": self.hidden,
            "member_hidden": self.member_hidden,
            "member_weights": self.member_weights,
            "label_key": self.label_key,
            "n_seeds": len(self.seeds),
            "seeds": self.seeds,
            "hyperparameters": self.hyperparameters,
            "validation": _jsonable(self.validation),
            "grid": _jsonable(self.grid),
            "branches": self.branches,
            "selection": _jsonable(self.selection),
            "gene_maps": self.gene_maps,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model to the folder ``path``: ``config.json`` and ``weights.pt``.

        ``weights.pt`` holds only tensors (state dicts, standardisation vectors), so
        :meth:`load` reads it with ``torch.load(weights_only=True)``.
        """
        import torch

        path = self.check_save_path(path)
        path.mkdir(parents=True, exist_ok=True)
        weights = {
            "state_dicts": [dict(sd) for sd in self.state_dicts],
            "means": [torch.from_numpy(m) for m in self.means],
            "stds": [torch.from_numpy(s) for s in self.stds],
        }
        # both files carry the same id: a save interrupted between the two renames is
        # detected by load() instead of pairing new weights with an old config
        save_id = uuid.uuid4().hex
        weights["save_id"] = save_id
        config = {**self.config(), "save_id": save_id}
        tmp_w, tmp_c = path / f".weights.pt.{save_id}.tmp", path / f".config.json.{save_id}.tmp"
        try:
            torch.save(weights, tmp_w)
            tmp_c.write_text(json.dumps(config, indent=2))
            tmp_w.replace(path / "weights.pt")
            tmp_c.replace(path / "config.json")
        finally:
            for tmp in (tmp_w, tmp_c):
                tmp.unlink(missing_ok=True)
        return path

    @staticmethod
    def check_save_path(path: str | os.PathLike) -> Path:
        """``path`` as a :class:`~pathlib.Path` if :meth:`save` can write there, else a clear error.

        Used before training, so that a bad ``save=`` fails in seconds, not after it.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise FileExistsError(
                f"save={str(path)!r} is an existing file; a model is saved as a folder "
                "(config.json + weights.pt): pass a folder path"
            )
        anc = path
        while not anc.exists():
            anc = anc.parent
        if not anc.is_dir():
            raise NotADirectoryError(f"cannot create the folder {path}: {anc} is a file")
        if not os.access(anc, os.W_OK):
            raise PermissionError(f"cannot write the model to {path}: {anc} is not writable")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> ScMPTModel:
        """Read a model written by :meth:`save` (safe: ``weights_only=True``).

        A damaged ``config.json`` or ``weights.pt`` is named in the error.
        """
        import torch

        from ._net import make_net

        path = Path(path)
        cfg_file, w_file = path / "config.json", path / "weights.pt"
        if not cfg_file.is_file() or not w_file.is_file():
            raise FileNotFoundError(
                f"{path} is not a saved ScMPTModel (needs config.json and weights.pt)"
            )
        try:
            cfg = json.loads(cfg_file.read_text())
            if not isinstance(cfg, dict):
                raise ValueError(f"a JSON {type(cfg).__name__}, not an object")
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(
                f"{cfg_file} is not valid JSON ({e}); the model folder is damaged, save "
                "the model again"
            ) from None
        if cfg.get("format") != cls._FORMAT:
            raise ValueError(
                f"{cfg_file} is not an scMPT model config (format={cfg.get('format')!r})"
            )
        if int(cfg.get("version", 0)) > cls._VERSION:
            raise ValueError(f"{path} was written by a newer genept (version {cfg['version']})")
        try:
            w = torch.load(w_file, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
            raise ValueError(
                f"{w_file} cannot be read ({type(e).__name__}: {e}); it is truncated or "
                "damaged, save the model again"
            ) from None
        if not isinstance(w, dict) or cfg.get("save_id") != w.get("save_id"):
            raise ValueError(
                f"config.json and weights.pt in {path} come from different saves (an "
                "interrupted save?); save the model again"
            )
        try:
            model = cls(
                reps=cfg["reps"],
                widths=cfg["widths"],
                classes=cfg["classes"],
                hidden=cfg["hidden"],
                state_dicts=w["state_dicts"],
                means=[t.numpy() for t in w["means"]],
                stds=[t.numpy() for t in w["stds"]],
                label_key=cfg.get("label_key"),
                hyperparameters=cfg.get("hyperparameters"),
                validation=cfg.get("validation"),
                grid=cfg.get("grid"),
                seeds=cfg.get("seeds"),
                branches=cfg.get("branches"),  # version 1: all reps
                selection=cfg.get("selection"),
                member_hidden=cfg.get("member_hidden"),  # version <= 2: all `hidden`
                member_weights=cfg.get("member_weights"),  # version <= 3: equal
                gene_maps=cfg.get("gene_maps"),  # not recorded before genept 0.2
            )
        except KeyError as e:
            raise ValueError(
                f"{cfg_file} or {w_file} lacks the entry {e}; save the model again"
            ) from None
        for sd, hid in zip(model.state_dicts, model.member_hidden, strict=True):
            # fail now, not at prediction time
            make_net(model.net_widths, hid, len(model.classes)).load_state_dict(sd)
        return model


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
