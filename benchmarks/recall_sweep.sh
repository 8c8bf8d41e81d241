#!/usr/bin/env bash
# Many MQAR learning curves side by side on one GPU (small models leave most of an H200 idle): one
# benchmarks/recall_curve.py call per line of JOBS (its arguments; blank lines and # comments skipped),
# PARALLEL at a time (default 3), every curve's JSON lines on stdout.
#   PARALLEL=3 bash benchmarks/recall_sweep.sh benchmarks/results/2026-11-29-h200-recall-sweep-jobs.txt > curves.jsonl
# Memory: a seed-scale row at MQAR batch 128 takes 25-40 GB, so three seed jobs at a time on an H200 (eight ran
# out of memory); tiny-scale jobs take little.
set -euo pipefail
jobs_file=${1:?usage: bash benchmarks/recall_sweep.sh JOBS_FILE > curves.jsonl}
curve="$(dirname "$0")/recall_curve.py"
grep -v '^[[:space:]]*#' "$jobs_file" | grep -v '^[[:space:]]*$' |
    xargs -P "${PARALLEL:-3}" -d '\n' -I{} bash -c "exec ${PYTHON:-python3} '$curve' {}"
