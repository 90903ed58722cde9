"""Cell-type annotation on any ``obsm`` representation.

Four annotators share one output layout (:mod:`._common`, see :func:`annotate_knn`):

* :func:`annotate_knn` / :func:`annotate_knn_ensemble` (:mod:`._knn`) -- the GenePT
  papers' 10-NN cosine vote on one representation, and the vote pooled over several
  (GenePT table C4);
* :func:`annotate_mlp` (:mod:`._neural`) -- an MLP probe on one frozen representation
  (the scMPT papers' baseline);
* :func:`annotate_scmpt` (:mod:`._neural`) -- the scMPT fusion network; the model itself
  (:class:`~genept.models.ScMPTModel`: network, grid search, seed ensemble, save/load)
  lives in :mod:`genept.models.scmpt`;
* :func:`annotate_llm` (:mod:`._llm`, chat plumbing in :mod:`._chat`) -- a generative
  LLM picks a label from a candidate list given the cell sentence (scMPT section 3.3 and
  appendix A.3, including the two-stage flow on the top-3 labels of another annotator).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._core._lazy import attach_stub

if TYPE_CHECKING:
    from ...models.scmpt import SCMPT_PAPER_GRID, ScMPTModel, ScMPTParams
    from ._chat import LLM_ANSWER_PROMPT, LLM_PROMPT, LLM_REASONING_PROMPT, UNPARSED
    from ._common import classification_metrics, proba_frame
    from ._knn import annotate_knn, annotate_knn_ensemble
    from ._llm import annotate_llm
    from ._neural import annotate_mlp, annotate_scmpt

# the names above, imported on first access
__getattr__, __dir__, __all__ = attach_stub(__name__, __file__)
