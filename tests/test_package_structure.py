"""The shape of the package, in scanpy's spirit (its ``tests/test_package_structure.py``).

* ``import genept`` loads no heavy dependency (torch, sentence-transformers, openai,
  scikit-learn, matplotlib) until a function needs it; every lazy name resolves.
* Public functions take at most 3 positional parameters, the rest keyword-only.
* Functions with ``copy``: ``copy=True`` returns a new AnnData and leaves the input
  untouched; ``copy=False`` returns ``None`` and writes in place.
* Every public function has a numpydoc docstring with ``Parameters`` (naming every
  parameter) and ``Examples``.
* No module imports another sub-package's private module (``genept.tl`` from
  ``genept.pp._cell_sentences``); ``genept._core`` and the top-level private modules are
  the shared plumbing everyone may use.

Each check collects *all* offenders and fails listing them.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import genept as gpt

SRC = Path(gpt.__file__).resolve().parent
SUBPACKAGES = ["pp", "tl", "pl", "bm", "datasets", "encoders", "models"]
HEAVY = ("torch", "sentence_transformers", "openai", "sklearn", "matplotlib.pyplot")


def _public_functions():
    out = []
    for sub in SUBPACKAGES:
        mod = importlib.import_module(f"genept.{sub}")
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.isfunction(obj):
                out.append((f"{sub}.{name}", obj))
    return out


def _source_file(fn) -> str:
    return Path(inspect.getsourcefile(inspect.unwrap(fn))).resolve().relative_to(SRC).as_posix()


def _report(offenders: dict[str, str], what: str) -> None:
    """Fail, listing every offender."""
    assert not offenders, f"{len(offenders)} {what}:\n" + "\n".join(
        f"  {k}: {v}" for k, v in sorted(offenders.items())
    )


# ------------------------------------------------------------------ lazy imports
def test_import_genept_loads_nothing_heavy():
    code = f"import sys, genept\nprint([m for m in {HEAVY!r} if m in sys.modules])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


@pytest.mark.parametrize(
    "expr",
    [
        "gpt.tl.annotate_knn",
        "gpt.tl.annotate_knn_ensemble",
        "gpt.tl.proba_frame",
        "gpt.tl.annotate_mlp",
        "gpt.tl.annotate_llm",
        "gpt.tl.embed_cells",
        "gpt.tl.embed_genes",
        "gpt.tl.gene_programs",
        "gpt.models.ScMPTParams",
        "gpt.encoders.EmbeddingCache",
        "gpt.pp.cell_sentences",
        "gpt.bm.knn_metrics",
    ],
)
def test_light_functions_do_not_import_torch(expr):
    """Looking a function up imports no torch, openai nor sentence-transformers: they load
    when a model is trained or a text model encodes (scGPT's module alone needs torch)."""
    code = (
        f"import sys, genept as gpt\n{expr}\n"
        "print([m for m in ('torch', 'sentence_transformers', 'openai') if m in sys.modules])"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_lazy_table_comes_from_the_type_checking_block(tmp_path):
    """attach_stub reads the names once, from the package's TYPE_CHECKING imports."""
    from genept._core._lazy import _type_checking_imports

    src = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from . import tl\n    from ._a import f, g\n    from .._b.c import h\n"
    )
    assert _type_checking_imports(src, "x.py") == (["tl"], {"f": "._a", "g": "._a", "h": ".._b.c"})
    with pytest.raises(ValueError, match="relative"):
        _type_checking_imports("if TYPE_CHECKING:\n    import numpy\n", "x.py")


def test_subpackages_load_lazily_and_resolve():
    code = (
        "import sys, genept as gpt\n"
        "before = sorted(m for m in sys.modules if m.startswith('genept.') and m.count('.') == 1)\n"
        "f = gpt.tl.embed_cells\n"
        "print(before, 'genept.tl' in sys.modules, f.__module__)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, loaded, mod = r.stdout.strip().rsplit(" ", 2)
    assert not any(f"genept.{s}'" in before for s in SUBPACKAGES), before
    assert loaded == "True" and mod.startswith("genept.tl")


@pytest.mark.parametrize("sub", SUBPACKAGES)
def test_every_lazy_name_resolves_and_is_listed(sub):
    mod = getattr(gpt, sub)
    assert sub in dir(gpt) and sub in gpt.__all__
    for name in mod.__all__:
        assert getattr(mod, name) is not None
        assert name in dir(mod)
    with pytest.raises(AttributeError, match="no attribute"):
        mod.no_such_function  # noqa: B018


# ------------------------------------------------------------------ signatures
def test_at_most_three_positional_parameters():
    offenders = {}
    for name, fn in _public_functions():
        params = inspect.signature(fn).parameters.values()
        pos = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(pos) > 3:
            offenders[name] = f"{_source_file(fn)}: positional {pos}"
    _report(offenders, "public functions with more than 3 positional parameters")


#: old parameter names that must be gone from public signatures (kept as deprecated aliases)
RENAMED = {"seed": "random_state"}


def test_one_name_for_the_random_seed():
    """scanpy's ``random_state`` everywhere; ``seed=`` still works, with a FutureWarning."""
    offenders = {}
    for name, fn in _public_functions():
        for old, new in RENAMED.items():
            if old in inspect.signature(fn).parameters:
                offenders[name] = f"{_source_file(fn)}: takes {old}= (scanpy's name: {new}=)"
    _report(offenders, "public functions with an old parameter name")


def test_old_seed_name_still_works():
    X = np.array([[0, 2, 2, 1], [1, 1, 0, 0]], dtype=np.float32)
    with pytest.warns(FutureWarning, match="random_state"):
        old = gpt.pp.rank_genes(X, seed=3)
    new = gpt.pp.rank_genes(X, random_state=3)
    assert all(np.array_equal(a, b) for a, b in zip(old, new, strict=True))
    with pytest.raises(TypeError, match="random_state"):
        gpt.pp.rank_genes(X, seed=3, random_state=3)


def test_copy_is_keyword_only_and_false_by_default():
    offenders = {}
    for name, fn in _public_functions():
        p = inspect.signature(fn).parameters.get("copy")
        if p is not None and (p.kind is not p.KEYWORD_ONLY or p.default is not False):
            offenders[name] = f"{_source_file(fn)}: copy is {p.kind.name}, default {p.default!r}"
    _report(offenders, "functions whose copy is not keyword-only with default False")


def _cells(n_obs=40, n_vars=12, seed=0) -> AnnData:
    rng = np.random.default_rng(seed)
    X = np.log1p(rng.poisson(1.5, (n_obs, n_vars)).astype(np.float32))
    labels = np.where(np.arange(n_obs) % 2 == 0, "T cell", "B cell")
    X[labels == "B cell", :4] += 2.0
    a = AnnData(
        X,
        obs=pd.DataFrame({"cell_type": labels}, index=[f"c{i}" for i in range(n_obs)]),
        var=pd.DataFrame(index=[f"CD{i}" for i in range(n_vars)]),
    )
    a.varm["X_genept"] = rng.standard_normal((n_vars, 8)).astype(np.float32)
    a.obsm["X_pca"] = (X[:, :6] + rng.normal(0, 0.1, (n_obs, 6))).astype(np.float32)
    a.obsm["X_genept_w"] = (X[:, 2:10] + rng.normal(0, 0.1, (n_obs, 8))).astype(np.float32)
    return a


def _own_embeddings(a):
    return pd.DataFrame(np.random.default_rng(1).standard_normal((a.n_vars, 8)), index=a.var_names)


#: how to call each function with ``copy`` on small data (``ref`` is a labelled reference)
CALLS = {
    "tl.embed_cells": lambda a, ref, copy: gpt.tl.embed_cells(
        a, method="w", device="cpu", copy=copy
    ),
    "tl.embed_genes": lambda a, ref, copy: gpt.tl.embed_genes(
        a, source=_own_embeddings(a), copy=copy
    ),
    "tl.gene_programs": lambda a, ref, copy: gpt.tl.gene_programs(a, threshold=0.5, copy=copy),
    "tl.annotate_knn": lambda a, ref, copy: gpt.tl.annotate_knn(
        a, ref, use_rep="X_pca", label_key="cell_type", copy=copy
    ),
    "tl.annotate_knn_ensemble": lambda a, ref, copy: gpt.tl.annotate_knn_ensemble(
        a, ref, use_rep=["X_pca", "X_genept_w"], label_key="cell_type", copy=copy
    ),
    "pp.cell_sentences": lambda a, ref, copy: gpt.pp.cell_sentences(a, copy=copy),
}
#: functions whose call needs a model or a server; their copy= is checked by signature only
NEEDS_EXTERNAL = {
    "tl.annotate_llm",
    "tl.embed_scgpt",
    "tl.annotate_mlp",
    "tl.annotate_scmpt",
    "tl.explain_annotation",  # a trained model and a text encoder: tests/test_explain.py
}


def _copy_functions():
    return [n for n, fn in _public_functions() if "copy" in inspect.signature(fn).parameters]


def test_every_copy_function_has_a_call_recipe():
    missing = sorted(set(_copy_functions()) - set(CALLS) - NEEDS_EXTERNAL)
    assert not missing, f"add a small call to CALLS for {missing}"


def _snapshot(a: AnnData) -> tuple:
    return (
        sorted(a.obs.columns),
        sorted(a.var.columns),
        sorted(a.obsm.keys()),
        sorted(a.varm.keys()),
        sorted(a.uns.keys()),
    )


@pytest.mark.parametrize("name", sorted(CALLS))
def test_copy_behaviour(name):
    """copy=True: a new AnnData, the input untouched; copy=False: None, written in place."""
    a, ref = _cells(seed=0), _cells(seed=1)
    before = _snapshot(a)
    X_before = a.X.copy()
    out = CALLS[name](a, ref, True)
    assert isinstance(out, AnnData) and out is not a
    assert _snapshot(a) == before and np.array_equal(a.X, X_before)  # input untouched
    assert _snapshot(out) != before  # the copy got the results
    ret = CALLS[name](a, ref, False)
    assert ret is None
    assert _snapshot(a) == _snapshot(out)  # same keys written in place


# ------------------------------------------------------------------ docstrings
_SECTION = re.compile(r"^\s*(\w[\w ]*)\n\s*-{3,}\s*$", re.M)


def _documented_names(doc: str) -> set[str]:
    """Parameter names of the numpydoc Parameters section (``a, b`` lines count both)."""
    m = re.search(
        r"^\s*Parameters\n\s*-{3,}\n(.*?)(?=^\s*\w[\w ]*\n\s*-{3,}\s*$|\Z)", doc, re.S | re.M
    )
    if not m:
        return set()
    block = inspect.cleandoc("\n" + m.group(1)) if m.group(1).strip() else ""
    names = set()
    for line in block.splitlines():
        if line and not line[0].isspace():
            head = line.split(":")[0]
            names.update(n.strip().lstrip("*") for n in head.split(","))
    return names


def test_public_functions_have_numpydoc_docstrings():
    offenders = {}
    for name, fn in _public_functions():
        doc = inspect.getdoc(fn) or ""
        sig = inspect.signature(fn).parameters
        problems = []
        if not doc.strip():
            problems.append("no docstring")
        sections = set(_SECTION.findall(doc))
        wanted = [p for p in sig if p not in ("self", "cls")]
        if wanted and "Parameters" not in sections:
            problems.append("no Parameters section")
        elif wanted:
            undocumented = [p for p in wanted if p not in _documented_names(doc)]
            if undocumented:
                problems.append(f"undocumented {undocumented}")
        if "Examples" not in sections:
            problems.append("no Examples section")
        if problems:
            offenders[name] = f"{_source_file(fn)}: {'; '.join(problems)}"
    _report(offenders, "public functions without a complete numpydoc docstring")


# ------------------------------------------------------------------ private imports
def _module_of(path: Path) -> list[str]:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ["genept", *(parts[:-1] if parts[-1] == "__init__" else parts)]


def _private_cross_imports() -> dict[str, str]:
    """``from genept.<other sub-package>._private import ...`` anywhere in src/genept."""
    offenders = {}
    subs = set(SUBPACKAGES)
    for path in sorted(SRC.rglob("*.py")):
        here = _module_of(path)
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - node.level + (1 if is_pkg else 0)]
                    mod = base + (node.module.split(".") if node.module else [])
                else:
                    mod = (node.module or "").split(".")
                targets = [[*mod, a.name] for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name.split(".") for a in node.names]
            for t in targets:
                if len(t) < 2 or t[0] != "genept" or t[1] not in subs:
                    continue
                own_sub = here[1] if len(here) > 1 else None
                if t[1] == own_sub:
                    continue  # inside one sub-package: its own business
                private = [p for p in t[2:] if p.startswith("_") and not p.startswith("__")]
                if private:
                    rel = path.relative_to(SRC).as_posix()
                    offenders[f"{rel}:{node.lineno}"] = f"{rel}: imports {'.'.join(t)}"
    return offenders


def test_no_private_imports_across_subpackages():
    _report(_private_cross_imports(), "imports of another sub-package's private module")


def test_private_import_scan_finds_known_patterns(tmp_path, monkeypatch):
    """The scan itself: a relative private import across packages is caught."""
    fake = tmp_path / "genept"
    (fake / "tl").mkdir(parents=True)
    (fake / "pp").mkdir()
    (fake / "tl" / "_x.py").write_text(
        "from ..pp._cell_sentences import build\nfrom ..pp import cell_sentences\n"
        "from .._core._keys import uns_key\nfrom ._y import z\n"
    )
    (fake / "pp" / "_cell_sentences.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "SRC", fake)
    found = _private_cross_imports()
    assert list(found.values()) == ["tl/_x.py: imports genept.pp._cell_sentences.build"]


def test_openai_missing_names_the_extra(monkeypatch):
    """Without the optional openai package, asking for an OpenAI model says what to install."""
    monkeypatch.setitem(sys.modules, "openai", None)  # import openai -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'genept\[openai\]'"):
        gpt.encoders.get_encoder("openai:text-embedding-3-large", api_key="sk-test")
