#!/usr/bin/env bash
# Everything the GPU issue asks of a CUDA machine, in one run: the CUDA tests, GenePT-w
# end-to-end against one pinned host-to-device copy (fp32 / tf32 / bf16, d = 384 and 1536,
# with a breakdown of the stages), GenePT-s throughput through the tokenizer and through
# gathered ids with MiniLM's MFU, and scGPT at the whole-human checkpoint's size against
# scGPT's own embedding code. Run on the offline device with what
# benchmarks/gpu_prepare.sh wrote carried along; logs and tables go to $OUT.
#
#   bash benchmarks/gpu_suite.sh [--quick]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
CELLS=100000
[[ "${1:-}" == "--quick" ]] && CELLS=20000
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 GENEPT_PROGRESS=0
export GENEPT_CACHE_DIR=${GENEPT_CACHE_DIR:-$(mktemp -d)}
SITE=/tmp/site
if [[ -d .gpu_carry/wheels ]]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .gpu_carry/wheels/*.whl 2>&1 | tail -2
fi
export PYTHONPATH="$PWD/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
PEAK=989  # dense bf16/fp16 TFLOP/s without sparsity: H100 SXM 989, H200 989
MODEL=/tmp/minilm_random
if [[ -d .gpu_carry/minilm_cfg ]]; then
    cp -r .gpu_carry/minilm_cfg "$MODEL" && $PY .gpu_carry/tools/make_random_minilm.py "$MODEL"
fi
SCGPT_SRC=""
if ls .gpu_carry/tools/scgpt-*.whl >/dev/null 2>&1; then
    mkdir -p /tmp/scgpt_whl && (cd /tmp/scgpt_whl && $PY -m zipfile -e "$OLDPWD"/.gpu_carry/tools/scgpt-*.whl .)
    SCGPT_SRC="--scgpt-src /tmp/scgpt_whl/scgpt"
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    $PY -c "import torch, pandas, numba; print('torch', torch.__version__, torch.cuda.get_device_name(), '| pandas', pandas.__version__, '| numba', numba.__version__)"
    nproc
} 2>&1 | tee "$OUT/gpu.txt"

echo "== CUDA tests"
$PY -m pytest -q -p no:cacheprovider -x --timeout=300 tests/test_weighted_stream.py \
    tests/test_token_gather.py -k "cuda or gather" -rs 2>&1 | tail -6
$PY -m pytest -q -p no:cacheprovider tests/test_weighted.py tests/test_annotate.py \
    tests/test_scgpt.py tests/test_embed_cells.py -k "gpu or cuda" -rs 2>&1 | tail -8

echo "== GenePT-w: GPU end-to-end vs one pinned H2D copy ($CELLS cells)"
$PY benchmarks/bench_genept_w_gpu.py --cells "$CELLS" --dims 384 1536 --repeat 5 --breakdown \
    2>&1 | tee "$OUT/genept_w.md" | grep -v "^\s*$" | tail -30

echo "== GenePT-s: MiniLM (random weights) through the tokenizer and through gathered ids"
$PY benchmarks/bench_genept_s.py --model "$MODEL" --device cuda --cells 20000 \
    --batch-size 256 512 1024 --peak-tflops "$PEAK" 2>&1 | grep -v -i "loading\|warn" \
    | tee "$OUT/genept_s.md" | tail -9

echo "== scGPT at the whole-human checkpoint's size (12 layers, d_model 512, 60,697 genes)"
# shellcheck disable=SC2086
$PY benchmarks/bench_scgpt.py --whole-human --cells 2000 --batch-size 64 --device cuda $SCGPT_SRC \
    2>&1 | tee "$OUT/scgpt.md" | tail -6
echo "results in $OUT"
