"""``get_encoder``: an encoder from a model name."""

from __future__ import annotations

from . import OPENAI_MODELS
from ._base import TextEncoder

__all__ = ["get_encoder"]


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
    from .._utils import import_optional
    from ._sentence_transformers import SentenceTransformerEncoder

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

        # an ImportError naming `pip install 'genept[openai]'`
        import_optional("openai", extra="openai", purpose="OpenAI embeddings")
        return OpenAIEncoder(model.removeprefix("openai:"), **kwargs)
    return SentenceTransformerEncoder(model, **kwargs)
