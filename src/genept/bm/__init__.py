"""Benchmarks and evaluations of the GenePT and scMPT papers, for your embeddings.

Gene level: :func:`gene_property_auc`, :func:`gene_function_accuracy`,
:func:`pair_auc`; cell level: :func:`knn_metrics`, :func:`cluster_metrics`,
:func:`batch_metrics`; text-model probes: :func:`ablation_embeddings`,
:func:`marker_similarity`, :func:`lexical_leakage`; explanations:
:func:`marker_recovery` (with :func:`marker_sets`, :func:`cellmarker_markers`); loaders of the papers' data: :func:`dosage_sensitive_tfs`,
:func:`gene2vec_ggi`, :func:`huri`, :func:`panglao_markers`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._core._lazy import attach_stub

if TYPE_CHECKING:
    from ._cell_tasks import batch_metrics, cluster_metrics, knn_metrics
    from ._common import as_embedding_frame, random_like, summarize
    from ._gene_tasks import (
        gene_function_accuracy,
        gene_property_auc,
        pair_auc,
        pair_features,
        sample_negative_pairs,
    )
    from ._leakage import lexical_leakage
    from ._loaders import dosage_sensitive_tfs, gene2vec_ggi, huri, panglao_markers
    from ._markers import (
        PBMC68K_MARKER_TYPES,
        cellmarker_markers,
        marker_recovery,
        marker_sets,
    )
    from ._probes import ABLATION_MODES, ablation_embeddings, marker_similarity

# the names above, imported on first access
__getattr__, __dir__, __all__ = attach_stub(__name__, __file__)
