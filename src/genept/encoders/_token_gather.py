"""GenePT-s without the string tokenizer: cell input ids gathered from per-gene word pieces.

A cell sentence is ``prefix + " ".join(gene words)``. For BERT-style WordPiece tokenizers
(normaliser and pre-tokeniser work word by word, on whitespace and punctuation), the ids
of such a text are exactly the ids of the prefix followed by the ids of each word, so each
gene's word pieces are tokenized once and a cell's ``[CLS] prefix genes [SEP]`` ids are
gathered from them (numba), truncated to the model's maximum as the tokenizer truncates.
The model then runs on the gathered ids directly (length-bucketed batches, pinned
transfers on CUDA), and the string tokenizer - the GPU bottleneck (about 3k sentences/s
against about 30k for MiniLM's forward pass on an H200) - is never called for them.

Tokenizers for which the identity is not guaranteed (SentencePiece, byte-level BPE, or
anything else) are detected by :func:`supports_gather`; callers fall back to the texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numba import njit

__all__ = ["WordPieceTable", "supports_gather"]


def supports_gather(tokenizer: Any) -> bool:
    """Whether the ids of ``"w1 w2 ..."`` are the concatenated ids of ``w1``, ``w2``, ...

    True for Hugging Face *fast* tokenizers whose model is WordPiece with BERT's
    pre-tokeniser (whitespace + punctuation) and BERT's (or no) normaliser: every step
    of those works within a whitespace-separated word, so tokenizing each word alone
    gives the same pieces as tokenizing it in a sentence.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    try:
        from tokenizers import models, normalizers, pre_tokenizers
    except ImportError:  # pragma: no cover - transformers needs tokenizers
        return False
    if not isinstance(backend.model, models.WordPiece):
        return False
    if not isinstance(backend.pre_tokenizer, pre_tokenizers.BertPreTokenizer):
        return False
    norm = backend.normalizer
    return norm is None or isinstance(norm, normalizers.BertNormalizer)


@njit(cache=True, nogil=True)
def _row_lengths(rows, cell_ptr, cell_gene, n_tok, head_len, max_len):  # pragma: no cover - jit
    """Tokens of each selected cell's input: ``[CLS] head genes [SEP]``, capped at max_len."""
    out = np.empty(rows.size, np.int64)
    for r in range(rows.size):
        c = rows[r]
        t = 2 + head_len
        for j in range(cell_ptr[c], cell_ptr[c + 1]):
            t += n_tok[cell_gene[j]]
        out[r] = min(t, max_len)
    return out


@njit(cache=True, nogil=True)
def _gather_ids(
    rows, cell_ptr, cell_gene, tok_ptr, tok_ids, head, cls_id, sep_id, max_len, out
):  # pragma: no cover - jit
    """Fill ``out[r, :len]`` with the input ids of cell ``rows[r]`` (rest left as is).

    The content (head + gene pieces) is cut to ``max_len - 2`` tokens, as Hugging Face
    truncation of a single sequence does, then framed by ``[CLS]`` ... ``[SEP]``.
    """
    room = max_len - 2
    for r in range(rows.size):
        c = rows[r]
        out[r, 0] = cls_id
        pos = 1
        n = 0
        for h in range(head.size):
            if n >= room:
                break
            out[r, pos] = head[h]
            pos += 1
            n += 1
        for j in range(cell_ptr[c], cell_ptr[c + 1]):
            if n >= room:
                break
            g = cell_gene[j]
            for t in range(tok_ptr[g], tok_ptr[g + 1]):
                if n >= room:
                    break
                out[r, pos] = tok_ids[t]
                pos += 1
                n += 1
        out[r, pos] = sep_id


class WordPieceTable:
    """Word pieces of each gene word, tokenized once, for gathering cell input ids.

    Parameters
    ----------
    tokenizer
        A Hugging Face fast tokenizer for which :func:`supports_gather` holds.
    words
        The word written for each gene (its symbol, or its hash for the ablation).
    max_len
        The model's maximum input length (special tokens included).

    Examples
    --------
    >>> table = WordPieceTable(model.tokenizer, ["CD3E", "HLA-DRA"], max_len=256)  # doctest: +SKIP
    >>> ids, lengths = table.input_ids(np.array([0, 2]), np.array([1, 0]))  # doctest: +SKIP
    """

    def __init__(self, tokenizer: Any, words: Sequence[str], *, max_len: int):
        if not supports_gather(tokenizer):
            raise ValueError(
                f"{type(tokenizer).__name__} is not a BERT WordPiece fast tokenizer; "
                "encode the sentence texts instead"
            )
        self.tokenizer = tokenizer
        self.max_len = int(max_len)
        words = np.asarray(words, dtype=object).astype(str)
        uniq, inverse = np.unique(words, return_inverse=True)
        pieces = (
            tokenizer(uniq.tolist(), add_special_tokens=False)["input_ids"] if uniq.size else []
        )
        n_u = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
        flat_u = (
            np.fromiter((t for p in pieces for t in p), dtype=np.int32, count=int(n_u.sum()))
            if uniq.size
            else np.zeros(0, np.int32)
        )
        ptr_u = np.concatenate([[0], np.cumsum(n_u)]).astype(np.int64)
        # per gene (not per unique word): the gather reads one contiguous run per gene
        inv = inverse.ravel()
        self.n_tok = n_u[inv] if uniq.size else np.zeros(0, np.int64)
        self.tok_ptr = np.concatenate([[0], np.cumsum(self.n_tok)]).astype(np.int64)
        starts = ptr_u[:-1][inv] if uniq.size else np.zeros(0, np.int64)
        take = (
            np.repeat(starts - self.tok_ptr[:-1], self.n_tok) + np.arange(self.tok_ptr[-1])
            if self.n_tok.size
            else np.zeros(0, np.int64)
        )
        self.tok_ids = flat_u[take] if take.size else np.zeros(0, np.int32)
        self.cls_id = int(tokenizer.cls_token_id)
        self.sep_id = int(tokenizer.sep_token_id)
        self.pad_id = int(tokenizer.pad_token_id or 0)

    def head_ids(self, prefix: str) -> np.ndarray:
        """Ids of the prefix (no special tokens); the prefix must end at a word boundary."""
        text = prefix.strip()
        if not text:
            return np.zeros(0, np.int32)
        return np.asarray(
            self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int32
        )

    def lengths(self, cell_ptr, cell_gene, rows=None, *, head: np.ndarray | None = None):
        """Input length (tokens, special ones included) of each cell in ``rows``."""
        cell_ptr = np.asarray(cell_ptr, dtype=np.int64)
        rows = np.arange(cell_ptr.size - 1) if rows is None else np.asarray(rows, np.int64)
        h = 0 if head is None else int(head.size)
        return _row_lengths(rows, cell_ptr, np.asarray(cell_gene), self.n_tok, h, self.max_len)

    def input_ids(
        self,
        cell_ptr: np.ndarray,
        cell_gene: np.ndarray,
        rows: np.ndarray | None = None,
        *,
        head: np.ndarray | None = None,
        out: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Padded input ids and lengths of the cells ``rows`` of a ragged gene list.

        Parameters
        ----------
        cell_ptr, cell_gene
            Ragged genes of each cell (CSR-style pointers and gene indices), in sentence
            order, already cut to the token budget.
        rows
            Cells to build (default all).
        head
            Prefix ids (see :meth:`head_ids`).
        out
            An int64 buffer of at least ``len(rows) * max(lengths)`` entries to fill
            (e.g. pinned memory); the result is a contiguous view of its front.

        Returns
        -------
        ``(ids, lengths)``: ``ids`` is ``(len(rows), max(lengths))`` padded with the pad
        id; ``lengths`` the tokens of each row.
        """
        cell_ptr = np.asarray(cell_ptr, dtype=np.int64)
        cell_gene = np.asarray(cell_gene)
        rows = np.arange(cell_ptr.size - 1) if rows is None else np.asarray(rows, np.int64)
        head = np.zeros(0, np.int32) if head is None else np.asarray(head, np.int32)
        lens = _row_lengths(rows, cell_ptr, cell_gene, self.n_tok, head.size, self.max_len)
        width = int(lens.max()) if lens.size else 0
        if out is None:
            out = np.empty((rows.size, width), dtype=np.int64)
        else:  # a contiguous (rows, width) view of the front of a flat buffer
            out = out.reshape(-1)[: rows.size * width].reshape(rows.size, width)
        out.fill(self.pad_id)
        if rows.size:
            _gather_ids(
                rows,
                cell_ptr,
                cell_gene,
                self.tok_ptr,
                self.tok_ids,
                head,
                self.cls_id,
                self.sep_id,
                self.max_len,
                out,
            )
        return out, lens


def encode_gathered(
    model: Any,
    table: WordPieceTable,
    cell_ptr: np.ndarray,
    cell_gene: np.ndarray,
    *,
    prefix: str = "",
    batch_size: int = 64,
    progress=None,
) -> np.ndarray:
    """Embed every cell of a ragged gene list with a sentence-transformers ``model``.

    Cells are batched longest first (similar lengths share a batch: little padding),
    ids gathered per batch into pinned host buffers on CUDA and moved without blocking;
    results stay on the device until the end (no synchronisation per batch), so the
    gather of the next batch overlaps the model's forward pass.

    Returns ``(n_cells, dim)`` float32 in cell order. Every cell must have at least one
    gene (empty sentences are the caller's business).
    """
    import torch

    cell_ptr = np.asarray(cell_ptr, dtype=np.int64)
    n = cell_ptr.size - 1
    head = table.head_ids(prefix)
    lens = table.lengths(cell_ptr, cell_gene, head=head)
    order = np.argsort(-lens, kind="stable")
    dev = next(model.parameters()).device
    cuda = dev.type == "cuda"
    outs: list[Any] = []
    bufs = [None, None]  # pinned id buffers, alternating (one may still be in flight)
    with torch.inference_mode():
        for k, b0 in enumerate(range(0, n, batch_size)):
            rows = order[b0 : b0 + batch_size]
            width = int(lens[rows[0]])
            host = None
            if cuda:  # pinned buffers: a pageable upload would synchronise the stream
                buf = bufs[k % 2]
                if buf is None or buf[0].numel() < rows.size * width:
                    buf = (
                        torch.empty(batch_size * table.max_len, dtype=torch.int64, pin_memory=True),
                        torch.empty(batch_size, dtype=torch.int64, pin_memory=True),
                        [None],
                    )
                    bufs[k % 2] = buf
                elif buf[2][0] is not None:
                    buf[2][0].synchronize()  # its previous upload has finished
                host = buf[0].numpy()
            ids_np, rl = table.input_ids(cell_ptr, cell_gene, rows, head=head, out=host)
            ids = torch.from_numpy(ids_np)
            if cuda:
                h_len = buf[1][: rows.size]
                h_len.numpy()[:] = rl
                ids = ids.to(dev, non_blocking=True)
                lt = h_len.to(dev, non_blocking=True)
                ev = torch.cuda.Event()
                ev.record()
                buf[2][0] = ev
            else:
                lt = torch.from_numpy(rl)
            mask = (torch.arange(ids.shape[1], device=dev)[None, :] < lt[:, None]).to(torch.int64)
            feats = {
                "input_ids": ids,
                "attention_mask": mask,
                "token_type_ids": torch.zeros_like(ids),
            }
            emb = model(feats)["sentence_embedding"]
            outs.append(emb.float())
            if progress is not None:
                progress(rows.size)
    res = torch.cat(outs).cpu().numpy() if outs else np.zeros((0, 0), np.float32)
    out = np.empty_like(res)
    out[order] = res
    return out
