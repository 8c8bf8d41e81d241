#!/usr/bin/env bash
# The next GPU session in one call: build mamba-ssm, run every GPU test, then the seed-scale ablation with
# recall (what `make demo` does on a GPU) and the generation benchmark. Needs .device/ carried (the mamba-ssm
# sdist + build script: see benchmarks/results/2026-11-29-h200.md) and no `datasets` (the built-in corpus ships with the package).
#   device: bash benchmarks/gpu_session.sh      (results under $OUT)
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt"; date -u >> "$OUT/gpu.txt"
git rev-parse HEAD >> "$OUT/gpu.txt" 2>/dev/null
timeout 200 bash .device/build_mamba_ssm.sh .device/sdist > "$OUT/build.log" 2>&1 || echo "mamba-ssm build FAILED"
timeout 150 python3 -m pytest -q -p no:cacheprovider -p no:logging --tb=short -m gpu tests > "$OUT/gpu_tests.log" 2>&1
tail -3 "$OUT/gpu_tests.log"
# at most 8 files come back from $OUT: run elsewhere, copy the table, the raw results and one plot
timeout ${ABLATE_TIMEOUT:-420} python3 -m hymba.cli ablate --preset seed --recall --out /tmp/ablation-seed \
    ${ABLATE_ARGS:-} > "$OUT/ablate.log" 2>&1
cp /tmp/ablation-seed/table.md /tmp/ablation-seed/results.json /tmp/ablation-seed/efficiency.png "$OUT/" 2>/dev/null
tail -20 "$OUT/ablate.log" | cut -c1-300
