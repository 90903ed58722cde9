"""Encode the gene-card text variants with all-MiniLM-L6-v2 on a GPU (issue 16).

Standalone: needs only python, torch, sentence-transformers (or transformers) and
numpy; it does NOT import genept, so it runs on the bare CUDA machine. Its inputs are
the text files of ``scripts/prepare_card_texts.py`` (``.gpu_carry/cards``) and the
fp16 copy of the packaged model written by ``benchmarks/gpu_prepare.sh``
(``.gpu_carry/minilm``)::

    python3 scripts/encode_cards_gpu.py --model .gpu_carry/minilm \\
        --cards .gpu_carry/cards --out "$OUT"

Encoding is what ``gpt.tl.embed_genes`` does today: the model's own pipeline
(Transformer -> mean Pooling -> Normalize, so the vectors are unit length although
``normalize_embeddings=False``), inputs cut at 256 tokens, fp16 on CUDA, longest
texts first in batches of ``--batch-size``.

Output (at most 8 files, each under 15 MB: what the device machine returns)::

    <variant>_int8_<k>.npy   int8 codes, rows k*R .. (k+1)*R-1 of the variant
    meta.npz                 <variant>_scale (float32, one per row), manifest (JSON
                             string), check_rows and <variant>_check (float32 rows
                             before quantisation, for checking the decoding)
    manifest.json            variants, n_genes, dim, model, sha256 of each input
                             file, rates, quantisation errors

A row is stored as ``codes = round(row / scale)`` with ``scale = max|row| / 127``;
:func:`load_embeddings` reassembles the float32 matrix (``codes * scale``), e.g.::

    import importlib.util
    spec = importlib.util.spec_from_file_location("enc", "scripts/encode_cards_gpu.py")
    enc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(enc)
    genes, m = enc.load_embeddings("results", "card", cards=".gpu_carry/cards")
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

#: text variants looked for in the cards folder, in this order
VARIANTS = ("card", "card_nosym")
#: largest output file (bytes); the device returns files of at most 16 MiB
MAX_FILE_BYTES = 15_000_000
#: MiniLM reads at most this many tokens (the packaged model's max_seq_length)
MAX_TOKENS = 256
#: rows kept in float32 (before quantisation) per variant, to check the decoding
N_CHECK = 256


# ---------------------------------------------------------------- reading and writing
def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_lines(path: Path) -> list[str]:
    """Lines of a gzip text file written by ``prepare_card_texts.py``."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return fh.read().rstrip("\n").split("\n")


def quantise(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes and float32 per-row scales: ``codes * scale`` approximates ``m``."""
    m = np.asarray(m, dtype=np.float32)
    scale = (np.abs(m).max(axis=1) / 127.0).astype(np.float32)
    safe = np.where(scale > 0, scale, 1.0).astype(np.float32)
    codes = np.clip(np.rint(m / safe[:, None]), -127, 127).astype(np.int8)
    return codes, scale


def dequantise(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return codes.astype(np.float32) * np.asarray(scale, dtype=np.float32)[:, None]


def _rows_per_file(dim: int) -> int:
    return max(1, (MAX_FILE_BYTES - 1024) // dim)  # 1 kB for the .npy header


def load_embeddings(
    out_dir: str | os.PathLike, variant: str, cards: str | os.PathLike | None = None
) -> tuple[list[str] | None, np.ndarray]:
    """Reassemble the float32 matrix of ``variant`` from the files this script wrote.

    Parameters
    ----------
    out_dir
        The folder holding ``manifest.json``, ``meta.npz`` and ``<variant>_int8_*.npy``.
    variant
        ``"card"`` or ``"card_nosym"`` (see the manifest's ``variants``).
    cards
        The folder of ``prepare_card_texts.py`` (for ``genes.txt.gz``); its sha256
        must match the manifest's. ``None``: genes are not returned.

    Returns
    -------
    ``(genes, matrix)``: the gene symbols (or ``None``) and the ``(n, dim)`` float32
    matrix, row ``i`` for ``genes[i]``.
    """
    out_dir = Path(out_dir)
    manifest = json.loads((out_dir / "manifest.json").read_text())
    if variant not in manifest["variants"]:
        raise KeyError(f"no variant {variant!r} in {out_dir}; have {list(manifest['variants'])}")
    info = manifest["variants"][variant]
    parts = [np.load(out_dir / name, allow_pickle=False) for name in info["files"]]
    codes = np.concatenate(parts) if len(parts) > 1 else parts[0]
    with np.load(out_dir / "meta.npz", allow_pickle=False) as meta:
        scale = meta[f"{variant}_scale"]
    n, dim = manifest["n_genes"], manifest["dim"]
    if codes.shape != (n, dim) or scale.shape != (n,):
        raise ValueError(
            f"{out_dir}: {variant} has codes {codes.shape} and scales {scale.shape}, "
            f"the manifest says ({n}, {dim}); rerun scripts/encode_cards_gpu.py"
        )
    if _sha256_codes(codes, scale) != info["sha256_codes"]:
        raise ValueError(f"{out_dir}: {variant} files do not match the manifest's sha256")
    genes = None
    if cards is not None:
        gpath = Path(cards) / "genes.txt.gz"
        if _sha256(gpath) != manifest["inputs"]["genes.txt.gz"]:
            raise ValueError(f"{gpath} is not the gene list the embeddings were made from")
        genes = read_lines(gpath)[:n]  # the first n: a --limit run encodes a prefix
    return genes, dequantise(codes, scale)


def write_codes(out: Path, variant: str, m: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
    """Quantise ``m`` and save its codes as ``<variant>_int8_<k>.npy`` files of at most
    :data:`MAX_FILE_BYTES`; returns the codes, the scales and the file names."""
    codes, scale = quantise(m)
    rows = _rows_per_file(m.shape[1])
    files = []
    for k, start in enumerate(range(0, len(codes), rows)):
        name = f"{variant}_int8_{k}.npy"
        np.save(Path(out) / name, codes[start : start + rows])
        if (Path(out) / name).stat().st_size > MAX_FILE_BYTES:
            raise SystemExit(f"{name} is over {MAX_FILE_BYTES} bytes")
        files.append(name)
    return codes, scale, files


def _sha256_codes(codes: np.ndarray, scale: np.ndarray) -> str:
    h = hashlib.sha256(np.ascontiguousarray(codes).tobytes())
    h.update(np.ascontiguousarray(scale, dtype=np.float32).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- the model
class _Encoder:
    """The model's pipeline: sentence-transformers, or transformers + mean + normalise."""

    def __init__(self, folder: str, device: str, backend: str):
        import torch

        self.torch = torch
        self.device = device
        self.dtype = torch.float16 if device.startswith("cuda") else torch.float32
        self.backend = backend
        err = None
        if backend in ("auto", "st"):
            try:
                self._load_st(folder)
                self.backend = "st"
                return
            except Exception as e:  # any load failure: fall back below
                if backend == "st":
                    raise
                err = e
                print(
                    f"sentence-transformers could not load {folder} ({e!r}); "
                    "using transformers + mean pooling + normalise",
                    flush=True,
                )
        self._load_hf(folder)
        self.backend = "transformers"
        self.fallback_reason = repr(err) if err else None

    def _load_st(self, folder):
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(folder, device=self.device, local_files_only=True)
        st.max_seq_length = MAX_TOKENS
        st.to(self.dtype)
        self.st = st
        self.modules = [type(m).__name__ for m in st]
        self.normalises = any(name == "Normalize" for name in self.modules)
        self.tokenizer = st.tokenizer
        self.fallback_reason = None

    def _load_hf(self, folder):
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True)
        self.hf = model.to(device=self.device, dtype=self.dtype).eval()
        modules = json.loads((Path(folder) / "modules.json").read_text())
        self.modules = [m["type"].rsplit(".", 1)[-1] for m in modules]
        pool = json.loads((Path(folder) / "1_Pooling" / "config.json").read_text())
        mean = pool.get("pooling_mode") == "mean" or pool.get("pooling_mode_mean_tokens")
        if not mean:
            raise RuntimeError(f"{folder}: pooling is not mean pooling ({pool})")
        self.normalises = "Normalize" in self.modules

    def encode(self, texts: list[str]):
        """``(len(texts), dim)`` float32 torch tensor on the device."""
        torch = self.torch
        with torch.inference_mode():
            if self.backend == "st":
                out = self.st.encode(
                    texts,
                    batch_size=len(texts),
                    convert_to_tensor=True,
                    show_progress_bar=False,
                    normalize_embeddings=False,
                )
                return out.float()
            tok = self.tokenizer(
                texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
            ).to(self.device)
            hidden = self.hf(**tok).last_hidden_state
            mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if self.normalises:
                emb = torch.nn.functional.normalize(emb, p=2, dim=1)
            return emb.float()


def encode_all(enc: _Encoder, texts: list[str], batch_size: int) -> tuple[np.ndarray, dict]:
    """Encode ``texts`` longest first; returns the float32 matrix and timings."""
    torch = enc.torch
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    sync = torch.cuda.synchronize if enc.device.startswith("cuda") else (lambda: None)
    enc.encode(texts[order[0] : order[0] + 1] * min(batch_size, 8))  # warm-up, not timed
    sync()
    t0 = time.perf_counter()
    chunks = []
    for b in range(0, len(order), batch_size):
        chunks.append(enc.encode([texts[i] for i in order[b : b + batch_size]]))
    out_sorted = torch.cat(chunks).cpu().numpy()
    sync()
    seconds = time.perf_counter() - t0
    m = np.empty_like(out_sorted)
    m[np.asarray(order)] = out_sorted
    return m, {"seconds": round(seconds, 3), "texts_per_s": round(len(texts) / seconds, 1)}


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="sentence-transformers model folder")
    ap.add_argument("--cards", required=True, help="folder of prepare_card_texts.py")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--limit", type=int, default=None, help="first N genes only (a test)")
    ap.add_argument("--backend", choices=("auto", "st", "transformers"), default="auto")
    ap.add_argument(
        "--variants", nargs="*", default=None, help=f"default: those of {VARIANTS} found in --cards"
    )
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    cards, out = Path(args.cards), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device; pass --device cpu")
    variants = args.variants or [v for v in VARIANTS if (cards / f"{v}.txt.gz").exists()]
    inputs = {"genes.txt.gz": _sha256(cards / "genes.txt.gz")}
    genes = read_lines(cards / "genes.txt.gz")
    texts = {}
    for v in variants:
        inputs[f"{v}.txt.gz"] = _sha256(cards / f"{v}.txt.gz")
        texts[v] = read_lines(cards / f"{v}.txt.gz")
        if len(texts[v]) != len(genes):
            raise SystemExit(f"{v}: {len(texts[v])} texts for {len(genes)} genes")
    if args.limit is not None:
        genes = genes[: args.limit]
        texts = {v: t[: args.limit] for v, t in texts.items()}
    n = len(genes)

    t0 = time.perf_counter()
    enc = _Encoder(args.model, args.device, args.backend)
    load_s = time.perf_counter() - t0
    dev_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(
        f"model {args.model} on {dev_name} via {enc.backend} ({enc.dtype}) in {load_s:.1f} s; "
        f"pipeline {enc.modules}, normalises: {enc.normalises}",
        flush=True,
    )

    import sentence_transformers
    import transformers

    manifest = {
        "variants": {},
        "n_genes": n,
        "dim": None,
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "model_folder": str(args.model),
        "model_pipeline": enc.modules,
        "pipeline_normalises": enc.normalises,
        "normalize_embeddings_arg": False,
        "max_tokens": MAX_TOKENS,
        "dtype": str(enc.dtype).replace("torch.", ""),
        "backend": enc.backend,
        "fallback_reason": enc.fallback_reason,
        "batch_size": args.batch_size,
        "device": dev_name,
        "limit": args.limit,
        "quantisation": "int8 codes = round(row / scale), scale = max|row| / 127 (float32)",
        "inputs": inputs,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
    }
    rng = np.random.default_rng(0)
    check_rows = np.sort(rng.choice(n, size=min(N_CHECK, n), replace=False))
    arrays = {"check_rows": check_rows.astype(np.int64)}
    for v in variants:
        tok_lens = np.array(
            [len(ids) for ids in enc.tokenizer(texts[v], truncation=False)["input_ids"]]
        )
        m, timing = encode_all(enc, texts[v], args.batch_size)
        if not np.isfinite(m).all():
            raise SystemExit(f"{v}: non-finite embeddings")
        norms = np.linalg.norm(m, axis=1)
        codes, scale, files = write_codes(out, v, m)
        dec = dequantise(codes, scale)
        cos = (dec * m).sum(1) / np.maximum(np.linalg.norm(dec, axis=1) * norms, 1e-30)
        rows = _rows_per_file(m.shape[1])
        arrays[f"{v}_scale"] = scale
        arrays[f"{v}_check"] = m[check_rows]
        manifest["dim"] = int(m.shape[1])
        manifest["variants"][v] = {
            "files": files,
            "rows_per_file": rows,
            "sha256_codes": _sha256_codes(codes, scale),
            **timing,
            "norm_min": float(norms.min()),
            "norm_max": float(norms.max()),
            "tokens_mean": round(float(tok_lens.mean()), 1),
            "tokens_max": int(tok_lens.max()),
            "truncated_over_max_tokens": int((tok_lens > MAX_TOKENS).sum()),
            "int8_cosine_min": float(cos.min()),
            "int8_cosine_mean": float(cos.mean()),
            "int8_abs_err_max": float(np.abs(dec - m).max()),
        }
        print(
            f"{v}: {n} texts in {timing['seconds']:.2f} s = {timing['texts_per_s']:.0f} texts/s; "
            f"norms {norms.min():.4f}..{norms.max():.4f}; tokens mean {tok_lens.mean():.0f}, "
            f"{(tok_lens > MAX_TOKENS).sum()} over {MAX_TOKENS}; int8 cosine min {cos.min():.6f}; "
            f"files {files}",
            flush=True,
        )
    arrays["manifest"] = np.array(json.dumps(manifest))
    np.savez_compressed(out / "meta.npz", **arrays)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
    print(f"wrote {len(sizes)} files, {sum(sizes.values()) / 1e6:.1f} MB: {sizes}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
