"""``gpt.tl.embed_genes``: gene embeddings for the genes of a dataset."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg

from .._core._docs import doc_adata, doc_copy, doc_params
from .._core._keys import sanitize_params, uns_key
from .._gene_matching import build_alias_maps, is_missing_name, match_genes, mouse_like
from .._gene_sources import DEFAULT_MODEL, TEXT_LEVELS, resolve_source
from .._utils import check_adata, get_var_names, is_text_column, write_results
from ..encoders import TextEncoder, get_encoder

__all__ = ["embed_genes"]


@lru_cache(maxsize=1)
def _alias_maps():
    from ..datasets import gene_cards

    return build_alias_maps(gene_cards("human"))


#: share of mouse-style names above which a dataset is taken for mouse
_MOUSE_SHARE = 0.5


def _gene_names(adata: AnnData, gene_symbols: str | None) -> tuple[pd.Index, np.ndarray]:
    """Names to match and the mask of missing ones (NaN/None/"" or "nan"/"NA" text)."""
    names = get_var_names(adata, gene_symbols=gene_symbols)
    raw = adata.var[gene_symbols].to_numpy(dtype=object) if gene_symbols is not None else names
    missing = np.fromiter((is_missing_name(v) for v in raw), dtype=bool, count=len(names))
    return names, missing


def _mouse_check(names: pd.Index, missing: np.ndarray, source_genes: pd.Index) -> bool:
    """True when most names look like mouse symbols (the aliases are human); warns unless the source is itself mouse-like (the user's own mouse table)."""
    mouse = mouse_like(list(names))
    n = int((~missing).sum())
    if n == 0 or mouse[~missing].sum() <= _MOUSE_SHARE * n:
        return False
    if len(source_genes) and mouse_like(list(source_genes)).mean() > _MOUSE_SHARE:
        return True
    ex = ", ".join(map(str, names[mouse][:3]))
    warnings.warn(
        f"{int(mouse.sum())} of {n} gene names look like mouse symbols ({ex}, ...), but the gene "
        "cards and aliases are human: genes are matched by symbol up to case only (alias "
        "matches such as Gm83 -> DCAF13 would be wrong). For faithful embeddings map the "
        "genes to their human orthologs first and pass them as gene_symbols=.",
        UserWarning,
        stacklevel=3,
    )
    return True


def _no_match_error(names: pd.Index, adata: AnnData, source_genes: pd.Index, gene_symbols):
    examples = ", ".join(map(str, names[:5]))
    source_ex = ", ".join(map(str, source_genes[:5]))
    cols = [c for c in adata.var.columns if is_text_column(adata.var[c])]
    hint = (
        f" Pass gene_symbols= one of the var columns {cols} holding gene symbols?"
        if cols and gene_symbols is None
        else ""
    )
    return ValueError(
        f"no gene of the dataset matches the embedding source (dataset genes: {examples}, ...; "
        f"source genes: {source_ex}, ...). Genes are matched by symbol (any case), NCBI/HGNC "
        f"aliases and Ensembl ids.{hint}"
    )


#: encode this many texts or fewer without a cost estimate
_QUIET_TEXTS = 300


def _encode(encoder: TextEncoder, texts: pd.Series, batch_size, cache, show_progress) -> np.ndarray:
    """``encoder.encode`` of ``texts``; above :data:`_QUIET_TEXTS` uncached texts, the first batch is encoded alone and timed, and the count and estimated time are logged first."""
    import time

    from ..encoders import default_cache

    texts = [str(t) for t in texts]
    store = default_cache() if cache is True else (cache or None)
    unique = list(dict.fromkeys(texts))
    todo = unique
    if store is not None and len(unique) > _QUIET_TEXTS:
        hits = store.get_many(encoder.cache_id, unique)
        todo = [t for i, t in enumerate(unique) if i not in hits]
    done: dict[str, np.ndarray] = {}
    if len(todo) > _QUIET_TEXTS:
        bs = int(batch_size or encoder.batch_size)
        first = sorted(todo, key=len, reverse=True)[
            : max(1, min(bs, 64))
        ]  # the longest: pessimistic
        t0 = time.perf_counter()
        vec = encoder.encode(
            first, batch_size=batch_size, cache=store or False, show_progress=False
        )
        rate = len(first) / max(time.perf_counter() - t0, 1e-9)
        done.update(zip(first, vec, strict=True))
        eta = (len(todo) - len(first)) / rate
        logg.warning(
            f"encoding {len(todo)} gene texts with {encoder!r}: about {_duration(eta)} "
            f"({rate:.0f} texts/s on the first {len(first)}, the longest)"
            + ("; they are cached for next time" if store is not None else "")
            + (
                ". The shipped default needs no encoding: gpt.tl.embed_genes(adata) with the "
                "default model and text_level"
                if getattr(encoder, "model_name", "") != DEFAULT_MODEL
                else ""
            )
        )
    rest = [t for t in unique if t not in done]
    if rest:
        out = encoder.encode(
            rest,
            batch_size=batch_size,
            cache=store or False,
            show_progress=show_progress,
            desc="embedding genes",
        )
        done.update(zip(rest, out, strict=True))
    return np.stack([done[t] for t in texts]).astype(np.float32, copy=False)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


#: GenePT appendix B.5: GPT-4 rewrote each NCBI summary for a tissue; the rewrite,
#: followed by the original summary, is embedded as the tissue-specific gene text
CONTEXT_PROMPT = (
    "Rewrite (the resulting summary should be approximately similar in length) the following "
    "summary of {gene} to emphasize their functionality in the following different tissues or "
    "contexts: {context}.\n\nSummary of {gene}: {text}"
)


def _context_per_gene(context: Any, names: pd.Index) -> np.ndarray:
    """The context of each gene of ``adata.var`` (``""``: none)."""
    n = len(names)
    if isinstance(context, str):
        if not context.strip():
            raise ValueError("context must be a non-empty tissue or context name, got ''")
        return np.full(n, context.strip(), dtype=object)
    if isinstance(context, pd.Series | dict):
        ser = pd.Series(context, dtype=object)
        ser.index = ser.index.astype(str)
        out = ser.reindex(names.astype(str)).to_numpy(dtype=object)
    else:
        out = np.asarray(list(context), dtype=object)
        if out.shape != (n,):
            raise ValueError(
                f"context as a list needs one entry per gene of adata.var ({n}), got "
                f"{out.shape[0] if out.ndim == 1 else out.shape}; or pass one string, or a "
                "dict/Series gene -> context"
            )
    return np.array(["" if is_missing_name(v) else str(v).strip() for v in out], dtype=object)


def _context_texts(
    genes: Sequence[str],
    texts: Sequence[str],
    contexts: Sequence[str],
    *,
    mode: str,
    llm: dict[str, Any],
    show_progress: bool | None,
) -> tuple[list[str], dict[str, Any]]:
    """Tissue-context texts of ``genes`` (``""`` context: the text as is) and usage info."""
    if mode == "card":
        out = [
            f"{t}\nIn the context of {c}: {g} in {c}." if c else t
            for g, t, c in zip(genes, texts, contexts, strict=True)
        ]
        return out, {}
    from .._core._progress import progress_bar
    from .._settings import settings
    from ._annotate._chat import Chat, ReplyCache, est_tokens, model_price

    model = llm["model"]
    price = model_price(model, llm.get("price_per_million"))
    cap = llm.get("max_cost_usd")
    if cap is not None and price is None:
        raise ValueError(
            f"no known price for {model!r}: pass price_per_million=(input, output) USD per "
            "million tokens to use max_cost_usd"
        )
    cache = llm.get("cache", True)
    store = (
        ReplyCache(settings.cache_dir / "llm" / "chat.sqlite")
        if cache is True
        else (ReplyCache(cache) if cache else None)
    )
    chat = Chat(
        model=model,
        api_key=llm.get("api_key"),
        base_url=llm.get("base_url"),
        temperature=0.0,
        max_tokens=llm.get("max_tokens", 512),
        timeout=llm.get("timeout", 60.0),
        max_retries=llm.get("max_retries", 3),
        cache=store,
    )
    out: list[str] = []
    spent = 0.0
    todo = [i for i, c in enumerate(contexts) if c]
    with progress_bar(
        len(todo), desc="tissue-context texts", unit="gene", show=show_progress
    ) as bar:
        for g, t, c in zip(genes, texts, contexts, strict=True):
            if not c:
                out.append(t)
                continue
            prompt = CONTEXT_PROMPT.format(gene=g, context=c, text=t)
            if cap is not None:
                est = (est_tokens(prompt) * price[0] + 2 * est_tokens(t) * price[1]) / 1e6
                if spent + est > cap:
                    raise RuntimeError(
                        f"stopped at the cost cap max_cost_usd={cap} (estimated spend "
                        f"${spent:.4f}) after {len(out)} of {len(genes)} genes; replies so far "
                        "are cached: raise max_cost_usd and rerun to resume (adata is unchanged)"
                    )
            n_in, n_out = chat.prompt_tokens, chat.completion_tokens
            reply, _ = chat.ask(prompt)
            if price is not None:
                d_in = chat.prompt_tokens - n_in or est_tokens(prompt)
                d_out = chat.completion_tokens - n_out or est_tokens(reply)
                spent += (d_in * price[0] + d_out * price[1]) / 1e6
            out.append(f"{reply.strip()}\n{t}")
            bar.update(1)
    usage = {
        "llm_model": model,
        "llm_requests": chat.n_requests,
        "llm_cache_hits": chat.n_cache_hits,
        "llm_prompt_tokens": chat.prompt_tokens,
        "llm_completion_tokens": chat.completion_tokens,
    }
    if price is not None:
        usage["estimated_cost_usd"] = float(spent)
    return out, usage


@doc_params(doc_adata=doc_adata, doc_copy=doc_copy)
def embed_genes(
    adata: AnnData,
    source: Any = "cards",
    *,
    model: str | TextEncoder | None = None,
    text_level: str | None = None,
    gene_symbols: str | None = None,
    key_added: str = "X_genept",
    batch_size: int | None = None,
    cache: bool = True,
    allow_pickle: bool = False,
    context: str | Sequence[str] | dict[str, str] | pd.Series | None = None,
    context_mode: Literal["card", "llm"] = "card",
    llm_model: str = "gpt-4o-mini",
    api_key: str | None = None,
    base_url: str | None = None,
    max_cost_usd: float | None = None,
    price_per_million: tuple[float, float] | None = None,
    show_progress: bool | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Embed the genes of ``adata`` (GenePT gene embeddings).

    Each gene of ``adata.var`` is matched to the source (exact symbol, Ensembl id,
    case-insensitive symbol, NCBI/HGNC alias or previous symbol, in that order) and gets
    the embedding of its text, or a precomputed embedding. Only the genes the dataset
    needs are embedded, and every text embedding is cached on disk.

    Parameters
    ----------
    {doc_adata}
        ``var_names`` (or ``var[gene_symbols]``) are gene symbols or Ensembl ids.
    source
        Where embeddings come from:

        * ``"cards"`` (default, offline): the gene cards shipped with genept (NCBI Gene
          full name, type, aliases and Gene Ontology terms). With ``model`` and
          ``text_level`` left at their defaults, the **shipped precomputed table**: TF-IDF
          + SVD (LSA, 384-d) of the card without symbol and aliases, chosen by measurement
          (best on gene-disjoint gene-gene interactions, least lexical leakage; see
          ``docs/embeddings.md``), looked up (memory-mapped) in well under a second;
          otherwise the card at ``text_level`` embedded by ``model``;
        * ``"ncbi"`` / ``"ncbi_uniprot"``: GenePT's NCBI (and UniProt) gene summaries,
          downloaded once from Zenodo, embedded by ``model``;
        * ``"name"``: the gene symbol alone, embedded by ``model`` (paper's control);
        * ``"genept"``: GenePT's precomputed embeddings (``model="ada-002"``, 1536-d,
          default, or ``"3-large"``, 3072-d), downloaded once from Zenodo;
        * your own texts: a dict or Series gene -> text, embedded by ``model``;
        * your own embeddings: a dict gene -> vector, a DataFrame indexed by gene, a
          :class:`~genept.GeneEmbeddings`, or a ``.npz``/``.parquet``/``.csv``/``.pickle``
          file path (pickles need ``allow_pickle=True``).
    model
        Text encoder for text sources (see :func:`genept.encoders.get_encoder`):
        default the packaged all-MiniLM-L6-v2 (for ``source="cards"`` with the default
        text level: the shipped LSA table, also named ``"lsa"``); any sentence-transformers
        name or folder (e.g. ``"llmrails/ember-v1"``); ``"openai:text-embedding-3-large"``.
        For ``source="genept"``, the precomputed model. Before encoding more than
        a few hundred texts, the number of texts and the time it will take (measured on
        the first batch) are logged.
    text_level
        The paper's levels of gene text (appendix A): ``"name"`` (symbol only),
        ``"summary"`` (symbol and its functional summary) or ``"card"`` (everything:
        full name, aliases, gene type and summary); for ``source="cards"`` also
        ``"card_nosym"``, the card without symbol and aliases. ``None`` (default):
        ``"card_nosym"`` with the shipped table for ``source="cards"`` and the default
        model, ``"card"`` otherwise (``text_level="card"`` with the default model is
        genept 0.1's default: MiniLM on the full card, encoded on the CPU).
    gene_symbols
        Column of ``adata.var`` with gene symbols, if ``var_names`` are not. Missing
        symbols (NaN, ``None``, ``""``, ``"nan"``, ``"NA"``) stay without an embedding.
        Names that mostly look like mouse symbols (``Cd3e``, ``Gm83``) give a warning and
        are matched up to case only, not through the human aliases.
    key_added
        ``varm`` key of the embeddings. ``uns`` and ``var`` keys use it without ``X_``.
    batch_size
        Texts per encoder batch (default: the encoder's).
    cache
        Use the persistent text-embedding cache (``genept.settings.cache_dir``).
    allow_pickle
        Allow reading a user-supplied pickle file (it can run code; only for files you trust).
    context
        Tissue-context gene embeddings (GenePT appendix B.5): a tissue or context for
        every gene (``"lung"``), one per gene of ``adata.var`` (a list), or a dict/Series
        gene -> context (genes without one get their plain text). Needs a text source
        (not precomputed vectors). Store it next to the plain embeddings with
        ``key_added="X_genept_lung"``.
    context_mode
        ``"card"`` (offline): the gene's text followed by "In the context of <tissue>:
        <gene> in <tissue>."; ``"llm"``: a chat model rewrites the text to emphasise the
        gene's function in that context (the paper's prompt, :data:`CONTEXT_PROMPT`) and
        the rewrite followed by the original text is embedded, as in the paper. Replies
        are cached (``genept.settings.cache_dir``), so an interrupted run resumes.
    llm_model, api_key, base_url
        (``"llm"``) The chat model and the OpenAI-compatible server (default
        ``OPENAI_API_KEY`` and the official API); the key is never stored.
    max_cost_usd, price_per_million
        (``"llm"``) Stop before the estimated spend exceeds ``max_cost_usd`` (an error;
        ``adata`` is unchanged and the replies so far are cached); prices in USD per
        million (input, output) tokens for models without a known price.
    show_progress
        Progress bar (default ``genept.settings.progress``).
    {doc_copy}

    Returns
    -------
    ``None``, or a copy of ``adata`` if ``copy=True``. Sets

    ``adata.varm['X_genept']``
        ``float32 (n_vars, dim)``; zero rows for genes without an embedding.
    ``adata.var['genept_has_embedding']``
        Whether the gene got an embedding.
    ``adata.var['genept_gene']``
        The source gene it was matched to (``""`` if none).
    ``adata.uns['genept']['params']``
        Source, model, text level, dimension, genes matched/total and counts per match
        kind (``ambiguous``: an alias or Ensembl id of several genes; ``missing``: no
        name), ``n_zero_vectors`` (matched genes whose source vector is all zero; they
        count as without embedding) and ``mouse_names``; with ``context``: ``context``
        (the tissue, or ``"per-gene"``), ``contexts`` (the distinct ones),
        ``n_genes_with_context``, ``context_mode`` and, for ``"llm"``, the chat model,
        requests, cache hits, tokens and estimated cost.

    Examples
    --------
    >>> import scanpy as sc, genept as gpt
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> gpt.tl.embed_genes(adata)  # the shipped LSA table  # doctest: +SKIP
    >>> adata.varm["X_genept"].shape  # doctest: +SKIP
    (765, 384)
    >>> gpt.tl.embed_genes(adata, text_level="card")  # MiniLM on the full card  # doctest: +SKIP
    """
    check_adata(adata)
    if text_level is not None and text_level not in TEXT_LEVELS:
        raise ValueError(f"text_level must be one of {TEXT_LEVELS}, got {text_level!r}")
    if isinstance(model, TextEncoder) and text_level is None:
        text_level = "card"  # an encoder object embeds texts: not the shipped table
    if context_mode not in ("card", "llm"):
        raise ValueError(f"context_mode must be 'card' or 'llm', got {context_mode!r}")
    start = logg.info("embedding genes")
    names, missing = _gene_names(adata, gene_symbols)
    ctx = _context_per_gene(context, names) if context is not None else None
    if len(names) == 0:
        raise ValueError("adata has no genes (adata.n_vars == 0)")
    src = resolve_source(
        source,
        model=model if isinstance(model, str) or model is None else None,
        text_level=text_level,
        allow_pickle=allow_pickle,
    )
    mouse = _mouse_check(names, missing, src.genes)
    query = np.where(missing, "", names.to_numpy(dtype=object))
    if pd.Index(query[~missing]).isin(src.genes).all():
        aliases, ensembl = {}, {}  # every name is a symbol of the source: no alias needed
    else:
        aliases, ensembl = _alias_maps()
    match = match_genes(
        list(query), list(src.genes), aliases=aliases, ensembl=ensembl, use_aliases=not mouse
    )
    target = match.target.copy()
    if src.name == "name":  # any gene has a name: unmatched genes are embedded as written
        target = np.where((target == "") & ~missing, names.to_numpy(dtype=object), target)
    has = target != ""
    if not has.any():
        raise _no_match_error(names, adata, src.genes, gene_symbols)
    counts = match.counts()
    logg.info(
        f"    matched {int(has.sum())} of {len(names)} genes to source {src.name!r} "
        + ", ".join(f"{k}: {v}" for k, v in counts.items() if v)
    )
    if ctx is not None:
        if src.embeddings is not None:
            raise ValueError(
                f"context= needs gene texts, but source {src.name!r} holds precomputed "
                "vectors; use source='cards', 'ncbi' or your own texts"
            )
        # one text per (gene, context): two var rows of one gene may have two contexts
        keys = pd.Index(pd.unique(pd.Series(target[has] + "\x1f" + ctx[has])))
        kg = np.array([k.split("\x1f", 1)[0] for k in keys], dtype=object)
        kc = np.array([k.split("\x1f", 1)[1] for k in keys], dtype=object)
        base = pd.Index(pd.unique(kg))
        plain = pd.Series(base.to_numpy(), index=base) if src.name == "name" else src.texts_of(base)
        texts, usage = _context_texts(
            list(kg),
            [str(plain.loc[g]) for g in kg],
            list(kc),
            mode=context_mode,
            llm={
                "model": llm_model,
                "api_key": api_key,
                "base_url": base_url,
                "max_cost_usd": max_cost_usd,
                "price_per_million": price_per_million,
                "cache": cache,
            },
            show_progress=show_progress,
        )
        encoder = src.table.encoder() if src.table is not None else get_encoder(model)
        vectors = _encode(encoder, pd.Series(texts), batch_size, cache, show_progress)
        model_name = (
            DEFAULT_MODEL
            if src.table is not None
            else getattr(encoder, "model_name", None) or encoder.cache_id
        )
        row_keys = pd.Index(target[has] + "\x1f" + ctx[has])
        needed, target_rows = keys, keys.get_indexer(row_keys)
    else:
        needed = pd.Index(pd.unique(target[has]))
        if src.table is not None:
            found, vectors = src.table.rows(needed)
            model_name = DEFAULT_MODEL
            if not found.all():
                absent = needed[~found]
                logg.warning(
                    f"{len(absent)} genes are not in the shipped default table "
                    f"({src.table.folder}; first: {', '.join(map(str, absent[:3]))}); projecting "
                    "their card texts into it (rebuild the table with "
                    "`python scripts/build_default_embeddings.py`)"
                )
                vectors[~found] = _encode(
                    src.table.encoder(), src.texts_of(absent), batch_size, cache, show_progress
                )
        elif src.embeddings is not None:
            pos = pd.Index(src.embeddings.genes).get_indexer(needed)
            vectors = src.embeddings.matrix[pos]
            model_name = src.model or src.embeddings.model or "precomputed"
        else:
            encoder = get_encoder(model)
            if src.name == "name":
                texts = pd.Series(needed.to_numpy(), index=needed)
            else:
                texts = src.texts_of(needed)
            vectors = _encode(encoder, texts, batch_size, cache, show_progress)
            model_name = getattr(encoder, "model_name", None) or encoder.cache_id
        target_rows = needed.get_indexer(target[has])
    dim = int(vectors.shape[1])
    M = np.zeros((len(names), dim), dtype=np.float32)
    M[has] = vectors[target_rows]
    zero = has & ~M.any(axis=1)
    if zero.any():  # an all-zero vector is no embedding (GenePT-w skips zero rows)
        warnings.warn(
            f"{int(zero.sum())} matched genes have an all-zero vector in the source (first: "
            f"{', '.join(map(str, target[zero][:5]))}); they count as genes without an "
            "embedding",
            UserWarning,
            stacklevel=2,
        )
        has &= ~zero
        target = np.where(zero, "", target)
        if not has.any():
            raise ValueError(
                f"every matched gene has an all-zero vector in the source {src.name!r}; "
                "check the embeddings (a zero vector means no embedding)"
            )
    prefix = uns_key(key_added)
    params = {
        "source": src.name,
        "model": str(model_name),
        "text_level": src.text_level,  # None (a table of vectors) is left out
        "dim": dim,
        "n_genes_matched": int(has.sum()),
        "n_genes_total": len(names),
        "match_counts": counts,
        "n_zero_vectors": int(zero.sum()),
        "mouse_names": bool(mouse),
        "gene_symbols": gene_symbols or "var_names",
        "key_added": key_added,
    }
    if ctx is not None:
        distinct = sorted(set(ctx[has]) - {""})
        params.update(
            context=distinct[0] if isinstance(context, str) else "per-gene",
            contexts=distinct,
            n_genes_with_context=int((ctx[has] != "").sum()),
            context_mode=context_mode,
            **usage,
        )
    if src.table is not None:  # which table: its name and content hash
        meta = src.table.meta
        params["table"] = f"{meta.get('name', 'default')} sha256:{str(meta.get('sha256', ''))[:16]}"
    out = write_results(
        adata,
        [
            ("varm", key_added, M),
            ("var", f"{prefix}_has_embedding", has),
            ("var", f"{prefix}_gene", pd.Categorical(target.astype(str))),
            ("uns", prefix, {"params": sanitize_params(params)}),
        ],
        copy=copy,
        log=lambda msg: logg.info("    finished", time=start, deep=msg),
    )
    return out
