#!/usr/bin/env bash
# A GPU session in resumable steps: build mamba-ssm, every GPU test, the generation benchmark (CUDA-graph
# against eager decoding), the seed-scale ablation, then its recall column. Each step runs once (a marker
# in runs/gpu-session/); a step cut by the deadline (the device's 10-minute limit per call) is resumed by
# the next call on the same warm machine, and `hymba ablate` itself resumes finished rows.
#   device: DEADLINE=560 bash benchmarks/gpu_session.sh      (MAMBA_SSM_SDIST=DIR builds mamba-ssm offline)
# Results come back under $OUT (at most 8 files): session.log, gpu_tests.log, generation.jsonl, ablate.log,
# table.md, results.json, efficiency.png.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
OUT=${OUT:-/tmp/out}
STATE=runs/gpu-session
ABL=runs/ablation-seed
mkdir -p "$STATE" "$OUT"
end=$((SECONDS + ${DEADLINE:-560}))
log="$STATE/session.log"

step() {  # step NAME LOGFILE CMD...: once per machine, bounded by the time left
    local name=$1 logfile=$2; shift 2
    [ -e "$STATE/$name.done" ] && return 0
    local t=$((end - SECONDS))
    if [ $t -lt 30 ]; then echo "$name: no time left" >> "$log"; return 1; fi
    local t0=$SECONDS
    timeout $t "$@" >> "$logfile" 2>&1
    local rc=$?
    echo "$(date -u +%T) $name rc=$rc ($((SECONDS - t0)) s)" >> "$log"
    [ $rc -eq 0 ] && touch "$STATE/$name.done"
    return $rc
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; date -u
  git rev-parse HEAD 2>/dev/null; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} >> "$log" 2>&1
step build "$STATE/build.log" bash benchmarks/build_mamba_ssm.sh ${MAMBA_SSM_SDIST:-}
step tests "$STATE/gpu_tests.log" python3 -m pytest -q -rs -p no:cacheprovider -p no:logging --tb=short -m gpu --continue-on-collection-errors tests
step generation "$STATE/generation.jsonl" python3 benchmarks/generation.py --prompt-len 8192 --batch 128 \
    --new-tokens 64 --configs configs/models/hymba-1.5b.toml,configs/models/llama-3.2-1b.toml
step ablate "$STATE/ablate.log" python3 -m hymba.cli ablate --preset seed --no-recall --out "$ABL"
# recall last (1000 MQAR steps, 2-6 min per row; three rows at a time fit an H200), the telling rows first
step recall "$STATE/ablate.log" python3 -m hymba.cli ablate --preset seed --recall --recall-workers 3 --out "$ABL" \
    --rows 13,1,6,7,9,2,3,4,5,8,10,11,12

tail -3 "$STATE/gpu_tests.log" >> "$log" 2>/dev/null
tail -20 "$STATE/build.log" >> "$log" 2>/dev/null
cp "$log" "$STATE/gpu_tests.log" "$STATE/generation.jsonl" "$STATE/ablate.log" "$OUT/" 2>/dev/null
cp "$ABL/table.md" "$ABL/results.json" "$ABL/efficiency.png" "$OUT/" 2>/dev/null
cat "$log"
tail -25 "$STATE/ablate.log" 2>/dev/null | cut -c1-300
