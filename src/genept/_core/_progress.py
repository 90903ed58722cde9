"""One progress-bar factory for every long loop (cells, texts, rows, epochs).

Every bar honours :attr:`genept.settings.progress`, shows the rate and the time left
(ETA), scales large counts (``12.3k/1.20M``) and closes itself in a ``with`` block.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BAR_FORMAT", "progress_bar"]

#: counts, percentage, elapsed < remaining (ETA) and rate; tqdm drops the ETA when
#: the total is unknown
BAR_FORMAT = (
    "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"
)


def progress_bar(
    total: int | None = None,
    *,
    desc: str,
    unit: str = "it",
    show: bool | None = None,
    leave: bool = False,
    **kwargs: Any,
):
    """A :func:`tqdm.auto.tqdm` bar, hidden unless progress is wanted.

    Parameters
    ----------
    total
        Number of units (``None``: unknown; no percentage nor ETA).
    desc
        What is counted, e.g. ``"GenePT-w"`` or ``"cell sentences"``.
    unit
        Unit of ``total`` (``"cell"``, ``"text"``, ``"row"``, ``"epoch"``).
    show
        Show the bar; ``None``: :attr:`genept.settings.progress`. Empty work (``total=0``)
        never shows a bar.
    leave
        Keep the finished bar on screen.
    **kwargs
        Passed to :func:`tqdm.auto.tqdm` (e.g. ``position=``, ``postfix=``).

    Returns
    -------
    The bar; use it as a context manager and call ``bar.update(n)``.

    Examples
    --------
    >>> from genept._core._progress import progress_bar
    >>> with progress_bar(3, desc="cells", unit="cell", show=False) as bar:
    ...     for _ in range(3):
    ...         _ = bar.update(1)
    """
    from tqdm.auto import tqdm

    if show is None:
        from .._settings import settings

        show = bool(settings.progress)
    kwargs.setdefault("dynamic_ncols", True)
    if total is not None:
        kwargs.setdefault("bar_format", BAR_FORMAT)
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        leave=leave,
        disable=not show or total == 0,
        **kwargs,
    )
