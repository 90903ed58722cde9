#!/usr/bin/env bash
# Everything issue 3 (and the CUDA paths of issue 4) asks of a CUDA machine, in one run:
# the GPU tests, the GenePT-w GPU benchmark (end-to-end vs one pinned H2D copy, fp32 /
# tf32 / bf16), GenePT-s throughput and MFU of MiniLM, and scGPT CPU vs GPU. Run on the
# offline device with .gpu_carry from benchmarks/gpu_prepare.sh carried along; results
# (logs and markdown tables) go to $OUT (default benchmarks/out/gpu).
#
#   bash benchmarks/gpu_suite.sh [--quick]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
CELLS=100000
[[ "${1:-}" == "--quick" ]] && CELLS=20000
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export GENEPT_CACHE_DIR=${GENEPT_CACHE_DIR:-$(mktemp -d)}
if [[ -d .gpu_carry/wheels ]]; then
    $PY -m pip install -q --no-deps --no-index .gpu_carry/wheels/*.whl 2>&1 | tail -2
fi
PEAK=989  # dense bf16 TFLOP/s without sparsity: H100 SXM 989, H200 989
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"

echo "== GPU tests"
$PY -m pytest -q -p no:cacheprovider tests/test_weighted.py tests/test_annotate.py \
    tests/test_scgpt.py -k "gpu or cuda or torch_pipeline" -rs 2>&1 | tee "$OUT/tests.txt" | tail -15

echo "== GenePT-w: GPU end-to-end vs pinned H2D copy ($CELLS cells)"
$PY benchmarks/bench_genept_w.py --cells "$CELLS" --dims 1536 384 --device cuda --repeat 3 \
    2>&1 | tee "$OUT/genept_w.md" | tail -12

echo "== GenePT-s: MiniLM throughput and MFU"
MODEL=all-MiniLM-L6-v2
[[ -d .gpu_carry/minilm ]] && MODEL=.gpu_carry/minilm
for bs in 64 256 1024; do
    $PY benchmarks/bench_genept_s.py --model "$MODEL" --device cuda --batch-size "$bs" \
        --repeat 30 --peak-tflops "$PEAK" 2>&1 | tail -3
done | tee "$OUT/genept_s.md"

echo "== scGPT CPU vs GPU"
$PY benchmarks/bench_scgpt.py --device all 2>&1 | tee "$OUT/scgpt.md" | tail -8
echo "results in $OUT"
