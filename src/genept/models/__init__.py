"""Model ports used by genept (scGPT's cell encoder, loaded without the ``scgpt`` package)."""

from ._scgpt import ScGPTCheckpoint, ScGPTConfig, ScGPTEncoder, load_scgpt

__all__ = ["ScGPTCheckpoint", "ScGPTConfig", "ScGPTEncoder", "load_scgpt"]
