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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg
from scipy import sparse

from .._core._keys import sanitize_params, uns_key
from .._core._progress import progress_bar
from .._settings import settings
from .._utils import check_adata, get_matrix, get_var_names, write_results

if TYPE_CHECKING:
    from ..models.scmpt import ScMPTModel

__all__ = ["explain_annotation", "integrated_gradients_weights"]

#: annotators whose labels can be explained gene by gene
EXPLAINABLE = (
    "gpt.tl.annotate_mlp(..., use_rep='X_genept_s')",
    "gpt.tl.annotate_scmpt(..., text_rep='X_genept_s')",
)


def _explainable_hint() -> str:
    return "the annotators that can be explained are " + " and ".join(EXPLAINABLE)


# ----------------------------------------------------------------------------- numerics


def integrated_gradients_weights(n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Points ``alpha`` in (0, 1) and weights of the Gauss-Legendre rule for the IG path integral.

    ``IG_i = (x_i - x'_i) * sum_k w_k * df/dx_i(x' + alpha_k (x - x'))``; the weights
    sum to 1. Gauss-Legendre (Captum's default) is exact for polynomials of degree
    ``2 n_steps - 1`` along the path, so 20 steps usually give the completeness
    ``sum IG = f(x) - f(x')`` within a few percent of ``|f(x) - f(x')|``.

    Parameters
    ----------
    n_steps
        Number of points (>= 1).

    Returns
    -------
    ``(alphas, weights)``, each of length ``n_steps``.

    Examples
    --------
    >>> a, w = integrated_gradients_weights(4)
    >>> round(float(w.sum()), 6), bool(((a > 0) & (a < 1)).all())
    (1.0, True)
    """
    if isinstance(n_steps, bool) or not isinstance(n_steps, int | np.integer) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    x, w = np.polynomial.legendre.leggauss(int(n_steps))
    return (x + 1) / 2, w / 2


def _lime_masks(n_genes: int, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """LIME's text perturbations as keep-masks (row 0 keeps every gene).

    Each other row drops a uniform number (1 .. n_genes - 1) of genes chosen at random,
    so at least one gene stays.
    """
    z = np.ones((n_samples, n_genes), dtype=bool)
    if n_genes < 2:
        return z
    for r in range(1, n_samples):
        k = int(rng.integers(1, n_genes))
        z[r, rng.choice(n_genes, size=k, replace=False)] = False
    return z


def _lime_fit(
    z: np.ndarray, y: np.ndarray, *, n_features: int | None, kernel_width: float, alpha: float
) -> np.ndarray:
    """LIME's local surrogate: a weighted ridge regression on the binary masks.

    With ``n_features``, the top features by |coefficient| are refitted alone (LIME's
    "highest weights"); the others get 0.

    Sample weights are LIME's text kernel ``exp(-d^2 / width^2)`` with ``d`` the cosine
    distance (x 100) between a mask and the full sentence.
    """
    from sklearn.linear_model import Ridge

    zf = z.astype(np.float64)
    n = zf.shape[1]
    cos = zf.sum(1) / (np.sqrt(zf.sum(1)) * np.sqrt(n))
    d = (1 - cos) * 100
    sw = np.sqrt(np.exp(-(d**2) / kernel_width**2))
    coef = np.zeros(n)
    if n == 0:
        return coef
    model = Ridge(alpha=alpha, fit_intercept=True).fit(zf, y, sample_weight=sw)
    coef = model.coef_.astype(np.float64)
    if n_features is not None and n_features < n:
        top = np.argsort(-np.abs(coef), kind="stable")[:n_features]
        refit = Ridge(alpha=alpha, fit_intercept=True).fit(zf[:, top], y, sample_weight=sw)
        coef = np.zeros(n)
        coef[top] = refit.coef_
    return coef


# ----------------------------------------------------------------------------- the model


class _Classifier:
    """The trained network(s) of an :class:`ScMPTModel` as a differentiable function of the text branch."""

    def __init__(self, model: ScMPTModel, text_branch: int, device):
        import torch

        self.model = model
        self.branch = int(text_branch)
        if self.branch not in model.branches:
            chosen = (model.selection or {}).get("chosen", [model.reps[b] for b in model.branches])
            raise ValueError(
                f"the model's selection kept {chosen!r}, which does not read "
                f"obsm[{model.reps[self.branch]!r}]: its predictions do not depend on the cell "
                "sentences, so there is nothing to attribute; train with select='fusion' or on "
                "the GenePT-s embedding alone (annotate_mlp(use_rep='X_genept_s'))"
            )
        self.device = device
        self.nets = model.networks(device)
        self.mean = torch.as_tensor(model.means[self.branch], device=device)
        self.std = torch.as_tensor(model.stds[self.branch], device=device)
        self.others: list[Any] = []

    def set_others(self, adata: AnnData, row: int) -> None:
        """Hold the other branches at cell ``row``'s standardised values."""
        import torch

        from .._core._labels import get_rep

        self.others = []
        for b in self.model.branches:
            key = self.model.reps[b]
            if b == self.branch:
                self.others.append(None)
                continue
            x = get_rep(adata, key)[row : row + 1]
            z = (x - self.model.means[b]) / self.model.stds[b]
            self.others.append(torch.as_tensor(z, device=self.device))

    def proba(self, emb, target: int):
        """Probability of class ``target`` for L2-normalised text embeddings ``emb`` (n, dim)."""
        import torch

        z = (emb.float() - self.mean) / self.std
        xs = [
            z if o is None else o.expand(z.shape[0], -1)
            for o in (self.others or [None] * len(self.model.branches))
        ]
        out = 0
        for net in self.nets:
            out = out + torch.softmax(net(xs).float(), dim=1)[:, target]
        return out / len(self.nets)


# ----------------------------------------------------------------------------- the encoder


@dataclass
class _Tokens:
    ids: np.ndarray  # (L,) input ids with special tokens
    gene_of_token: np.ndarray  # (L,) position in the cell's word list, -1 for others


class _TextModel:
    """A sentence-transformers model as a function of its input word embeddings."""

    def __init__(self, encoder: Any):
        st = getattr(encoder, "model", None)
        modules = list(st) if st is not None else []
        if not modules or not hasattr(modules[0], "auto_model"):
            raise TypeError(
                f"integrated gradients needs a local sentence-transformers encoder (got "
                f"{encoder!r}); use method='lime', which only calls the encoder"
            )
        self.st = st
        self.bert = modules[0].auto_model
        self.rest = modules[1:]
        self.tokenizer = st.tokenizer
        if not getattr(self.tokenizer, "is_fast", False):
            raise TypeError(
                "explain_annotation needs a fast (Rust) tokenizer to map tokens to genes"
            )
        self.max_len = int(st.max_seq_length or self.tokenizer.model_max_length)
        self.word_embeddings = self.bert.get_input_embeddings()
        self.device = next(self.bert.parameters()).device
        self.dtype = self.word_embeddings.weight.dtype

    def tokens(self, prefix: str, words: Sequence[str]) -> _Tokens:
        """Ids of ``prefix + " ".join(words)`` and the word each token belongs to."""
        text, spans = _sentence_spans(prefix, words)
        enc = self.tokenizer(
            text,
            truncation=True,
            max_length=self.max_len,
            return_offsets_mapping=True,
            add_special_tokens=True,
        )
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        offs = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
        starts = np.asarray([s for s, _ in spans], dtype=np.int64)
        ends = np.asarray([e for _, e in spans], dtype=np.int64)
        pos = np.searchsorted(starts, offs[:, 0], side="right") - 1
        ok = (offs[:, 1] > offs[:, 0]) & (pos >= 0)
        ok &= offs[:, 1] <= ends[np.clip(pos, 0, None)] if starts.size else False
        gene = np.where(ok, pos, -1)
        return _Tokens(ids=ids, gene_of_token=gene)

    def embed(self, inputs_embeds, attention_mask, ids):
        """Sentence embeddings (L2-normalised, as ``embed_cells``) from input word embeddings."""
        import torch

        out = self.bert(
            inputs_embeds=inputs_embeds.to(self.dtype),
            attention_mask=attention_mask,
            token_type_ids=torch.zeros_like(attention_mask),
        )
        feats = {
            "input_ids": ids,
            "attention_mask": attention_mask,
            "token_embeddings": out[0],
        }
        for m in self.rest:
            feats = m(feats)
        v = feats["sentence_embedding"].float()
        return v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def embed_ids(self, batch: Sequence[np.ndarray]):
        """Sentence embeddings of tokenised texts (padded into one batch)."""
        import torch

        width = max(len(b) for b in batch)
        pad = int(self.tokenizer.pad_token_id or 0)
        ids = np.full((len(batch), width), pad, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for i, b in enumerate(batch):
            ids[i, : len(b)] = b
            mask[i, : len(b)] = 1
        t_ids = torch.from_numpy(ids).to(self.device)
        t_mask = torch.from_numpy(mask).to(self.device)
        return self.embed(self.word_embeddings(t_ids), t_mask, t_ids)


def _sentence_spans(prefix: str, words: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """The sentence text and the character span of each word (as ``build_sentences`` writes it)."""
    spans = []
    pos = len(prefix)
    for w in words:
        spans.append((pos, pos + len(w)))
        pos += len(w) + 1
    return prefix + " ".join(words), spans


# ----------------------------------------------------------------------------- per cell


def _ig_cell(
    tm: _TextModel,
    clf: _Classifier,
    tok: _Tokens,
    n_words: int,
    target: int,
    *,
    n_steps: int,
    baseline: str,
    batch_size: int,
) -> tuple[np.ndarray, float, float]:
    """IG of each word; returns ``(attributions, f(x), f(baseline))``."""
    import torch

    ids = torch.from_numpy(tok.ids[None, :]).to(tm.device)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        x = tm.word_embeddings(ids).float()  # (1, L, d)
        is_gene = torch.from_numpy(tok.gene_of_token >= 0).to(tm.device)[None, :, None]
        if baseline == "pad":
            pad = tm.word_embeddings.weight[int(tm.tokenizer.pad_token_id or 0)].float()
            ref = torch.where(is_gene, pad.expand_as(x), x)
        else:  # zero
            ref = torch.where(is_gene, torch.zeros_like(x), x)
        fx = float(clf.proba(tm.embed(x, mask, ids), target)[0])
        fref = float(clf.proba(tm.embed(ref, mask, ids), target)[0])
    alphas, weights = integrated_gradients_weights(n_steps)
    delta = x - ref
    grad_sum = torch.zeros_like(x[0])
    for s in range(0, n_steps, batch_size):
        a = torch.as_tensor(alphas[s : s + batch_size], dtype=x.dtype, device=tm.device)
        w = torch.as_tensor(weights[s : s + batch_size], dtype=x.dtype, device=tm.device)
        inp = (ref + a[:, None, None] * delta).detach().requires_grad_(True)
        n = inp.shape[0]
        with torch.enable_grad():
            p = clf.proba(tm.embed(inp, mask.expand(n, -1), ids.expand(n, -1)), target)
            (g,) = torch.autograd.grad(p.sum(), inp)
        grad_sum += (g.float() * w[:, None, None]).sum(0)
    tok_attr = (grad_sum * delta[0]).sum(-1).detach().cpu().numpy().astype(np.float64)
    attr = np.zeros(n_words)
    gt = tok.gene_of_token
    np.add.at(attr, gt[gt >= 0], tok_attr[gt >= 0])
    return attr, fx, fref


def _lime_cell(
    tm: _TextModel | None,
    encoder: Any,
    clf: _Classifier,
    prefix: str,
    words: list[str],
    target: int,
    *,
    n_samples: int,
    n_features: int | None,
    kernel_width: float,
    alpha: float,
    rng: np.random.Generator,
    batch_size: int,
) -> tuple[np.ndarray, float]:
    """LIME coefficient of each word; returns ``(attributions, f(x))``."""
    import torch

    n = len(words)
    z = _lime_masks(n, n_samples, rng)
    y = np.empty(n_samples)
    w_arr = np.asarray(words, dtype=object)
    texts = [prefix + " ".join(w_arr[row]) for row in z]
    with torch.no_grad():
        for s in range(0, n_samples, batch_size):
            chunk = texts[s : s + batch_size]
            if tm is not None:
                enc = tm.tokenizer(chunk, truncation=True, max_length=tm.max_len)["input_ids"]
                emb = tm.embed_ids([np.asarray(e) for e in enc])
            else:
                v = encoder.encode(chunk, cache=False, show_progress=False)
                v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
                emb = torch.as_tensor(v, device=clf.device)
            y[s : s + len(chunk)] = clf.proba(emb, target).cpu().numpy()
    coef = _lime_fit(z, y, n_features=n_features, kernel_width=kernel_width, alpha=alpha)
    return coef, float(y[0])


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
        method = (adata.uns.get(uns_key(rep)) or {}).get("params", {}).get("method")
        if method not in (None, "s"):
            raise ValueError(
                f"obsm[{rep!r}] is a GenePT-{method} embedding, which has no cell sentence "
                f"to attribute; {_explainable_hint()}"
            )
        return model.reps.index(rep)
    found = [
        i
        for i, r in enumerate(model.reps)
        if (adata.uns.get(uns_key(r)) or {}).get("params", {}).get("method") == "s"
    ]
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
    sp = dict((adata.uns.get(uns_key(rep)) or {}).get("params", {}))
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
    with progress_bar(rows.size, desc=f"explaining ({method})", unit="cell", show=progress) as bar:
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
