"""Models used by genept: scGPT's cell encoder (loaded without the ``scgpt`` package) and
the scMPT fusion classifier."""

from ._scgpt import ScGPTCheckpoint, ScGPTConfig, ScGPTEncoder, load_scgpt
from .scmpt import SCMPT_PAPER_GRID, ScMPTModel, ScMPTParams

__all__ = [
    "SCMPT_PAPER_GRID",
    "ScGPTCheckpoint",
    "ScGPTConfig",
    "ScGPTEncoder",
    "ScMPTModel",
    "ScMPTParams",
    "load_scgpt",
]
