"""Choose genept's default gene embedding by measurement (issue 16).

Candidates, each for all 77,510 human genes of the shipped gene cards:

* ``minilm_card``     all-MiniLM-L6-v2 on today's card (symbol, full name, aliases, type, GO);
* ``minilm_nosym``    all-MiniLM-L6-v2 on the card without symbol and aliases;
* ``tfidf_<text>_<d>`` TF-IDF (sublinear tf, English stop words, unigrams + bigrams, terms in
  >= 2 cards) + truncated SVD (LSA), fitted on all 77,510 cards; text ``card`` or ``nosym``;
  the ``d``-dim view is the first ``d`` components of one SVD with ``max(--dims)``
  components (L2-normalised after truncation); text and ``d`` chosen on the validation split;
* ``concat_<w>``      ``[sqrt(w) * minilm_nosym, sqrt(1 - w) * tfidf]`` (each block L2-normalised,
  so cosine = w * cos_neural + (1 - w) * cos_tfidf); ``w`` chosen on the validation split;
* ``random``          Gaussian unit vectors, 384-d (the papers' negative control).

The neural vectors come from the GPU run of ``scripts/encode_cards_gpu.py`` (int8 + per-row
scale; cosine to fp32 >= 0.99993); the TF-IDF views are fitted here on the CPU.

Tasks (``/work/shared/data``, see ``../shared/DESIGN.md``):

* dosage-sensitive vs -insensitive TFs: 5-fold CV ROC-AUC, LR and RF (``gpt.bm.gene_property_auc``);
* Gene2vec GGI, **gene-disjoint**: all Gene2vec pairs (train+valid+test) re-split by a seeded
  60/20/20 partition of the genes; a pair is kept only when both genes fall in the same part,
  so no gene of a validation or test pair occurs in a training pair. Summed embeddings + LR.
  The *validation* part chooses TF-IDF text and dimension and the concatenation weight; the
  *test* part is reported;
* HuRI, gene-disjoint the same way (80/20 genes), degree-matched sampled negatives;
* PanglaoDB (human) markers: for each cell type with >= 5 embedded markers, ROC-AUC of the
  cosine to its top marker, same-type markers vs other types' markers (rank-based, so it is
  comparable across embeddings with different cosine ranges); also the scMPT gap
  (``gpt.bm.marker_similarity``);
* lexical leakage (``gpt.bm.lexical_leakage``): share of (gene, 10-NN) pairs with the same
  3-letter symbol prefix and no shared GO term, on genes with >= 20 GO terms;
  ``shared_go`` is the share of 10-NN pairs sharing a GO term (circular for card-based views:
  the cards list GO terms; shown for information);
* time to embed 30k genes: from text on this CPU (rate of a measured batch, extrapolated) and
  from a precomputed int8 table (memory-mapped lookup of 30k rows).

    python benchmarks/default_gene_embeddings.py [--gpu _work/cards_gpu] [--data ../shared/data]

Prints markdown tables; CSVs go to ``--out``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _report import md  # noqa: E402


def _enc_module():
    """``scripts/encode_cards_gpu.py``, loaded once through the build script."""
    return _build_module()._enc_module()


def _build_module():
    spec = importlib.util.spec_from_file_location(
        "build_default", ROOT / "scripts" / "build_default_embeddings.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def unit(M: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(M, axis=1, keepdims=True)
    return (M / np.where(n > 0, n, 1.0)).astype(np.float32)


def gene_disjoint(pairs: pd.DataFrame, fractions, seed: int) -> list[pd.DataFrame]:
    """Split ``pairs`` by a seeded partition of their genes; cross-part pairs are dropped."""
    genes = pd.Index(sorted(set(pairs.gene1) | set(pairs.gene2)))
    rng = np.random.default_rng(seed)
    part = rng.choice(len(fractions), size=len(genes), p=np.asarray(fractions) / sum(fractions))
    p1 = part[genes.get_indexer(pairs.gene1)]
    p2 = part[genes.get_indexer(pairs.gene2)]
    return [pairs[(p1 == k) & (p2 == k)].reset_index(drop=True) for k in range(len(fractions))]


def ggi_auc(frame: pd.DataFrame, tr: pd.DataFrame, te: pd.DataFrame, seed: int) -> float:
    from genept.bm import pair_auc

    r = pair_auc(frame, tr, te, include_random=False, random_state=seed)
    return float(r["auc"].iloc[0])


def marker_auc(frame: pd.DataFrame, mk: pd.DataFrame, min_markers: int = 5) -> float:
    from sklearn.metrics import roc_auc_score

    from genept.bm._probes import _marker_lists

    lists = _marker_lists(mk, "cell_type", "gene", "sensitivity_human")
    lists = {c: [g for g in v if g in frame.index] for c, v in lists.items()}
    lists = {c: v for c, v in lists.items() if len(v) >= min_markers}
    U = unit(frame.to_numpy(np.float32))
    pos = {g: i for i, g in enumerate(frame.index)}
    aucs = []
    for c, genes in lists.items():
        own = set(genes)
        others = sorted({g for d, v in lists.items() if d != c for g in v} - own)
        idx = [pos[g] for g in genes[1:]] + [pos[g] for g in others]
        y = np.r_[np.ones(len(genes) - 1), np.zeros(len(others))]
        s = U[idx] @ U[pos[genes[0]]]
        aucs.append(roc_auc_score(y, s))
    return float(np.mean(aucs)), len(lists)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--gpu", type=Path, default=ROOT / "_work" / "cards_gpu")
    ap.add_argument("--cards", type=Path, default=ROOT / ".gpu_carry" / "cards")
    ap.add_argument("--out", type=Path, default=HERE / "out" / "default_embeddings")
    ap.add_argument("--cache", type=Path, default=ROOT / "_work" / "tfidf")
    ap.add_argument("--dims", type=int, nargs="+", default=[128, 256, 384])
    ap.add_argument("--weights", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    ap.add_argument("--max-train-pairs", type=int, default=40_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not (args.data / "gene_tasks").is_dir():
        print(f"benchmark data not found under {args.data}; nothing to do (pass --data)")
        return 0
    if not (args.gpu / "manifest.json").exists():
        print(f"no GPU encodings under {args.gpu}; run scripts/encode_cards_gpu.py on a GPU first")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    args.cache.mkdir(parents=True, exist_ok=True)

    import genept as gpt
    from genept.bm import dosage_sensitive_tfs, gene2vec_ggi, huri, lexical_leakage, pair_auc
    from genept.bm._common import random_like, summarize

    gpt.settings.progress = False
    enc = _enc_module()
    build = _build_module()
    t0 = time.perf_counter()
    genes, card = enc.load_embeddings(args.gpu, "card", cards=args.cards)
    _, nosym = enc.load_embeddings(args.gpu, "card_nosym", cards=args.cards)
    genes = pd.Index(genes)
    texts = {
        "card": enc.read_lines(args.cards / "card.txt.gz"),
        "nosym": enc.read_lines(args.cards / "card_nosym.txt.gz"),
    }
    print(f"# Default gene embedding: candidates on {len(genes)} human genes\n")
    print(f"loaded GPU encodings in {time.perf_counter() - t0:.1f} s\n")

    # ---------------------------------------------------------------- TF-IDF views
    # one SVD with max(dims) components per text; a d-dim view is its first d components
    tfidf, dmax = {}, max(args.dims)
    for tname, tx in texts.items():
        f = args.cache / f"lsa_raw_{tname}_{dmax}.npy"
        if f.exists():
            raw = np.load(f)
        else:
            t = time.perf_counter()
            raw, _model = build.fit_lsa(tx, dmax, seed=args.seed, normalise=False)
            np.save(f, raw)
            print(
                f"TF-IDF+SVD {tname} d={dmax}: fitted on {len(tx)} texts in "
                f"{time.perf_counter() - t:.0f} s",
                flush=True,
            )
        for d in args.dims:
            tfidf[(tname, d)] = unit(raw[:, :d])

    def frame(M):
        return pd.DataFrame(M, index=genes)

    # ---------------------------------------------------------------- splits
    ggi_dir = args.data / "gene_tasks" / "gene2vec_ggi"
    ggi = pd.concat(
        [gene2vec_ggi(s, ggi_dir) for s in ("train", "valid", "test")], ignore_index=True
    )
    ggi = ggi[ggi.gene1.isin(genes) & ggi.gene2.isin(genes)]
    g_tr, g_va, g_te = gene_disjoint(ggi, (0.6, 0.2, 0.2), args.seed)
    if len(g_tr) > args.max_train_pairs:
        g_tr = g_tr.sample(args.max_train_pairs, random_state=args.seed).reset_index(drop=True)
    print(
        f"Gene2vec GGI gene-disjoint: train {len(g_tr)}, valid {len(g_va)}, test {len(g_te)} pairs "
        f"(positives {g_tr.label.mean():.2f} / {g_va.label.mean():.2f} / {g_te.label.mean():.2f})\n"
    )

    # ---------------------------------------------------------------- validation: choose d, text, w
    t = time.perf_counter()
    val = []
    for (tname, d), M in tfidf.items():
        val.append(
            {
                "candidate": f"tfidf_{tname}_{d}",
                "valid_auc": ggi_auc(frame(M), g_tr, g_va, args.seed),
            }
        )
    val_df = pd.DataFrame(val)
    best_tf = val_df.sort_values("valid_auc", ascending=False).iloc[0]["candidate"]
    _, btext, bdim = best_tf.split("_")
    T = tfidf[(btext, int(bdim))]
    concat = {}
    for w in args.weights:
        concat[w] = np.hstack([np.sqrt(w) * unit(nosym), np.sqrt(1 - w) * unit(T)]).astype(
            np.float32
        )
        val.append(
            {
                "candidate": f"concat_{w}",
                "valid_auc": ggi_auc(frame(concat[w]), g_tr, g_va, args.seed),
            }
        )
    for name, M in (("minilm_card", card), ("minilm_nosym", nosym)):
        val.append({"candidate": name, "valid_auc": ggi_auc(frame(M), g_tr, g_va, args.seed)})
    val_df = pd.DataFrame(val)
    best_w = max(
        args.weights, key=lambda w: val_df.set_index("candidate").loc[f"concat_{w}", "valid_auc"]
    )
    print(f"## Validation (GGI gene-disjoint, valid split; {time.perf_counter() - t:.0f} s)\n")
    print(md(val_df) + "\n")
    print(f"chosen: TF-IDF view {best_tf}, concatenation weight w={best_w}\n")
    val_df.to_csv(args.out / "validation.csv", index=False)

    cands = {
        "minilm_card": card,
        "minilm_nosym": nosym,
        best_tf: T,
        f"concat_{best_w}": concat[best_w],
    }
    cands["random"] = random_like(frame(card), random_state=args.seed).to_numpy()

    # ---------------------------------------------------------------- tasks
    rows = {c: {"candidate": c, "dim": int(M.shape[1])} for c, M in cands.items()}
    labels = dosage_sensitive_tfs(args.data / "gene_tasks" / "dosage_sens_tf_labels.csv")
    ppi = huri(args.data / "ppi" / "HuRI.tsv")
    ppi = ppi[ppi.gene1.isin(genes) & ppi.gene2.isin(genes)]
    h_tr, h_te = gene_disjoint(ppi, (0.8, 0.2), args.seed)
    mk = gpt.bm.panglao_markers(args.data / "markers" / "PanglaoDB_markers_27_Mar_2020.tsv")
    for c, M in cands.items():
        t = time.perf_counter()
        F = frame(M)
        s = summarize(gene_property_auc_(F, labels, args.seed))
        for _, r in s.iterrows():
            rows[c][f"dosage_{r['model']}"] = r["mean"]
            rows[c][f"dosage_{r['model']}_sd"] = r["sd"]
        rows[c]["ggi_test"] = ggi_auc(F, g_tr, g_te, args.seed)
        hu = pair_auc(
            F, h_tr, h_te, negatives="degree_matched", include_random=False, random_state=args.seed
        )
        rows[c]["huri_dm"] = float(hu["auc"].iloc[0])
        rows[c]["marker_auc"], n_ct = marker_auc(F, mk)
        ms = gpt.bm.marker_similarity(F, mk)
        rows[c]["marker_gap"] = ms.attrs["summary"]["gap"]
        lk = lexical_leakage(F, include_random=False, name=c).iloc[0]
        rows[c]["leakage"] = lk["leakage"]
        rows[c]["same_prefix"] = lk["same_prefix"]
        rows[c]["shared_go"] = lk["shared_go"]
        print(f"{c}: tasks in {time.perf_counter() - t:.0f} s", flush=True)
    res = pd.DataFrame(list(rows.values()))
    print(
        f"\nHuRI gene-disjoint: {len(h_tr)} train / {len(h_te)} test positive pairs; markers: {n_ct} "
        f"PanglaoDB cell types with >= 5 markers; leakage on {int(lk['n_genes'])} genes with >= 20 GO terms\n"
    )

    # ---------------------------------------------------------------- cost of 30k genes
    res["embed_30k_text_cpu_s"] = np.nan
    res["embed_30k_table_s"] = np.nan
    cost = embed_costs(build, texts, tfidf_dim=int(bdim), tfidf_text=btext, seed=args.seed)
    for c in res.candidate:
        kind = (
            "minilm_card"
            if c == "minilm_card"
            else "minilm_nosym"
            if c == "minilm_nosym"
            else "tfidf"
            if c.startswith("tfidf")
            else "concat"
            if c.startswith("concat")
            else "random"
        )
        res.loc[res.candidate == c, "embed_30k_text_cpu_s"] = cost["text"].get(kind, np.nan)
        res.loc[res.candidate == c, "embed_30k_table_s"] = cost["table"].get(
            int(cands[c].shape[1]), np.nan
        )
    print("## Candidates (test numbers; higher is better except leakage and times)\n")
    print(md(res, "{:.4f}") + "\n")
    print(f"cost notes: {cost['notes']}\n")
    res.to_csv(args.out / "candidates.csv", index=False)
    return 0


def gene_property_auc_(F, labels, seed):
    from genept.bm import gene_property_auc

    return gene_property_auc(F, labels, n_splits=5, random_state=seed, include_random=False)


def embed_costs(build, texts, *, tfidf_dim, tfidf_text, seed, n_target=30_000, n_probe=256):
    """Seconds to embed 30k genes: from text on this CPU, and from an int8 table."""
    import tempfile

    from genept.encoders import get_encoder

    out = {"text": {}, "table": {}, "notes": ""}
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(texts["card"]), size=n_probe, replace=False)
    encm = get_encoder(None)
    notes = []
    for kind, key in (("minilm_card", "card"), ("minilm_nosym", "nosym")):
        sample = [texts[key][i] for i in pick]
        encm.encode(sample[:8], cache=False, show_progress=False)  # warm-up
        t = time.perf_counter()
        encm.encode(sample, cache=False, show_progress=False)
        dt = time.perf_counter() - t
        out["text"][kind] = dt / n_probe * n_target
        notes.append(f"{kind}: {n_probe / dt:.0f} texts/s")
    # TF-IDF: fit on all cards once (the shipped table), then project 30k texts
    from genept.datasets._lsa import LsaProjector

    tx = texts[tfidf_text]
    t = time.perf_counter()
    raw, _ = build.fit_lsa(tx, tfidf_dim, seed=seed, normalise=False)
    fit = time.perf_counter() - t
    t = time.perf_counter()
    proj = LsaProjector(tx, raw)
    rebuild = time.perf_counter() - t
    sub = [tx[i] for i in rng.choice(len(tx), size=n_target, replace=False)]
    t = time.perf_counter()
    build.transform_lsa(proj, sub)
    tr = time.perf_counter() - t
    out["text"]["tfidf"] = tr
    out["text"]["concat"] = tr + out["text"]["minilm_nosym"]
    notes.append(
        f"TF-IDF+SVD fit on {len(tx)} cards {fit:.0f} s (once, when the table is built); "
        f"projector from the table {rebuild:.0f} s (once per session, only for genes "
        f"missing from the table); project 30k texts {tr:.1f} s"
    )
    # table lookup: int8 codes memory-mapped, 30k rows dequantised
    for dim in sorted({384, tfidf_dim, 384 + tfidf_dim}):
        with tempfile.TemporaryDirectory() as d:
            codes = rng.integers(-127, 128, size=(77_510, dim), dtype=np.int8)
            np.save(Path(d) / "c.npy", codes)
            scale = rng.random(77_510).astype(np.float32)
            rows = np.sort(rng.choice(77_510, size=n_target, replace=False))
            t = time.perf_counter()
            mm = np.load(Path(d) / "c.npy", mmap_mode="r")
            _ = mm[rows].astype(np.float32) * scale[rows, None]
            out["table"][dim] = time.perf_counter() - t
    out["notes"] = "; ".join(notes)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
