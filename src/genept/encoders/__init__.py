"""Text encoders: sentence-transformers models and the OpenAI embeddings API.

All encoders share :meth:`TextEncoder.encode`: de-duplication, length-sorted
batches, a progress bar and a persistent cache (:class:`EmbeddingCache`) keyed by model
and text. Names load on first use: sentence-transformers and openai are imported only
when an encoder of theirs encodes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._core._lazy import attach

if TYPE_CHECKING:
    from .._cache import EmbeddingCache
    from .._core._openai import OpenAIRequestError
    from ._base import TextEncoder, default_cache
    from ._factory import OPENAI_MODELS, get_encoder
    from ._openai import OpenAIEncoder
    from ._sentence_transformers import SentenceTransformerEncoder, packaged_minilm_path

# name -> module it lives in; imported on first access (one line per public name)
__getattr__, __dir__, __all__ = attach(
    __name__,
    attrs={
        "EmbeddingCache": ".._cache",
        "OPENAI_MODELS": "._factory",
        "OpenAIEncoder": "._openai",
        "OpenAIRequestError": ".._core._openai",
        "SentenceTransformerEncoder": "._sentence_transformers",
        "TextEncoder": "._base",
        "default_cache": "._base",
        "get_encoder": "._factory",
        "packaged_minilm_path": "._sentence_transformers",
    },
)
