"""Text encoders: sentence-transformers models and the OpenAI embeddings API.

All encoders share :meth:`TextEncoder.encode`: de-duplication, length-sorted
batches, a progress bar and a persistent cache (:class:`EmbeddingCache`) keyed by model
and text. Names load on first use: sentence-transformers and openai are imported only
when an encoder of theirs encodes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._core._lazy import attach_stub

if TYPE_CHECKING:
    from .._cache import EmbeddingCache
    from .._core._openai import OpenAIRequestError
    from ._base import TextEncoder, default_cache
    from ._factory import get_encoder
    from ._openai import OpenAIEncoder
    from ._sentence_transformers import SentenceTransformerEncoder, packaged_minilm_path

#: OpenAI embedding models and their output widths
OPENAI_MODELS = {
    "text-embedding-ada-002": 1536,
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
}

# the names above, imported on first access
__getattr__, __dir__, _lazy = attach_stub(__name__, __file__)
__all__ = sorted([*_lazy, "OPENAI_MODELS"])
