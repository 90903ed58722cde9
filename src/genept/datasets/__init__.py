"""Datasets and resources: precomputed GenePT embeddings, NCBI summaries, gene cards."""
