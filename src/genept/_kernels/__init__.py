"""Array-level numerical kernels (GenePT-w weighted sums, GenePT-s cell sentences)."""
