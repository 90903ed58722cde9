"""Sphinx configuration of the genept documentation."""

from __future__ import annotations

import os
import sys
from importlib.metadata import version as _version
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "src"))
# notebooks run offline: the kernels inherit this environment
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _sync_tutorials() -> None:
    """Copy the tutorial notebooks of ``tutorials/`` into ``docs/tutorials/``.

    The ``.ipynb`` notebooks (outputs stripped) live at the repository root, next to the
    code, where users open them in Jupyter; the docs build renders and executes a copy
    with myst-nb. ``docs/tutorials/`` is generated (gitignored), so no file is kept twice, no
    symlink is needed (Windows, sdists, Read the Docs), and a plain ``sphinx-build``
    works. Files are copied only when their content changed, keeping their times, so
    Sphinx's incremental build and the notebook execution cache stay valid.
    """
    import filecmp
    import shutil

    src, dst = HERE.parent / "tutorials", HERE / "tutorials"
    if not src.is_dir():
        return
    dst.mkdir(exist_ok=True)
    wanted = {p.name for p in src.iterdir() if p.is_file() and not p.name.startswith(".")}
    for name in wanted:
        if not (dst / name).exists() or not filecmp.cmp(src / name, dst / name, shallow=False):
            shutil.copy2(src / name, dst / name)
    for p in dst.iterdir():  # tutorials removed from the sources
        if p.is_file() and p.name not in wanted:
            p.unlink()


_sync_tutorials()

project = "genept"
author = "genept developers"
copyright = "2026, genept developers"
release = _version("genept")
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # types are in the signature; numpydoc text says the rest
autodoc_default_options = {"members": True, "inherited-members": False}
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
napoleon_use_param = True
napoleon_custom_sections = [("Params", "Parameters")]
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3
nb_merge_streams = True
nb_execution_show_tb = True  # a failing cell prints its traceback in the build log
# "cache" (default: run notebooks whose code changed, keep results in _build),
# "force" (run all: docs/build.sh, CI), "off" (render the sources without outputs)
nb_execution_mode = os.environ.get("GENEPT_NB_EXECUTE", "cache")
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_cache_path = str(HERE / "_build" / ".jupyter_cache")

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints", "build.sh"]
templates_path = ["_templates"]

# Inventories of other projects are fetched only where the network is open (Read the
# Docs); offline builds skip them instead of warning.
intersphinx_mapping = {}
if os.environ.get("READTHEDOCS") or os.environ.get("GENEPT_DOCS_INTERSPHINX"):
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "scipy": ("https://docs.scipy.org/doc/scipy", None),
        "pandas": ("https://pandas.pydata.org/docs", None),
        "anndata": ("https://anndata.readthedocs.io/en/stable", None),
        "scanpy": ("https://scanpy.readthedocs.io/en/stable", None),
        "matplotlib": ("https://matplotlib.org/stable", None),
        "torch": ("https://pytorch.org/docs/stable", None),
    }
# cross-references into projects whose inventories are absent offline are not errors
nitpicky = False
suppress_warnings = ["myst.header"]

html_theme = "furo"
html_title = "genept"
html_static_path = ["_static"]
