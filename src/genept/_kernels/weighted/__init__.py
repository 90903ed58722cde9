"""GenePT-w kernels: expression-weighted sums of gene embeddings."""
