"""Tools: gene and cell embeddings, annotation, gene programs."""
