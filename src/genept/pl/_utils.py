"""``savefig_or_show``: scanpy's ``save=`` / ``show=`` conventions, for every genept plot."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["savefig_or_show"]

#: extensions recognised at the end of ``save`` (scanpy's three, and other matplotlib ones)
_EXTS = (".svg", ".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".eps", ".ps")


def savefig_or_show(
    writekey: str,
    fig,
    ax=None,
    *,
    show: bool | None = None,
    save: bool | str | os.PathLike | None = None,
    dpi: float | None = None,
):
    """Save and/or show ``fig`` the way scanpy's plotting functions do.

    ``save=True`` writes ``scanpy.settings.figdir / f"{writekey}{plot_suffix}.{format}"``
    (``format``: ``scanpy.settings.file_format_figs``); a string is appended to
    ``writekey``, and an extension at its end picks the format (``save="_scmpt.pdf"`` →
    ``figures/confusion_matrix_scmpt.pdf``). ``save=None`` follows
    ``scanpy.settings.autosave``, ``show=None`` ``scanpy.settings.autoshow``. A saved
    figure that is not shown is closed.

    Returns
    -------
    ``ax`` unless the figure was shown (then ``None``), as scanpy's plots do.
    """
    import matplotlib.pyplot as plt
    import scanpy as sc

    ext = None
    if isinstance(save, os.PathLike):
        save = os.fspath(save)
    if isinstance(save, str):
        for e in _EXTS:
            if save.lower().endswith(e):
                ext, save = e[1:], save[: -len(e)]
                break
        writekey, save = writekey + save, True
    save = sc.settings.autosave if save is None else save
    show = sc.settings.autoshow if show is None else show
    if save:
        figdir = Path(sc.settings.figdir)
        figdir.mkdir(parents=True, exist_ok=True)
        path = figdir / f"{writekey}{sc.settings.plot_suffix}.{ext or sc.settings.file_format_figs}"
        sc.logging.warning(f"saving figure to file {path}")
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    if show:
        plt.show()
    if save and not show:
        plt.close(fig)
    return None if show else ax
