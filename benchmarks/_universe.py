"""Gene universe of benchmarks/gene_tasks.py and its (cached) text embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def gene_universe(data: Path, cards: pd.DataFrame, extra=(), cap: int = 6000, seed: int = 0):
    """Genes to embed: dosage TFs, ``extra`` (e.g. pbmc68k), GGI test genes, then a
    seeded draw from the GGI-train and HuRI genes, all restricted to genes with a card."""
    have = set(cards.index)
    order: list[str] = []
    seen: set[str] = set()

    def add(genes):
        for g in genes:
            if g in have and g not in seen:
                seen.add(g)
                order.append(g)

    dos = pd.read_csv(data / "gene_tasks" / "dosage_sens_tf_labels.csv")
    add(dos["gene_name"].astype(str))
    add(extra)
    ggi = data / "gene_tasks" / "gene2vec_ggi"
    te = pd.read_csv(
        ggi / "test_text.txt", sep=r"\s+", header=None, dtype=str, keep_default_na=False
    )
    add(sorted(set(te[0]) | set(te[1])))
    tr = pd.read_csv(
        ggi / "train_text.txt", sep=r"\s+", header=None, dtype=str, keep_default_na=False
    )
    hu = pd.read_csv(
        data / "ppi" / "HuRI_genenames.tsv", sep="\t", header=None, dtype=str, keep_default_na=False
    )
    rest = sorted((set(tr[0]) | set(tr[1]) | set(hu[0]) | set(hu[1])) - seen)
    rng = np.random.default_rng(seed)
    add(rng.permutation(np.array(rest, dtype=object)).tolist())
    return order[: max(cap, len(dos) + len(extra))]
