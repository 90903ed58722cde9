"""Models used by genept: scGPT's cell encoder (loaded without the ``scgpt`` package) and
the scMPT fusion classifier.

Names load on first use: :class:`ScMPTParams` and :class:`ScMPTModel` do not import torch
until a model is trained or loaded; the scGPT names do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._core._lazy import attach

if TYPE_CHECKING:
    from ._scgpt import (
        SCGPT_SPECIAL_TOKENS,
        ScGPTCheckpoint,
        ScGPTConfig,
        ScGPTEncoder,
        load_scgpt,
    )
    from .scmpt import SCMPT_PAPER_GRID, ScMPTModel, ScMPTParams

# name -> module it lives in; imported on first access (one line per public name)
__getattr__, __dir__, __all__ = attach(
    __name__,
    attrs={
        "SCGPT_SPECIAL_TOKENS": "._scgpt",
        "SCMPT_PAPER_GRID": ".scmpt",
        "ScGPTCheckpoint": "._scgpt",
        "ScGPTConfig": "._scgpt",
        "ScGPTEncoder": "._scgpt",
        "ScMPTModel": ".scmpt",
        "ScMPTParams": ".scmpt",
        "load_scgpt": "._scgpt",
    },
)
