#!/usr/bin/env bash
# One GPU session: build the official mamba-ssm kernels, run the GPU tests, then measure training and
# generation throughput side by side (our kernels vs the plain-PyTorch reference, and the seed notebook).
# Usage on the device machine:  bash benchmarks/gpu_suite.sh   (carries .device/: sdist, build script,
# seed_anchor.py and a text corpus). Everything goes to $OUT.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
date -u | tee -a "$OUT/gpu.txt"
timeout 300 bash .device/build_mamba_ssm.sh .device/sdist > "$OUT/build.log" 2>&1 || echo "mamba-ssm build FAILED (see build.log)"
timeout 240 python3 -m pytest -q -p no:cacheprovider -p no:logging --tb=short tests/kernels tests/model/test_gpu.py 2>&1 | tail -60 > "$OUT/gpu_tests.log"
tail -3 "$OUT/gpu_tests.log"
timeout 200 python3 benchmarks/train_throughput.py --preset seed --backends cuda/flex \
    --rows 1,2,3,4,5,6,7,8,9,10,11,12,13 > "$OUT/train_seed.jsonl" 2>"$OUT/train_seed.err"
timeout 200 python3 benchmarks/train_throughput.py --preset seed --backends ref/sdpa,cuda/sdpa,ref/flex \
    --rows 1,13 --steps 10 --warmup 2 >> "$OUT/train_seed.jsonl" 2>>"$OUT/train_seed.err"
[ "${SKIP_GEN:-0}" = 1 ] || timeout 400 python3 benchmarks/generation.py --configs configs/models/hymba-1.5b.toml,configs/models/llama-3.2-1b.toml \
    --preset seed --rows 1,2,3,4,5,6,7,8,9,10,11,12,13 > "$OUT/generation.jsonl" 2>"$OUT/generation.err"
SEED_DATA=.device/seed_data.txt SEED_PATCH_CFG=1 SEED_OUT="$OUT/seed_anchor.csv" \
    timeout 300 python3 .device/seed_anchor.py > "$OUT/seed_anchor.log" 2>&1
tail -5 "$OUT/seed_anchor.log"
