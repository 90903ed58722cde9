"""Text encoders: sentence-transformers models and the OpenAI embeddings API.

All encoders share :meth:`TextEncoder.encode`: de-duplication, length-sorted
batches, a progress bar and a persistent cache keyed by model and text.
"""

from __future__ import annotations

from ._base import TextEncoder, default_cache
from ._sentence_transformers import SentenceTransformerEncoder, packaged_minilm_path

__all__ = [
    "OPENAI_MODELS",
    "OpenAIEncoder",
    "SentenceTransformerEncoder",
    "TextEncoder",
    "default_cache",
    "get_encoder",
    "packaged_minilm_path",
]

#: OpenAI embedding models and their output widths
OPENAI_MODELS = {
    "text-embedding-ada-002": 1536,
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
}


def _require_openai() -> None:
    from .._utils import import_optional

    import_optional("openai", extra="openai", purpose="OpenAI embeddings")


def __getattr__(name):
    if name == "OpenAIEncoder":
        from ._openai import OpenAIEncoder

        return OpenAIEncoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"OpenAIEncoder"})


def get_encoder(model: str | TextEncoder | None = None, **kwargs) -> TextEncoder:
    """An encoder from a name.

    Parameters
    ----------
    model
        * ``None`` or ``"all-MiniLM-L6-v2"``: the packaged all-MiniLM-L6-v2 (offline);
        * ``"openai:<model>"`` or an OpenAI model name (``"text-embedding-ada-002"``,
          ``"text-embedding-3-large"``…): the OpenAI embeddings API;
        * any other string: a sentence-transformers model name or local folder
          (e.g. ``"llmrails/ember-v1"``);
        * a :class:`TextEncoder`: returned as is.
    **kwargs
        Passed to the encoder class.

    Examples
    --------
    >>> import genept as gpt
    >>> gpt.encoders.get_encoder("openai:text-embedding-3-large")  # doctest: +SKIP
    OpenAIEncoder('openai:text-embedding-3-large')
    """
    from .._settings import settings

    if isinstance(model, TextEncoder):
        if kwargs:
            raise ValueError("options cannot be given together with an encoder instance")
        return model
    if model is None:
        model = settings.default_model
    if not isinstance(model, str):
        raise TypeError(
            f"model must be a name, a path or a TextEncoder, got {type(model).__name__}"
        )
    if model.startswith("openai:") or model in OPENAI_MODELS:
        from ._openai import OpenAIEncoder

        _require_openai()  # ImportError naming `pip install 'genept[openai]'`
        return OpenAIEncoder(model.removeprefix("openai:"), **kwargs)
    return SentenceTransformerEncoder(model, **kwargs)
