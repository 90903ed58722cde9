"""``gpt.tl.explain_annotation``: why a cell got its label, gene by gene of its cell sentence.

scMPT (section 4.3, tables 3-4) explains its text-encoder annotator (an MLP on a frozen
encoder of cell sentences) with two attribution methods over the gene names of the
sentence, integrated gradients and LIME, aggregated per cell type, and checks the top
genes against PanglaoDB markers (:func:`genept.bm.marker_recovery`). This module does the
same for the annotators of genept trained on GenePT-s: the MLP probe
(:func:`~genept.tl.annotate_mlp`) and the scMPT text branch
(:func:`~genept.tl.annotate_scmpt`; the other branches are held at the cell's values).

The explained function is the probability of the target class, computed from the
sentence exactly as ``embed_cells(method="s")`` and the annotator compute it:
encoder -> pooling -> L2 normalisation -> the model's standardisation -> the network ->
softmax (averaged over the seed ensemble).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg
from scipy import sparse

from .._core._device import openmp_unnested
from .._core._keys import recorded_params, sanitize_params
from .._core._progress import progress_bar
from .._settings import settings
from .._utils import (
    check_adata,
    gene_mask,
    get_matrix,
    get_var_names,
    mask_names,
    write_results,
)

if TYPE_CHECKING:
    from ..models.scmpt import ScMPTModel

from ._explain_engine import (
    _Classifier,
    _ig_cell,
    _lime_cell,
    _TextModel,
    integrated_gradients_weights,
)

__all__ = ["explain_annotation", "integrated_gradients_weights"]

#: annotators whose labels can be explained gene by gene
EXPLAINABLE = (
    "gpt.tl.annotate_mlp(..., use_rep='X_genept_s')",
    "gpt.tl.annotate_scmpt(..., text_rep='X_genept_s')",
)


def _explainable_hint() -> str:
    return "the annotators that can be explained are " + " and ".join(EXPLAINABLE)


# ----------------------------------------------------------------------------- plumbing


def _load_model(model, uns: dict) -> ScMPTModel:
    from ..models.scmpt import ScMPTModel

    if model is None:
        saved = (uns.get("params") or {}).get("saved_to")
        if saved is None:
            raise ValueError(
                "explain_annotation needs the trained model: pass model= (an ScMPTModel, "
                "or the folder it was saved to with annotate_mlp/annotate_scmpt(..., "
                "save='folder') / "
                "ScMPTModel.save)"
            )
        model = saved
    if isinstance(model, ScMPTModel):
        return model
    if isinstance(model, str | os.PathLike):
        return ScMPTModel.load(model)
    raise TypeError(f"model must be an ScMPTModel or a folder path, got {type(model).__name__}")


def _text_branch(adata: AnnData, model: ScMPTModel, rep: str | None) -> int:
    if rep is not None:
        if rep not in model.reps:
            raise ValueError(f"rep={rep!r} is not a branch of the model (branches: {model.reps})")
        method = recorded_params(adata, rep).get("method")
        if method not in (None, "s"):
            raise ValueError(
                f"obsm[{rep!r}] is a GenePT-{method} embedding, which has no cell sentence "
                f"to attribute; {_explainable_hint()}"
            )
        return model.reps.index(rep)
    found = [i for i, r in enumerate(model.reps) if recorded_params(adata, r).get("method") == "s"]
    if not found:
        raise ValueError(
            f"the model's branches {model.reps} hold no GenePT-s embedding (uns[...]['params']"
            "['method'] == 's'), so no gene of a cell sentence can be credited (a GenePT-w "
            f"or expression-only model cannot be explained this way); {_explainable_hint()}, "
            "or pass rep= naming the sentence-embedding branch"
        )
    return found[0]


def _pick_cells(
    groups: pd.Series,
    ok: np.ndarray,
    n_cells: int | None,
    rng: np.random.Generator,
) -> np.ndarray:
    rows = []
    for g in sorted(groups[ok].unique(), key=str):
        idx = np.flatnonzero(ok & (groups.to_numpy() == g))
        if n_cells is not None and idx.size > n_cells:
            idx = np.sort(rng.choice(idx, size=n_cells, replace=False))
        rows.append(idx)
    return np.sort(np.concatenate(rows)) if rows else np.zeros(0, np.int64)


def _masked_names(adata, names, mask_var, use_raw: bool, rep: str):
    """Gene names as ``embed_cells`` wrote them: genes outside its ``mask_var`` are missing."""
    if mask_var in (None, "all genes"):
        return names
    if mask_var == "mask" or mask_var not in adata.var:
        raise ValueError(
            f"obsm[{rep!r}] was built from the genes of a mask "
            f"({'a boolean array' if mask_var == 'mask' else f'var[{mask_var!r}]'}) that "
            "adata.var does not hold; store it as a var column and rebuild the embedding with "
            "embed_cells(..., mask_var='<column>') so the sentences can be rebuilt"
        )
    return mask_names(names, gene_mask(adata, mask_var, use_raw)[0])


def explain_annotation(
    adata: AnnData,
    key: str = "genept_mlp",
    method: Literal["ig", "lime"] = "ig",
    *,
    model: ScMPTModel | str | os.PathLike | None = None,
    encoder: Any = None,
    rep: str | None = None,
    groupby: str | None = None,
    groups: Sequence[str] | None = None,
    n_cells: int | None = 20,
    cells: Sequence[str] | None = None,
    n_steps: int = 20,
    baseline: Literal["pad", "zero"] = "pad",
    n_samples: int = 200,
    n_features: int | None = 30,
    kernel_width: float = 25.0,
    alpha: float = 1.0,
    gene_symbols: str | None = None,
    batch_size: int = 16,
    random_state: int = 0,
    check: bool = True,
    key_added: str | None = None,
    show_progress: bool | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Attribute each cell's predicted label to the gene names of its cell sentence.

    scMPT section 4.3: integrated gradients and LIME over the gene names of the
    sentence of an MLP on a frozen text encoder, aggregated per cell type. Explains the
    annotators trained on GenePT-s (:func:`annotate_mlp` with ``use_rep="X_genept_s"``,
    :func:`annotate_scmpt` with a GenePT-s branch; for scMPT the other branches are
    held at each cell's own values). The explained quantity is the probability of the
    target class, computed from the sentence the way ``embed_cells(method="s")`` and
    the annotator compute it (encoder, pooling, L2 normalisation, the model's
    standardisation, network, softmax averaged over seeds).

    * ``method="ig"`` -- integrated gradients (Sundararajan et al. 2017) over the
      encoder's input word embeddings: gradients flow through the (otherwise frozen)
      encoder; the attribution of a gene is the sum over its word pieces. **Baseline**:
      every gene word piece replaced by the ``[PAD]`` embedding (``baseline="pad"``) or
      by zeros (``"zero"``); ``[CLS]``, ``[SEP]`` and the prefix stay, and positions are
      unchanged. The path integral uses ``n_steps`` Gauss-Legendre points; the
      attributions of a cell sum to ``f(x) - f(baseline)`` up to the quadrature error
      (stored per cell, see Returns).
    * ``method="lime"`` -- LIME (Ribeiro et al. 2016): ``n_samples`` sentences with a
      random subset of gene names removed (the first one complete), re-encoded; a
      weighted ridge regression of the target probability on the kept/removed indicators
      (LIME's cosine kernel), refitted on the ``n_features`` genes with the largest
      coefficients (the others get 0). Seeded by ``random_state``; works with any
      encoder (an OpenAI encoder is called for every sample).

    Cells are explained for the class of their group (``groupby``, default the predicted
    labels ``obs[key]``); ``n_cells`` cells per group are drawn (seeded), so a few hundred
    cells take minutes on CPU with MiniLM (IG: about ``n_steps`` forward/backward
    passes per cell; LIME: ``n_samples`` forward passes) and seconds on a GPU, where the
    IG steps and the LIME samples run in batches of ``batch_size``.

    Parameters
    ----------
    adata
        Annotated cells (``obs[key]``, ``uns[key]``) with the GenePT-s embedding the
        model was trained on (``obsm`` and ``uns`` from ``gpt.tl.embed_cells(method="s")``).
    key
        ``key_added`` of the annotator.
    method
        ``"ig"`` (integrated gradients) or ``"lime"``.
    model
        The trained :class:`genept.models.ScMPTModel`, or the folder it was saved to
        (``annotate_scmpt(..., save="folder")`` saves it and records the folder, which is
        then the default; ``ScMPTModel.fit(...).save("folder")`` for the MLP probe).
    encoder
        The text encoder (name or :class:`~genept.encoders.TextEncoder`); default: the one
        recorded in ``uns`` of the GenePT-s embedding. IG needs a local
        sentence-transformers model.
    rep
        The model's GenePT-s branch (``obsm`` key); default: the branch whose ``uns`` says
        ``method == "s"``.
    groupby
        ``obs`` column of the groups explained; each cell is explained for its group's
        class, which must be one of the model's classes (default: ``key``, the predicted
        label; a column of true labels explains why cells *should* get their label).
    groups
        Explain only these groups.
    n_cells
        Cells per group (drawn with ``random_state``; ``None``: all).
    cells
        Explain exactly these ``obs_names`` (overrides ``n_cells``).
    n_steps, baseline
        (IG) Quadrature points and baseline, see above.
    n_samples, n_features, kernel_width, alpha
        (LIME) Perturbed sentences per cell, genes kept in the sparse surrogate
        (``None``: all), kernel width and ridge penalty.
    gene_symbols
        Column of ``var`` with the symbols written in the sentences, as given to
        ``embed_cells`` (not recorded there).
    batch_size
        IG steps / LIME sentences per forward pass.
    random_state
        Seed of the cell draw and of LIME's perturbations (explanations are
        deterministic for a fixed seed).
    check
        Check that the sentences rebuilt here embed to ``obsm[rep]`` (cosine > 0.99) and
        the network reproduces ``model.predict_proba``: a wrong encoder or model is
        reported instead of explained.
    key_added
        Prefix of the results (default ``key + "_attributions"``).
    show_progress
        Progress bar over cells (default ``genept.settings.progress``).
    copy
        Return a modified copy instead of writing to ``adata``.

    Returns
    -------
    ``None``, or a copy with ``copy=True``. Writes

    ``uns[key_added]``
        Tidy :class:`~pandas.DataFrame` with columns ``method``, ``group``, ``gene``,
        ``attribution`` (mean over the group's explained cells, 0 where the gene is not
        in a cell's sentence), ``n_cells`` (explained cells whose sentence has the gene)
        and ``n_cells_group``; sorted by group and decreasing attribution. Rows of the
        other method from an earlier call are kept, so one table holds both.
    ``obsm[key_added + "_" + method]``
        Sparse ``(n_obs, n_genes)`` CSR of per-cell attributions over the genes of the
        matrix the sentences were built from (``raw`` if the embedding used it); rows
        of cells not explained are empty.
    ``uns[key_added + "_params"][method]``
        The parameters, the explained ``cells``, their ``target`` classes, ``f_x`` (target
        probability) and, for IG, ``f_baseline`` and ``completeness_error`` per cell
        (``sum(attributions) - (f(x) - f(baseline))``).

    Examples
    --------
    >>> import scanpy as sc, genept as gpt
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> gpt.tl.embed_cells(adata, method="s", use_raw=True)  # doctest: +SKIP
    >>> m = gpt.models.ScMPTModel.fit(adata, label_key="bulk_labels", reps=["X_genept_s"], n_seeds=1, hidden=[256])  # doctest: +SKIP
    >>> gpt.tl.annotate_scmpt(adata, model=m, key_added="genept_mlp")  # doctest: +SKIP
    >>> gpt.tl.explain_annotation(adata, "genept_mlp", method="ig", model=m)  # doctest: +SKIP
    >>> adata.uns["genept_mlp_attributions"].head()  # doctest: +SKIP
    """
    import torch

    from .. import pp
    from ..encoders import get_encoder

    check_adata(adata)
    if method not in ("ig", "lime"):
        raise ValueError(f"method must be 'ig' (integrated gradients) or 'lime', got {method!r}")
    if baseline not in ("pad", "zero"):
        raise ValueError(f"baseline must be 'pad' or 'zero', got {baseline!r}")
    for name, v, lo in (("n_samples", n_samples, 2), ("batch_size", batch_size, 1)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    integrated_gradients_weights(n_steps)  # validates n_steps
    if n_cells is not None and (not isinstance(n_cells, int | np.integer) or n_cells < 1):
        raise ValueError(f"n_cells must be a positive integer or None, got {n_cells!r}")
    if key not in adata.uns:
        raise KeyError(
            f"adata.uns has no {key!r}: annotate first ({_explainable_hint()}); "
            f"annotations in uns: {[k for k in adata.uns if isinstance(adata.uns[k], dict) and 'classes' in adata.uns[k]]}"
        )
    ann = adata.uns[key]
    ann_method = ann.get("method") if isinstance(ann, dict) else None
    if ann_method not in ("mlp", "scmpt"):
        raise ValueError(
            f"uns[{key!r}] is a {ann_method!r} annotation, which has no differentiable model "
            f"to explain (kNN votes and LLM answers have no gene attributions); "
            f"{_explainable_hint()}"
        )
    fitted = _load_model(model, ann)
    branch = _text_branch(adata, fitted, rep)
    rep = fitted.reps[branch]
    sp = recorded_params(adata, rep)
    if sp.get("hash_names") or sp.get("shuffle"):
        raise ValueError(
            f"obsm[{rep!r}] was built with hashed or shuffled gene names (an ablation); "
            "there are no gene names to credit"
        )
    progress = settings.progress if show_progress is None else show_progress
    key_added = key_added or f"{key}_attributions"
    groupby = groupby or key
    if groupby not in adata.obs:
        raise KeyError(f"groupby={groupby!r} is not a column of adata.obs")
    enc = get_encoder(encoder if encoder is not None else sp.get("model"))
    tm = None
    if method == "ig" or hasattr(getattr(enc, "model", None), "tokenizer"):
        tm = _TextModel(enc)
    device = tm.device if tm is not None else torch.device("cpu")
    clf = _Classifier(fitted, branch, device)
    classes = {c: i for i, c in enumerate(fitted.classes)}

    # cells and their targets
    labels = adata.obs[groupby].astype(object).where(adata.obs[groupby].notna(), None)
    glabels = labels.map(lambda v: None if v is None else str(v))
    in_model = glabels.isin(list(classes)).to_numpy()
    unknown = sorted({g for g in glabels.dropna().unique() if g not in classes})
    if unknown:
        logg.warning(
            f"groups {unknown[:5]} of obs[{groupby!r}] are not classes of the model; "
            "their cells are not explained"
        )
    x_rep = adata.obsm[rep]
    x_rep = x_rep.toarray() if sparse.issparse(x_rep) else np.asarray(x_rep)
    ok = in_model & np.asarray(np.abs(x_rep).sum(1) > 0)
    if groups is not None:
        ok &= glabels.isin([str(g) for g in groups]).to_numpy()
    rng = np.random.default_rng(random_state)
    if cells is not None:
        rows = adata.obs_names.get_indexer(pd.Index(cells))
        if (rows < 0).any():
            raise KeyError(f"cells not in adata.obs_names: {list(np.asarray(cells)[rows < 0][:5])}")
        bad = rows[~ok[rows]]
        if bad.size:
            raise ValueError(
                f"cells {adata.obs_names[bad][:5].tolist()} have no group among the model's "
                "classes or an empty sentence; they cannot be explained"
            )
    else:
        rows = _pick_cells(glabels, ok, n_cells, rng)
    if rows.size == 0:
        raise ValueError(f"no cell to explain (groups of obs[{groupby!r}] vs model classes)")

    # sentences of these cells, as embed_cells built them
    use_raw = bool(sp.get("use_raw", False))
    layer = sp.get("layer")
    layer = None if layer in (None, "X") else layer
    X = get_matrix(adata, layer=layer, use_raw=use_raw)
    names = get_var_names(adata, gene_symbols=gene_symbols, use_raw=use_raw)
    sub = X[np.sort(rows)]
    if hasattr(sub, "compute"):
        sub = sub.compute()
    names = _masked_names(adata, names, sp.get("mask_var", "all genes"), use_raw, rep)
    prefix = str(sp.get("prefix", "") or "")
    plan = pp.sentence_plan(names, prefix=prefix, encoder=enc)
    n_genes = int(sp.get("n_genes", 0) or 0) or None
    sentences = pp.build_sentences(
        sub, plan, n_genes=n_genes, random_state=sp.get("random_state", 0), show_progress=False
    )
    col_of = pd.Series(np.arange(len(names)), index=plan.words).groupby(level=0).first()
    wordlists = [s[len(prefix) :].split(" ") if s else [] for s in sentences]

    if check:
        _check_consistency(tm, enc, clf, fitted, adata, rows, x_rep, prefix, wordlists, batch_size)

    # explain
    n_vars = len(names)
    data_rows, data_cols, data_vals = [], [], []
    targets, fxs, frefs, errors = [], [], [], []
    start = logg.info(f"explaining {rows.size} cells of {key!r} with {method}")
    with (
        progress_bar(rows.size, desc=f"explaining ({method})", unit="cell", show=progress) as bar,
        openmp_unnested(),  # MiniLM's gradients on CPU: see openmp_unnested
    ):
        for r, words in zip(rows, wordlists, strict=True):
            target = classes[glabels.iloc[r]]
            clf.set_others(adata, int(r))
            if method == "ig":
                tok = tm.tokens(prefix, words)
                attr, fx, fref = _ig_cell(
                    tm, clf, tok, len(words), target,
                    n_steps=int(n_steps), baseline=baseline, batch_size=batch_size,
                )  # fmt: skip
                errors.append(float(attr.sum() - (fx - fref)))
                frefs.append(fref)
            else:
                cell_rng = np.random.default_rng([random_state, int(r)])
                attr, fx = _lime_cell(
                    tm, enc, clf, prefix, words, target,
                    n_samples=int(n_samples), n_features=n_features,
                    kernel_width=kernel_width, alpha=alpha, rng=cell_rng, batch_size=batch_size,
                )  # fmt: skip
            targets.append(fitted.classes[target])
            fxs.append(fx)
            cols = col_of.reindex(words).to_numpy()
            data_rows.append(np.full(len(words), r))
            data_cols.append(cols)
            data_vals.append(attr)
            bar.update(1)
    rr = np.concatenate(data_rows).astype(np.int64)
    cc = np.concatenate(data_cols).astype(np.int64)
    vv = np.concatenate(data_vals)
    per_cell = sparse.csr_matrix((vv.astype(np.float32), (rr, cc)), shape=(adata.n_obs, n_vars))
    per_cell.sum_duplicates()

    table = _aggregate(per_cell, rr, cc, rows, glabels, names, method)
    old = adata.uns.get(key_added)
    if isinstance(old, pd.DataFrame) and "method" in old.columns:
        table = pd.concat([old[old["method"] != method], table], ignore_index=True)
    params: dict[str, Any] = {
        "key": key,
        "rep": rep,
        "groupby": groupby,
        "encoder": str(getattr(enc, "model_name", None) or enc.cache_id),
        "n_cells": n_cells,
        "random_state": random_state,
        "use_raw": use_raw,
        "cells": adata.obs_names[rows].tolist(),
        "target": targets,
        "f_x": fxs,
    }
    if method == "ig":
        params.update(
            n_steps=int(n_steps), baseline=baseline, f_baseline=frefs, completeness_error=errors
        )
    else:
        params.update(
            n_samples=int(n_samples), n_features=n_features, kernel_width=kernel_width, alpha=alpha
        )
    all_params = dict(adata.uns.get(f"{key_added}_params", {}) or {})
    all_params[method] = sanitize_params(params)
    writes = [
        ("uns", key_added, table),
        ("obsm", f"{key_added}_{method}", per_cell),
        ("uns", f"{key_added}_params", all_params),
    ]
    return write_results(
        adata, writes, copy=copy, log=lambda msg: logg.info("    finished", time=start, deep=msg)
    )


def _aggregate(per_cell, rr, cc, rows, glabels, names, method) -> pd.DataFrame:
    """Per group and gene: mean attribution over the group's explained cells, cells with the gene."""
    out = []
    g_of_row = glabels.to_numpy()
    for g in sorted({g_of_row[r] for r in rows}, key=str):
        grow = rows[g_of_row[rows] == g]
        block = per_cell[grow]
        sel = np.isin(rr, grow)
        genes = np.unique(cc[sel])
        present = np.bincount(cc[sel], minlength=len(names))[genes]
        mean = np.asarray(block[:, genes].sum(0)).ravel() / grow.size
        df = pd.DataFrame(
            {
                "method": method,
                "group": str(g),
                "gene": np.asarray(names)[genes].astype(str),
                "attribution": mean.astype(np.float64),
                "n_cells": present.astype(np.int64),
                "n_cells_group": int(grow.size),
            }
        )
        out.append(df.sort_values("attribution", ascending=False, kind="stable"))
    return pd.concat(out, ignore_index=True)


def _check_consistency(tm, enc, clf, fitted, adata, rows, x_rep, prefix, wordlists, batch_size):
    """Rebuilt sentences must embed to the stored GenePT-s rows, the network must match the model."""
    import torch

    take = np.arange(min(len(rows), 8))
    texts = [prefix + " ".join(wordlists[i]) for i in take]
    with torch.no_grad():
        if tm is not None:
            enc_ids = tm.tokenizer(texts, truncation=True, max_length=tm.max_len)["input_ids"]
            emb = tm.embed_ids([np.asarray(e) for e in enc_ids]).cpu().numpy()
        else:
            emb = enc.encode(texts, cache=True, show_progress=False)
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        stored = x_rep[rows[take]].astype(np.float64)
        stored /= np.maximum(np.linalg.norm(stored, axis=1, keepdims=True), 1e-12)
        cos = (emb * stored).sum(1)
        if (cos < 0.99).any():
            raise ValueError(
                f"the cell sentences rebuilt here do not embed to obsm[{fitted.reps[clf.branch]!r}] "
                f"(cosine {cos.min():.3f}); pass the encoder= and gene_symbols= used by "
                "embed_cells, or re-run embed_cells (check=False skips this test)"
            )
        sub = adata[rows[take]]
        want = fitted.predict_proba(sub, device="cpu").to_numpy()
        got = np.zeros_like(want)
        for j, r in enumerate(rows[take]):
            clf.set_others(adata, int(r))
            e = torch.as_tensor(x_rep[r : r + 1], dtype=torch.float32, device=clf.device)
            for c in range(want.shape[1]):
                got[j, c] = float(clf.proba(e, c)[0])
        if not np.allclose(got, want, atol=1e-4):
            raise RuntimeError(
                "the network rebuilt for explanations does not reproduce ScMPTModel.predict_proba "
                f"(max difference {np.abs(got - want).max():.2g}); this model layout is not "
                "supported by explain_annotation"
            )
        clf.others = []
