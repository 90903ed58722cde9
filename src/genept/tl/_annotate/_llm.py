"""LLM annotation: a generative model picks each cell's label from candidates given its cell sentence (scMPT sections 3.3 and 4.2, the two-stage flow of appendix A.3)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg

from ..._core._docs import doc_adata, doc_copy, doc_params
from ..._core._keys import ResultKeys
from ..._core._labels import check_key_added, check_query
from ..._core._progress import progress_bar
from ..._settings import settings
from ..._utils import check_adata, write_results
from ._chat import (
    _EST_ANSWER_TOKENS,
    _EST_REASONING_TOKENS,
    LLM_ANSWER_PROMPT,
    LLM_PROMPT,
    LLM_REASONING_PROMPT,
    UNPARSED,
    Chat,
    ReplyCache,
    check_template,
    est_tokens,
    format_candidates,
    model_price,
    parse_answer,
)
from ._common import annotation_writes, proba_frame, query_metrics

__all__ = ["annotate_llm"]


@doc_params(doc_adata=doc_adata, doc_copy=doc_copy)
def annotate_llm(
    adata: AnnData,
    *,
    candidates: Sequence[str] | None = None,
    sentence_key: str = "genept_sentence",
    model: str = "gpt-4o-mini",
    api_key: str | None = None,
    base_url: str | None = None,
    max_cells: int | None = 200,
    max_cost_usd: float | None = None,
    price_per_million: tuple[float, float] | None = None,
    prompt_template: str | None = None,
    answer_template: str | None = None,
    context: str = "a single-cell RNA-seq dataset",
    top_k_from: str | None = None,
    top_k: int = 3,
    reasoning: bool | None = None,
    max_genes: int | None = None,
    temperature: float = 0.0,
    max_tokens: int | None = None,
    label_key: str | None = None,
    random_state: int | None = None,
    cache: bool | str | os.PathLike = True,
    timeout: float = 60.0,
    max_retries: int = 2,
    key_added: str = "genept_llm",
    copy: bool = False,
) -> AnnData | None:
    """Annotate cells with a generative LLM choosing from candidate labels.

    scMPT sections 3.3 and 4.2: each cell's sentence (gene names by descending
    expression, ``obs[sentence_key]``) is sent with the list of possible labels, and the
    model answers with one of them. With ``top_k_from``, the two-stage flow of appendix
    A.3: each cell's candidates are the ``top_k`` most probable labels of another
    annotator (``obsm[top_k_from + "_proba"]``, most likely first); a first call asks for
    concise step-by-step reasoning (go with the first option when no clear marker
    genes), a second call turns that reasoning into one label from the list.

    Replies are parsed strictly (see below) and never guessed. Requests go through the
    ``openai`` client's chat completions, so any OpenAI-compatible server works
    (``base_url``). Replies are cached on disk (``cache``) by a hash of model, prompt and
    options and the server's identity (host, port, path of ``base_url``); the API key is
    used for the requests only and never written anywhere. Requests that fail with a rate
    limit, a server error or an answer that is not JSON are retried with backoff.

    Parameters
    ----------
    {doc_adata}
        The cells to annotate, with sentences in ``obs[sentence_key]``.
    candidates
        Possible labels (e.g. the reference's classes). Required unless ``top_k_from``
        is given.
    sentence_key
        ``obs`` column of cell sentences.
    model
        Chat model name.
    api_key
        API key (default ``$OPENAI_API_KEY``); only needed when a request is sent.
    base_url
        OpenAI-compatible endpoint, e.g. ``"http://localhost:8000/v1"``.
    max_cells
        Annotate at most this many cells (the first ones, or a random sample with
        ``random_state``); the others are left unannotated (NaN) with a warning.
    max_cost_usd
        Stop before a request would take the estimated spend above this (cached
        replies are free); remaining cells stay unannotated with a warning. The spend
        counts reported token usage, or ~4 characters per token when the server reports
        none, at ``price_per_million``.
    price_per_million
        ``(input, output)`` USD per million tokens; default: a table of OpenAI list
        prices for known models. Needed with ``max_cost_usd`` for other models.
    prompt_template
        The (first) prompt, with fields ``{candidates}``, ``{sentence}`` and optionally
        ``{context}``. Default :data:`LLM_PROMPT`, or :data:`LLM_REASONING_PROMPT` in
        the two-stage flow.
    answer_template
        Second prompt of the two-stage flow, fields ``{candidates}`` and
        ``{reasoning}`` (default :data:`LLM_ANSWER_PROMPT`).
    context
        Words naming the data in the prompts (the paper: "multiple sclerosis data").
    top_k_from
        ``key_added`` of an annotator that wrote ``obsm[top_k_from + "_proba"]``: take
        each cell's ``top_k`` labels as its candidates (two-stage flow).
    top_k
        Candidates per cell with ``top_k_from``.
    reasoning
        Two calls per cell (reasoning, then the label) as in appendix A.3. Default: on
        with ``top_k_from``, off otherwise.
    max_genes
        Keep only the first genes of each sentence (shorter prompts, lower cost).
    temperature, max_tokens
        Sampling options sent with every request (``max_tokens`` only if given).
    label_key
        ``obs`` column with true labels: metrics over the annotated cells
        (``"<unparsed>"`` counts as an error).
    random_state
        With ``max_cells``: annotate a random sample of cells instead of the first.
    cache
        Cache replies in ``genept.settings.cache_dir / "llm" / "chat.sqlite"``
        (``True``), in the given SQLite file, or not at all (``False``).
    timeout, max_retries
        Per-request timeout (s) and retries (exponential backoff, ``Retry-After``
        honoured). A request that
        still fails raises; replies received until then are cached, so a rerun resumes
        and ``adata`` is left untouched.
    key_added
        Where results are written.
    {doc_copy}

    Returns
    -------
    ``None``, or a copy with ``copy=True``. Writes

    * ``obs[key_added]`` -- the parsed label, ``"<unparsed>"`` when the reply names no
      candidate or several, NaN for cells not annotated (cap, budget, no sentence);
    * ``obs[key_added + "_confidence"]`` -- 1 (parsed), 0 (unparsed, or an empty cell
      without sentence or candidates), NaN (not reached: ``max_cells`` or the cost cap);
    * ``obs[key_added + "_reply"]`` -- the raw final reply ("" when not annotated);
      ``obs[key_added + "_reasoning"]`` -- the first reply in the two-stage flow;
      ``obs[key_added + "_candidates"]`` -- each cell's candidates joined by ``" | "``
      with ``top_k_from``;
    * ``obsm[key_added + "_proba"]`` -- one-hot array over ``uns[key_added]["classes"]``
      (all 0 for ``"<unparsed>"``, NaN when not annotated);
    * ``uns[key_added]`` -- ``params`` (no key, no URL credentials), ``classes``,
      ``usage`` (requests, cache hits, tokens, estimated cost) and ``metrics`` with
      ``label_key``.

    Parsing: a reply is accepted when it equals a candidate up to case and whitespace
    (surrounding quotes, ``**`` or one final period allowed), or when exactly one
    candidate is mentioned in it as a whole phrase. Anything else is ``"<unparsed>"``.

    Examples
    --------
    >>> gpt.tl.annotate_llm(query, candidates=["B cell", "T cell"], base_url="http://localhost:8000/v1")  # doctest: +SKIP
    """
    check_adata(adata)
    check_query(adata)
    check_key_added(key_added, label_key)
    rk = ResultKeys(key_added)
    if sentence_key not in adata.obs:
        raise KeyError(
            f"sentence_key={sentence_key!r} is not a column of adata.obs (columns: "
            f"{list(adata.obs.columns)}); build the cell sentences first with "
            "gpt.pp.cell_sentences(adata)"
        )
    two_stage = top_k_from is not None
    use_reasoning = two_stage if reasoning is None else bool(reasoning)
    if top_k_from is None:
        if candidates is None or isinstance(candidates, str):
            raise ValueError(
                "pass `candidates` (a list of labels) or `top_k_from` (an annotator's key)"
            )
        classes = list(dict.fromkeys(str(c) for c in candidates))
        if len(classes) < 2:
            raise ValueError(f"give at least two candidates, got {classes}")
        per_cell = None
    else:
        if candidates is not None:
            raise ValueError("pass either `candidates` or `top_k_from`, not both")
        pdf = proba_frame(adata, top_k_from)
        classes, pmat = [str(c) for c in pdf.columns], pdf.to_numpy(dtype=np.float64)
        if int(top_k) < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        order = np.argsort(-np.nan_to_num(pmat, nan=-np.inf), axis=1, kind="stable")[
            :, : int(top_k)
        ]
        per_cell = [
            None if np.isnan(pmat[i]).all() else [classes[j] for j in order[i]]
            for i in range(adata.n_obs)
        ]
    first_tpl = prompt_template or (LLM_REASONING_PROMPT if use_reasoning else LLM_PROMPT)
    check_template(first_tpl, {"candidates", "sentence"}, "prompt_template")
    second_tpl = answer_template or LLM_ANSWER_PROMPT
    if use_reasoning:
        check_template(second_tpl, {"candidates", "reasoning"}, "answer_template")
    price = model_price(model, price_per_million)
    if max_cost_usd is not None and price is None:
        raise ValueError(
            f"no price known for model {model!r}; pass price_per_million=(input, output) "
            "USD per million tokens to use max_cost_usd"
        )

    # cells to annotate
    sentences = adata.obs[sentence_key]
    has_sentence = (
        sentences.notna().to_numpy() & (sentences.astype(str).str.strip() != "").to_numpy()
    )
    if per_cell is not None:
        has_sentence &= np.array([c is not None for c in per_cell])
    eligible = np.flatnonzero(has_sentence)
    if eligible.size < adata.n_obs:
        warnings.warn(
            f"{adata.n_obs - eligible.size} cells have no sentence"
            + (" or no probabilities" if per_cell is not None else "")
            + "; they are left unannotated",
            UserWarning,
            stacklevel=2,
        )
    if max_cells is not None and eligible.size > int(max_cells):
        if random_state is None:
            chosen = eligible[: int(max_cells)]
        else:
            rng = np.random.default_rng(random_state)
            chosen = np.sort(rng.choice(eligible, int(max_cells), replace=False))
        warnings.warn(
            f"annotating {int(max_cells)} of {eligible.size} cells (max_cells); the others "
            "are left unannotated (NaN); raise max_cells to annotate more",
            UserWarning,
            stacklevel=2,
        )
    else:
        chosen = eligible

    store = None
    if cache is True:
        store = ReplyCache(settings.cache_dir / "llm" / "chat.sqlite")
    elif cache:
        store = ReplyCache(Path(cache))
    chat = Chat(
        model=model,
        api_key=api_key,
        base_url=base_url,
        temperature=temperature,
        max_tokens=max_tokens,
        timeout=timeout,
        max_retries=max_retries,
        cache=store,
    )

    def cost(n_in: int, n_out: int) -> float:
        return 0.0 if price is None else (n_in * price[0] + n_out * price[1]) / 1e6

    start = logg.info(f"annotating {chosen.size} cells with {model!r}")
    n = adata.n_obs
    labels = np.full(n, None, dtype=object)
    replies = np.full(n, "", dtype=object)
    reasonings = np.full(n, "", dtype=object)
    spent_est = 0.0
    stopped_at = None
    with progress_bar(chosen.size, desc="LLM annotation", unit="cell") as bar:
        for i in chosen:
            cands = classes if per_cell is None else per_cell[i]
            sentence = str(sentences.iloc[i]).strip()
            if max_genes is not None:
                sentence = " ".join(sentence.split()[: int(max_genes)])
            fields = {
                "candidates": format_candidates(cands),
                "sentence": sentence,
                "context": context,
            }
            p1 = first_tpl.format(**fields, reasoning="")
            if max_cost_usd is not None:
                est = cost(
                    est_tokens(p1)
                    + (est_tokens(second_tpl) + _EST_REASONING_TOKENS if use_reasoning else 0),
                    (_EST_REASONING_TOKENS if use_reasoning else 0)
                    + (max_tokens or _EST_ANSWER_TOKENS),
                )
                if spent_est + est > max_cost_usd:
                    stopped_at = i
                    break
            before = (chat.n_requests, chat.prompt_tokens, chat.completion_tokens)
            r1, _ = chat.ask(p1)
            prompts = [p1]
            if use_reasoning:
                p2 = second_tpl.format(**{**fields, "reasoning": r1})
                prompts.append(p2)
                final, _ = chat.ask(p2)
                reasonings[i] = r1
            else:
                final = r1
            # spend of this cell: reported usage, else a character-based estimate
            if chat.n_requests > before[0]:
                d_in, d_out = chat.prompt_tokens - before[1], chat.completion_tokens - before[2]
                if d_in == 0 and d_out == 0:
                    d_in = sum(est_tokens(p) for p in prompts)
                    d_out = est_tokens(final) + (est_tokens(r1) if use_reasoning else 0)
                spent_est += cost(d_in, d_out)
            replies[i] = final
            labels[i] = parse_answer(final, cands)
            bar.update()
    if stopped_at is not None:
        left = int((chosen >= stopped_at).sum())
        warnings.warn(
            f"stopped at the cost cap max_cost_usd={max_cost_usd} (estimated spend "
            f"${spent_est:.4f}); {left} selected cells are left unannotated",
            UserWarning,
            stacklevel=2,
        )

    done = np.array([v is not None for v in labels])
    parsed = done & np.array([v is not None and v != UNPARSED for v in labels])
    proba = np.full((n, len(classes)), np.nan)
    proba[done] = 0.0
    col = {c: j for j, c in enumerate(classes)}
    for i in np.flatnonzero(parsed):
        proba[i, col[labels[i]]] = 1.0
    # parsed 1, unparsed 0, empty cells (no sentence / no candidates) 0, not reached NaN
    confidence = np.where(parsed | done | ~has_sentence, parsed.astype(float), np.nan)
    n_unparsed = int((done & ~parsed).sum())
    if n_unparsed:
        logg.warning(f"{n_unparsed} replies name no single candidate; recorded as {UNPARSED!r}")
    extra_obs: dict[str, Any] = {
        f"{rk.labels}_reply": pd.Series(replies, index=adata.obs_names, dtype=str).to_numpy()
    }
    if use_reasoning:
        extra_obs[f"{rk.labels}_reasoning"] = pd.Series(
            reasonings, index=adata.obs_names, dtype=str
        ).to_numpy()
    if per_cell is not None:
        extra_obs[f"{rk.labels}_candidates"] = np.array(
            [" | ".join(c) if c is not None else "" for c in per_cell], dtype=object
        )
    uns: dict[str, Any] = {
        "method": "llm",
        "params": {
            "model": model,
            "sentence_key": sentence_key,
            "candidates": classes if per_cell is None else None,
            "top_k_from": top_k_from,
            "top_k": int(top_k) if per_cell is not None else None,
            "reasoning": use_reasoning,
            "max_cells": max_cells,
            "max_cost_usd": max_cost_usd,
            "max_genes": max_genes,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "context": context,
            "prompt_template": first_tpl,
            "answer_template": second_tpl if use_reasoning else None,
            "random_state": random_state,
            "label_key": label_key,
        },
        "classes": classes,
        "usage": {
            "n_cells_annotated": int(done.sum()),
            "n_unparsed": n_unparsed,
            "n_requests": chat.n_requests,
            "n_cache_hits": chat.n_cache_hits,
            "prompt_tokens": chat.prompt_tokens,
            "completion_tokens": chat.completion_tokens,
            "estimated_cost_usd": float(spent_est) if price is not None else float("nan"),
        },
    }
    metrics = query_metrics(adata, label_key, labels, exclude=(UNPARSED,))
    if metrics is not None:
        uns["metrics"] = metrics
    writes = annotation_writes(
        adata,
        key_added,
        classes,
        proba,
        uns,
        pred=labels,
        confidence=confidence,
        categories=[*classes, UNPARSED],
        extra_obs=extra_obs,
    )
    out = write_results(adata, writes, copy=copy)
    logg.info("    finished", time=start)
    return out
