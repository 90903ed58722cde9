"""Lazy attributes of a package (module-level ``__getattr__``, PEP 562).

``import genept`` stays light: a sub-package or a public function is imported on first
access (``gpt.tl.embed_cells``), so torch, sentence-transformers, openai, scikit-learn
and scanpy's plotting load only when a function that needs them is used. ``dir()`` and
``__all__`` list every lazy name, so tab completion and Sphinx's autodoc see them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping

__all__ = ["attach"]


def attach(
    package: str,
    *,
    submodules: Iterable[str] = (),
    attrs: Mapping[str, str] | None = None,
) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``.

    Parameters
    ----------
    package
        The package's ``__name__``.
    submodules
        Sub-modules importable as attributes (``"tl"`` → ``package.tl``).
    attrs
        ``{name: ".module"}``: ``name`` is imported from ``package + module`` on first use.

    Examples
    --------
    >>> __getattr__, __dir__, __all__ = attach(__name__, attrs={"f": "._f"})  # doctest: +SKIP
    """
    subs = set(submodules)
    table = dict(attrs or {})

    def __getattr__(name: str):
        if name in subs:
            value = importlib.import_module(f"{package}.{name}")
        elif name in table:
            value = getattr(importlib.import_module(table[name], package), name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)  # later accesses skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(sys.modules[package].__dict__) | subs | set(table))

    return __getattr__, __dir__, sorted(subs | set(table))
