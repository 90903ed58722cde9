"""Models used by genept: scGPT's cell encoder (loaded without the ``scgpt`` package) and the scMPT fusion classifier.

Names load on first use: :class:`ScMPTParams` and :class:`ScMPTModel` do not import torch
until a model is trained or loaded; the scGPT names do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._core._lazy import attach_stub

if TYPE_CHECKING:
    from ._scgpt import (
        SCGPT_SPECIAL_TOKENS,
        ScGPTCheckpoint,
        ScGPTConfig,
        ScGPTEncoder,
        load_scgpt,
    )
    from .scmpt import SCMPT_PAPER_GRID, ScMPTModel, ScMPTParams

# the names above, imported on first access
__getattr__, __dir__, __all__ = attach_stub(__name__, __file__)
