#!/usr/bin/env python
"""Validate the offline gene cards on GenePT's dosage-sensitive TF task.

Embeds the genes of ``gene_tasks/dosage_sens_tf_labels.csv`` (Geneformer: 122
dosage-sensitive vs 368 dosage-insensitive transcription factors) with the packaged
all-MiniLM-L6-v2 at several text levels and reports 5-fold stratified
cross-validated ROC-AUC of logistic regression and a random forest, next to the
paper's GenePT (text-embedding-ada-002 on NCBI summaries): 0.89 (LR), 0.92 (RF).

Embeddings are cached in the genept text-embedding cache (``~/.cache/genept``), so a
rerun only computes the classifiers (about 15 s per new text level on 2 cores).

Usage::

    python benchmarks/validate_gene_cards.py            # data in ../shared/data
    python benchmarks/validate_gene_cards.py --data /path/to/shared/data

Exits 0 with a message when the data folder is absent.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
PAPER = {"LR": 0.89, "RF": 0.92}


def load_labels(data: Path) -> pd.DataFrame:
    """The dosage TF table with a 0/1 ``label`` (1 = dosage-sensitive)."""
    lab = pd.read_csv(data / "gene_tasks" / "dosage_sens_tf_labels.csv")
    sens = lab["dosage_sensitive"].eq("Yes")
    insens = lab["dosage_insensitive"].eq("Yes")
    lab = lab[sens ^ insens].copy()
    lab["label"] = sens[sens ^ insens].astype(int)
    return lab.reset_index(drop=True)


def card_symbols(lab: pd.DataFrame, cards: pd.DataFrame) -> pd.Series:
    """Symbol of each labelled gene in the card table: by symbol, else by Ensembl id."""
    ens = cards["ensembl"].dropna().str.split("|").explode()
    ens2sym = pd.Series(ens.index, index=ens.to_numpy())
    ens2sym = ens2sym[~ens2sym.index.duplicated()]
    by_ens = ens2sym.reindex(lab["ensembl_id"]).to_numpy()
    known = lab["gene_name"].isin(cards.index).to_numpy()
    return pd.Series(np.where(known, lab["gene_name"], by_ens), index=lab.index)


def texts_for(level: str, lab, cards, symbols, max_terms: int) -> list[str]:
    from genept.datasets._gene_cards import card_text

    found = symbols.notna().to_numpy()
    texts = lab["gene_name"].to_numpy(dtype=object).copy()  # fallback: the symbol
    if level == "summary":  # gpt.tl.embed_genes(source="cards", text_level="summary")
        from genept._gene_sources import resolve_source

        src = resolve_source("cards", model=None, text_level="summary")
        out = src.texts_of(pd.Index(symbols[found]))
    else:
        out = card_text(cards, symbols[found], text_level=level, max_terms=max_terms)
    texts[found] = out.to_numpy()
    return [t if isinstance(t, str) else g for t, g in zip(texts, lab["gene_name"], strict=True)]


def cv_auc(X: np.ndarray, y: np.ndarray, *, folds: int, seed: int) -> dict[str, float]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    models = {
        "LR": LogisticRegression(max_iter=10_000),
        "RF": RandomForestClassifier(random_state=0),
    }
    return {
        k: float(cross_val_score(m, X, y, cv=cv, scoring="roc_auc").mean())
        for k, m in models.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--max-terms", type=int, default=15, help="GO terms per ontology")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="seed of the CV split")
    parser.add_argument(
        "--levels", nargs="+", default=["card", "summary", "name_full", "name", "random"],
        help="text levels (card, summary, name_full, name) and/or 'random' (Gaussian vectors)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    labels_csv = args.data / "gene_tasks" / "dosage_sens_tf_labels.csv"
    if not labels_csv.exists():
        print(f"skipping: {labels_csv} not found (pass --data)")
        return 0

    from genept.datasets._gene_cards import gene_cards
    from genept.encoders import SentenceTransformerEncoder

    lab = load_labels(args.data)
    y = lab["label"].to_numpy()
    cards = gene_cards("human")
    symbols = card_symbols(lab, cards)
    print(
        f"{len(lab)} genes ({y.sum()} dosage-sensitive); "
        f"{symbols.notna().sum()} found in the gene cards",
        file=sys.stderr,
    )

    enc = SentenceTransformerEncoder("all-MiniLM-L6-v2")
    rows = []
    for level in args.levels:
        start = time.perf_counter()
        if level == "random":
            dim = enc.dim or 384
            X = np.random.default_rng(args.seed).standard_normal((len(lab), dim))
            n_tok = 0
        else:
            texts = texts_for(level, lab, cards, symbols, args.max_terms)
            X = enc.encode(texts, cache=True, show_progress=False)
            n_tok = int(np.median(enc.count_tokens(texts)))
        auc = cv_auc(X, y, folds=args.folds, seed=args.seed)
        rows.append((level, auc["LR"], auc["RF"], n_tok))
        print(f"{level}: {auc} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)

    print(f"\nDosage-sensitive vs insensitive TFs, {args.folds}-fold stratified CV ROC-AUC\n")
    print("| embedding | text | median tokens | LR AUC | RF AUC |")
    print("|---|---|---:|---:|---:|")
    for level, lr, rf, n_tok in rows:
        emb = "random Gaussian" if level == "random" else "all-MiniLM-L6-v2"
        text = "-" if level == "random" else f"gene card: `{level}`"
        tok = "-" if level == "random" else str(n_tok)
        print(f"| {emb} | {text} | {tok} | {lr:.3f} | {rf:.3f} |")
    print(
        f"| text-embedding-ada-002 (paper) | NCBI gene summary | - "
        f"| {PAPER['LR']:.2f} | {PAPER['RF']:.2f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
