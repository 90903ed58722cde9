"""Shared docstring fragments (scanpy's ``_doc_params`` pattern).

A public function writes ``{doc_adata}`` (etc.) in its numpydoc ``Parameters`` section
and is decorated with ``@doc_params(doc_adata=doc_adata, ...)``; the fragments below are
filled in at import time, so every function documents the common parameters in the
same words.

Examples
--------
>>> from genept._core._docs import doc_params, doc_copy
>>> @doc_params(doc_copy=doc_copy)
... def f(adata, *, copy=False):
...     '''Do it.
...
...     Parameters
...     ----------
...     {doc_copy}
...     '''
>>> "Return a modified copy" in f.__doc__
True
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from textwrap import indent
from typing import TypeVar

__all__ = [
    "doc_adata",
    "doc_common",
    "doc_copy",
    "doc_device",
    "doc_expression",
    "doc_key_added",
    "doc_layer",
    "doc_params",
    "doc_random_state",
    "doc_use_raw",
]

F = TypeVar("F", bound=Callable)

doc_adata = """\
adata
    The annotated data matrix of shape ``n_obs`` x ``n_vars``: rows are cells, columns
    genes."""

doc_layer = """\
layer
    Key of ``adata.layers`` to use instead of ``adata.X`` (normalised, log-transformed
    expression, as the GenePT papers use)."""

doc_use_raw = """\
use_raw
    Use ``adata.raw.X`` (and ``adata.raw.var_names``). ``None``: ``adata.X``, as scanpy
    does today. Cannot be combined with ``layer``."""

doc_expression = doc_layer + "\n" + doc_use_raw

doc_key_added = """\
key_added
    Where to write the result. The matrix goes to ``obsm[key_added]`` (``varm`` for genes);
    parameters to ``uns[key]["params"]`` and flags to ``obs[key + "_empty"]``, where
    ``key`` is ``key_added`` without its ``X_`` prefix."""

doc_copy = """\
copy
    Return a modified copy instead of writing into ``adata`` (then ``None`` is
    returned). Nothing is written when the computation fails."""

doc_random_state = """\
random_state
    Seed of every random choice (an ``int``), so that results are reproducible.
    ``seed=`` is accepted with a :class:`FutureWarning`."""

doc_device = """\
device
    ``"auto"`` (CUDA when torch sees a GPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or
    ``"mps"``. ``None``: :attr:`genept.settings.device`."""


#: every shared fragment by its placeholder name: ``@doc_params(**doc_common)``
doc_common = {
    "doc_adata": doc_adata,
    "doc_copy": doc_copy,
    "doc_device": doc_device,
    "doc_key_added": doc_key_added,
    "doc_layer": doc_layer,
    "doc_random_state": doc_random_state,
    "doc_use_raw": doc_use_raw,
}


def doc_params(**fragments: str) -> Callable[[F], F]:
    """Fill ``{name}`` placeholders of a docstring with shared fragments.

    The docstring is dedented first; a placeholder must sit at the start of a line, in
    the ``Parameters`` section, with the indentation of a parameter name. Literal braces
    in such a docstring are written ``{{`` and ``}}``.
    """

    def decorate(obj: F) -> F:
        doc = inspect.cleandoc(obj.__doc__ or "")
        lines = []
        for line in doc.splitlines():
            stripped = line.strip()
            if stripped.startswith("{") and stripped.endswith("}") and stripped[1:-1] in fragments:
                pad = line[: len(line) - len(line.lstrip())]
                lines.append(indent(fragments[stripped[1:-1]], pad))
            else:
                lines.append(line.replace("{{", "{").replace("}}", "}"))
        obj.__doc__ = "\n".join(lines)
        return obj

    return decorate
