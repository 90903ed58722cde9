#!/usr/bin/env bash
# Prepare, on a machine with PyPI access, what the offline CUDA machine lacks for
# benchmarks/gpu_suite.sh: pure-Python / manylinux wheels of genept's dependencies that
# the device image does not ship (its python3 is 3.12 with torch, numba, scipy, pandas,
# h5py, sentence-transformers ...), and an fp16 copy of the packaged all-MiniLM-L6-v2
# (88 MB in fp32; 45 MB in fp16 keeps the carry under 64 MiB; the encoder runs fp16 on
# CUDA anyway, so GPU numbers are unchanged; on CPU use the packaged model). Output: .gpu_carry/
# (gitignored), about 62 MB.
#
#   bash benchmarks/gpu_prepare.sh
#   # then, with the device tool: carry [".gpu_carry"], command "bash benchmarks/gpu_suite.sh"
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu_carry && mkdir -p .gpu_carry/wheels
pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --platform any -d .gpu_carry/wheels \
    anndata scanpy legacy-api-wrap natsort session-info2 umap-learn pynndescent \
    array-api-compat scverse-misc zarr donfig numcodecs dask partd locket pooch \
    platformdirs openai distro jiter leidenalg igraph texttable
python - <<'PY'
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from genept.encoders import get_encoder

enc = get_encoder("all-MiniLM-L6-v2", device="cpu")
model = enc.model.to(torch.float16)
model.save(".gpu_carry/minilm", safe_serialization=True)
print("fp16 MiniLM saved to .gpu_carry/minilm")
PY
du -sh .gpu_carry
