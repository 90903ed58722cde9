"""Lazy attributes of a package (module-level ``__getattr__``, PEP 562).

``import genept`` stays light: a sub-package or a public function is imported on first
access (``gpt.tl.embed_cells``), so torch, sentence-transformers, openai, scikit-learn
and scanpy's plotting load only when a function that needs them is used. ``dir()`` and
``__all__`` list every lazy name, so tab completion and Sphinx's autodoc see them.

A package writes its public names once, as the imports of an ``if TYPE_CHECKING:``
block (what static analysers and IDEs read), and :func:`attach_stub` builds the lazy
table from that block (as scientific-python's ``lazy_loader.attach_stub`` does from a
``.pyi`` file)::

    if TYPE_CHECKING:
        from ._embed_cells import embed_cells

    __getattr__, __dir__, __all__ = attach_stub(__name__, __file__)
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable, Iterable, Mapping

__all__ = ["attach", "attach_stub"]


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


def _type_checking_imports(source: str, filename: str) -> tuple[list[str], dict[str, str]]:
    """``(submodules, {name: ".module"})`` of the ``if TYPE_CHECKING:`` imports in ``source``."""
    subs: list[str] = []
    table: dict[str, str] = {}
    for node in ast.parse(source, filename=filename).body:
        if not (isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"):
            continue
        for imp in node.body:
            if not isinstance(imp, ast.ImportFrom) or not imp.level:
                raise ValueError(
                    f"{filename}:{imp.lineno}: the TYPE_CHECKING block of a lazy package "
                    "holds only relative `from . import` lines"
                )
            for alias in imp.names:
                if alias.asname not in (None, alias.name):
                    raise ValueError(f"{filename}:{imp.lineno}: no `as` in lazy imports")
                if imp.module is None:  # from . import tl
                    subs.append(alias.name)
                else:
                    table[alias.name] = "." * imp.level + imp.module
    return subs, table


def attach_stub(
    package: str, file: str
) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """:func:`attach` with the names of the package's ``if TYPE_CHECKING:`` imports.

    Parameters
    ----------
    package, file
        The package's ``__name__`` and ``__file__`` (its ``__init__.py``, read once at
        import; only its ``if TYPE_CHECKING:`` block counts).

    Returns
    -------
    ``(__getattr__, __dir__, __all__)``, as :func:`attach`.
    """
    with open(file, encoding="utf-8") as f:
        subs, table = _type_checking_imports(f.read(), file)
    return attach(package, submodules=subs, attrs=table)
