#!/usr/bin/env bash
# Second GPU pass (after the dtype fix for the mamba_ssm kernel): GPU tests, training throughput of the
# seed-scale rows with the fast kernels, generation throughput with the paper protocol.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt"; date -u >> "$OUT/gpu.txt"
timeout 200 bash .device/build_mamba_ssm.sh .device/sdist > "$OUT/build.log" 2>&1 || echo "mamba-ssm build FAILED"
timeout 120 python3 -m pytest -q -p no:cacheprovider -p no:logging --tb=short tests/kernels tests/model/test_gpu.py > "$OUT/gpu_tests.log" 2>&1
tail -40 "$OUT/gpu_tests.log" | grep -E "passed|failed|Error|assert" | head -20
timeout 130 python3 benchmarks/train_throughput.py --preset seed --backends cuda/flex --steps 15 --warmup 3 \
    --rows ${TRAIN_ROWS:-1,2,5,6,9,13} > "$OUT/train_seed.jsonl" 2>"$OUT/train_seed.err"
timeout ${GEN_TIMEOUT:-200} python3 benchmarks/generation.py --configs configs/models/hymba-1.5b.toml,configs/models/llama-3.2-1b.toml \
    --preset seed --rows ${GEN_ROWS:-1,6,13} --new-tokens 32 > "$OUT/generation.jsonl" 2>"$OUT/generation.err"
cut -c1-330 "$OUT/train_seed.jsonl" "$OUT/generation.jsonl"; tail -2 "$OUT/generation.err"
