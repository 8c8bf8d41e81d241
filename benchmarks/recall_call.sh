#!/usr/bin/env bash
# The seed recall column on the device, resumable across calls (carry runs/abl-seed and runs/abl-attn back in):
# the mamba-ssm build runs beside the attention-only rows (no scan) and GPU tests, then the hybrid rows.
#   device: DEADLINE=500 ATTN_ROWS=10 ROWS=13,7 WORKERS=2 TESTS="-x" bash benchmarks/recall_call.sh  (call 3 of session 3)
# Defaults: the rows with SSM heads, three at a time, no tests; ATTN_ROWS=6,10 measures the attention-only rows
# during the build into runs/abl-attn (merge their two records into the table afterwards).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
end=$((SECONDS + ${DEADLINE:-500}))
for d in runs/abl-attn runs/abl-seed; do
    mkdir -p $d; [ -e $d/results.json ] || cp benchmarks/results/2026-11-29-h200-seed-ablation/results.json $d/
done
if ! python3 -c "import mamba_ssm" 2>/dev/null; then
    (bash .device/build_mamba_ssm.sh .device/sdist > "$OUT/build.log" 2>&1) & build=$!
fi
ab() { local t=$((end - SECONDS)); [ $t -gt 30 ] && timeout -k 15 -s INT $t python3 -m hymba.cli ablate --preset seed --recall "$@"; }
[ -n "${ATTN_ROWS:-}" ] && { ab --recall-workers 1 --rows "$ATTN_ROWS" --out runs/abl-attn > "$OUT/attn.log" 2>&1 & attn=$!; }
[ -n "${TESTS:-}" ] && timeout $((end - SECONDS)) python3 -m pytest -q -rs -p no:cacheprovider --tb=short -m gpu $TESTS tests > "$OUT/gpu_tests.log" 2>&1
[ -n "${build:-}" ] && wait $build; echo "build done at $SECONDS s" >> "$OUT/session.log"
ab --recall-workers "${WORKERS:-3}" --rows "${ROWS:-13,7,9,8,2,3,4,5,11,12,1}" --out runs/abl-seed > "$OUT/seed.log" 2>&1
echo "hybrid rows done at $SECONDS s" >> "$OUT/session.log"
[ -n "${attn:-}" ] && wait $attn
cp runs/abl-attn/results.json "$OUT/attn-results.json"; cp runs/abl-seed/results.json "$OUT/seed-results.json"
tail -3 "$OUT/gpu_tests.log" 2>/dev/null; grep -h "recall\|FAIL" "$OUT"/attn.log "$OUT"/seed.log | cut -c1-200; cat "$OUT/session.log"
