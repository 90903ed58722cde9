#!/usr/bin/env bash
# Prepare, on a machine with PyPI access, what the offline CUDA machine lacks for
# benchmarks/gpu_suite.sh (its python3 is 3.12 with torch, numba, scipy, pandas, h5py,
# sentence-transformers, cupy ...):
#   .gpu_carry/wheels/   wheels of genept's dependencies missing there, pinned to the
#                        versions pip resolved here (one version each);
#   .gpu_carry/minilm_cfg/  all-MiniLM-L6-v2's config and tokenizer files only (the suite
#                        writes random weights there: throughput does not depend on them);
#   .gpu_carry/make_random_minilm.py, .gpu_carry/scgpt-*.whl (scGPT's own sources, for the
#                        baseline of bench_scgpt.py; never installed, only unpacked).
# Other folders of .gpu_carry (e.g. cards/, minilm/ for scripts/encode_cards_gpu.py) are
# left alone. About 20 MB.
#
#   bash benchmarks/gpu_prepare.sh
#   # then, with the device tool: carry [".gpu_carry/wheels", ".gpu_carry/minilm_cfg",
#   #   ".gpu_carry/tools"], command "bash benchmarks/gpu_suite.sh"
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu_carry/wheels .gpu_carry/minilm_cfg .gpu_carry/tools
mkdir -p .gpu_carry/wheels .gpu_carry/tools
pkgs=(anndata scanpy zarr dask pooch leidenalg igraph numcodecs donfig google-crc32c
      session-info2 legacy-api-wrap natsort umap-learn pynndescent array-api-compat
      scverse-misc lazy-importer sniffio pytz locket partd platformdirs texttable tblib)
pins=()
for p in "${pkgs[@]}"; do
    v=$(python -c "import importlib.metadata as m; print(m.version('$p'))" 2>/dev/null) || continue
    pins+=("$p==$v")
done
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d .gpu_carry/wheels "${pins[@]}"
python -m pip download -q --no-deps -d .gpu_carry/tools scgpt==0.2.4
cp ../shared/tools/make_random_minilm.py .gpu_carry/tools/
python - <<'PY'
import shutil
from pathlib import Path

from genept.encoders import packaged_minilm_path

src, dst = packaged_minilm_path(), Path(".gpu_carry/minilm_cfg")
shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.onnx"))
print("MiniLM config + tokenizer ->", dst, sorted(p.name for p in dst.iterdir()))
PY
du -sh .gpu_carry/wheels .gpu_carry/minilm_cfg .gpu_carry/tools
