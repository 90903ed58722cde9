"""Benchmark: GenePT-s encoding throughput (cells/s), tokenizer path vs gathered ids.

Cell sentences of ``sc.datasets.pbmc68k_reduced()`` (its log-normalised ``raw``), ranked
and cut to the encoder's token budget as :func:`genept.tl.embed_cells` does, repeated to
``--cells`` cells and encoded without the cache, in the same run:

* ``tokenizer``   the Hugging Face tokenizer alone on the sentence texts;
* ``gather``      the gathered input ids alone (per-gene word pieces, numba);
* ``forward``     the model alone on already built id batches;
* ``text path``   end to end from texts (tokenizer + model, as ``encode`` does);
* ``gather path`` end to end from ranked gene lists (``encode_ragged``), no tokenizer.

The model FLOPs are 2 x non-embedding parameters x tokens plus attention's quadratic
term; on CUDA the model-FLOP utilisation is printed against ``--peak-tflops`` (dense
fp16/bf16; H100/H200 SXM: 989).

    python benchmarks/bench_genept_s.py                       # CPU, packaged MiniLM
    python benchmarks/bench_genept_s.py --device cuda --cells 50000 --batch-size 512 \
        --peak-tflops 989
"""

from __future__ import annotations

import argparse
import itertools
import os
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _ranked_cells(X, n_cells: int):
    """Ranked genes of each cell (descending value, ties by gene index), rows cycled."""
    X = X.tocsr()
    ptr, genes = [0], []
    for i in range(X.shape[0]):
        row = X[i]
        o = np.lexsort((row.indices, -row.data))
        genes.append(row.indices[o].astype(np.int32))
        ptr.append(ptr[-1] + o.size)
    ptr, genes = np.array(ptr, np.int64), np.concatenate(genes)
    reps = -(-n_cells // X.shape[0])
    lens = np.tile(np.diff(ptr), reps)[:n_cells]
    starts = np.tile(ptr[:-1], reps)[:n_cells]
    new_ptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    take = np.repeat(starts - new_ptr[:-1], lens) + np.arange(new_ptr[-1])
    return new_ptr, genes[take]


def main(argv=None) -> None:
    import scanpy as sc
    import torch

    import genept as gpt
    from genept.encoders import SentenceTransformerEncoder
    from genept.encoders._token_gather import encode_gathered
    from genept.pp import sentence_words, token_budget, truncate_to_budget

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, nargs="+", default=[64])
    ap.add_argument("--cells", type=int, default=700, help="cells encoded (pbmc68k cycled)")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--skip-text", action="store_true", help="skip the slow text path")
    args = ap.parse_args(argv)
    gpt.settings.progress = False

    adata = sc.datasets.pbmc68k_reduced()
    enc = SentenceTransformerEncoder(args.model, device=args.device)
    names = np.asarray(adata.raw.var_names, dtype=object)
    words = sentence_words(names)
    counts, budget = token_budget(enc, words)
    ptr, genes = _ranked_cells(adata.raw.X, args.cells)
    ptr, genes = truncate_to_budget(ptr, genes, counts, budget=budget)
    texts = [" ".join(words[genes[a:b]]) for a, b in itertools.pairwise(ptr)]
    model = enc.model
    table = enc.word_table(words)
    lens = table.lengths(ptr, genes)
    n = len(texts)
    n_params = sum(p.numel() for nm, p in model.named_parameters() if "embeddings" not in nm)
    cfg = model[0].auto_model.config
    L, d = cfg.num_hidden_layers, cfg.hidden_size
    flops = float((2 * n_params * lens + 4 * L * d * lens.astype(np.float64) ** 2).sum())
    dev = args.device
    print(
        f"model {enc.model_name}, device {dev}, dtype {next(model.parameters()).dtype}, "
        f"{torch.get_num_threads()} CPU threads, max {enc.max_tokens} tokens, "
        f"budget {budget} for genes"
    )
    print(f"{n} cells, mean {lens.mean():.0f} tokens ({np.diff(ptr).mean():.0f} genes)")
    rows = []
    order = np.argsort(-lens, kind="stable")
    for bs in args.batch_size:
        batches = [order[b : b + bs] for b in range(0, n, bs)]
        tok = model.tokenizer
        # warm-up (kernels, allocator, numba)
        encode_gathered(
            model, table, ptr[: min(n, bs) + 1], genes[: ptr[min(n, bs)]], batch_size=bs
        )
        _sync(dev)

        t = time.perf_counter()
        for b in batches:
            tok(
                [texts[i] for i in b],
                padding=True,
                truncation=True,
                max_length=table.max_len,
                return_tensors="pt",
            )
        t_tok = time.perf_counter() - t

        t = time.perf_counter()
        built = [table.input_ids(ptr, genes, b) for b in batches]
        t_gather = time.perf_counter() - t

        feats = []
        for ids, ln in built:
            it = torch.from_numpy(ids).to(dev)
            m = torch.arange(it.shape[1], device=dev)[None] < torch.from_numpy(ln).to(dev)[:, None]
            feats.append(
                {
                    "input_ids": it,
                    "attention_mask": m.long(),
                    "token_type_ids": torch.zeros_like(it),
                }
            )
        _sync(dev)
        t = time.perf_counter()
        with torch.inference_mode():
            for f in feats:
                model(f)["sentence_embedding"]
        _sync(dev)
        t_fwd = time.perf_counter() - t
        del feats

        t_text = float("nan")
        if not args.skip_text:
            t = time.perf_counter()
            for b in batches:
                enc._encode([texts[i] for i in b])
            _sync(dev)
            t_text = time.perf_counter() - t

        t = time.perf_counter()
        vec = encode_gathered(model, table, ptr, genes, batch_size=bs)
        _sync(dev)
        t_gpath = time.perf_counter() - t
        assert vec.shape == (n, enc.dim) and np.isfinite(vec).all()
        rows.append((bs, t_tok, t_gather, t_fwd, t_text, t_gpath))

    def rate(t):
        return f"{n / t:,.0f}" if t == t else "-"

    print(
        "\n| batch | tokenizer alone | gather alone | forward alone | text path | gather path "
        "| gather/text | TFLOP/s (gather path) | MFU |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for bs, t_tok, t_gather, t_fwd, t_text, t_gpath in rows:
        tf = flops / t_gpath / 1e12
        mfu = f"{tf / args.peak_tflops:.1%}" if args.peak_tflops else "n/a"
        speed = f"{t_text / t_gpath:.1f}x" if t_text == t_text else "-"
        print(
            f"| {bs} | {rate(t_tok)} | {rate(t_gather)} | {rate(t_fwd)} | {rate(t_text)} "
            f"| {rate(t_gpath)} | {speed} | {tf:.2f} | {mfu} |"
        )
    print("(cells/s; same run, same cells)")


if __name__ == "__main__":
    main()
