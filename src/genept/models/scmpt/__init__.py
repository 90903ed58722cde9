"""scMPT: a fusion network on frozen representations (scMPT section 3.2, appendix A.2).

* :class:`ScMPTModel` -- fit (grid search + seed ensemble), predict, save, load;
* :class:`ScMPTParams` -- the training options, validated once, shared with
  :func:`genept.tl.annotate_scmpt`;
* :data:`SCMPT_PAPER_GRID` -- a grid of the size the paper searched.

The network (:mod:`._net`) and the training loop (:mod:`._train`) import torch; they
are loaded on first use.
"""

from ._model import ScMPTModel
from ._params import SCMPT_PAPER_GRID, ScMPTParams

__all__ = ["SCMPT_PAPER_GRID", "ScMPTModel", "ScMPTParams"]
