"""The numerics of :func:`genept.tl.explain_annotation`: integrated gradients and LIME.

* :func:`integrated_gradients_weights` -- Gauss-Legendre nodes of the path integral;
* ``_lime_masks`` / ``_lime_fit`` -- LIME's gene-dropping samples and its weighted
  sparse surrogate;
* ``_Classifier`` -- the trained network(s) of an :class:`~genept.models.ScMPTModel` as a
  differentiable function of the text branch (the other branches held fixed);
* ``_TextModel`` -- a sentence-transformers encoder as a function of its input word
  embeddings, with the map from word pieces to genes;
* ``_ig_cell`` / ``_lime_cell`` -- the attribution of one cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from anndata import AnnData

if TYPE_CHECKING:
    from ..models.scmpt import ScMPTModel

__all__ = ["integrated_gradients_weights"]


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
        # the model's average: equal weights, or the stack's (ScMPTModel.member_weights)
        for net, w in zip(self.nets, self.model.member_weights, strict=True):
            out = out + w * torch.softmax(net(xs).float(), dim=1)[:, target]
        return out


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
        _out_of_inference_mode(self.st)
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


def _out_of_inference_mode(module) -> None:
    """Replace inference tensors of ``module`` by normal copies, which autograd accepts.

    Weights created under ``torch.inference_mode`` (a model first loaded inside it) are
    inference tensors; the copies have the same values.
    """
    import torch

    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None and p.is_inference():
                m._parameters[name] = torch.nn.Parameter(p.clone(), requires_grad=p.requires_grad)
        for name, b in list(m._buffers.items()):
            if b is not None and b.is_inference():
                m._buffers[name] = b.clone()


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
