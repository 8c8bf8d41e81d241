#!/usr/bin/env bash
# Many MQAR learning curves side by side on one GPU (small models leave most of an H200 idle).
#   device: DEADLINE=560 PARALLEL=6 bash benchmarks/recall_sweep.sh JOBS   (MAMBA_SSM_SDIST=DIR: see build_mamba_ssm.sh)
# JOBS: one job per line, the arguments of benchmarks/recall_curve.py; lines starting with "@ssm" wait for
# the mamba-ssm build (hybrid rows), the others start at once. All curves go to $OUT/curves.jsonl.
# Memory: a seed-scale row at batch 128 takes 25-40 GB, so PARALLEL=3 for seed jobs (8 ran out of memory).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
end=$((SECONDS + ${DEADLINE:-560}))
jobs_file=$1; par=${PARALLEL:-6}
run_jobs() {  # run_jobs LINES...: each line one recall_curve.py call, $par at a time, bounded by the deadline
    printf '%s\n' "$@" | xargs -P "$par" -d '\n' -I{} bash -c \
        "timeout \$(( $end - SECONDS > 10 ? $end - SECONDS : 10 )) python3 benchmarks/recall_curve.py {} \
         >> '$OUT/curves.jsonl' 2>> '$OUT/sweep.log'"
}
mapfile -t plain < <(grep -v '^@ssm' "$jobs_file" | grep -v '^#' | grep .)
mapfile -t hybrid < <(grep '^@ssm' "$jobs_file" | sed 's/^@ssm *//')
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >> "$OUT/sweep.log"
if [ ${#hybrid[@]} -gt 0 ] && ! python3 -c "import mamba_ssm" 2>/dev/null; then
    (bash benchmarks/build_mamba_ssm.sh ${MAMBA_SSM_SDIST:-} > "$OUT/build.log" 2>&1; echo "build rc=$?" >> "$OUT/sweep.log") &
    build=$!
fi
run_jobs "${plain[@]}" &
plain_pid=$!
[ -n "${build:-}" ] && wait "$build"
[ ${#hybrid[@]} -gt 0 ] && run_jobs "${hybrid[@]}"
wait "$plain_pid"
echo "done at $SECONDS s" >> "$OUT/sweep.log"
