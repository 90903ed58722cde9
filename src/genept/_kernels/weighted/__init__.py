"""GenePT-w kernels: expression-weighted sums of gene embeddings.

``_plan`` (``E`` prepared once, checks, helpers), ``_numba`` (CPU kernels), ``_cpu``
(CPU driver), ``_dask`` (dask adapter), ``_torch`` (CUDA pipeline), ``_api`` (the public
:func:`weighted_embedding`, validation once).
"""

from ._api import weighted_embedding

__all__ = ["weighted_embedding"]
