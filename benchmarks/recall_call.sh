#!/usr/bin/env bash
# The seed Recall column on the device, as one detached job that outlives the 10-minute limit of a call: a
# process in its own session runs on until the machine is given back, so calls made while it is warm only wait.
#   device: DEADLINE=1500 WAIT=570 bash benchmarks/recall_call.sh   (MAMBA_SSM_SDIST=DIR: see build_mamba_ssm.sh)
# The first call starts the job in /tmp/hymba-recall: the mamba-ssm build beside the attention-only rows
# (ATTN_ROWS, no scan) and the GPU tests (NO_TESTS=1: none), then the SSM rows WORKERS at a time; DEADLINE counts from the start.
# Every call waits up to WAIT s and copies the results so far to $OUT (seed-results.json, attn-results.json):
# copy those back to runs/abl-*/results.json, so that a fresh machine resumes where the last one stopped.
set -u
W=/tmp/hymba-recall; OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
now() { date +%s; }

if [ "${1:-}" = job ]; then  # the detached job, run from its own copy of the tree
    cd "$W/repo"
    export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
    end=$(cat "$W/end")
    log() { echo "$(date -u +%T) $*" >> "$W/session.log"; }
    (while :; do echo "$(date -u +%T) $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader)" \
        >> "$W/smi.log"; sleep 30; done) & smi=$!
    for d in runs/abl-attn runs/abl-seed; do
        mkdir -p $d; [ -e $d/results.json ] || cp benchmarks/results/2026-11-29-h200-seed-ablation/results.json $d/
    done
    if ! python3 -c "import mamba_ssm" 2>/dev/null; then
        (bash benchmarks/build_mamba_ssm.sh ${MAMBA_SSM_SDIST:-} > "$W/build.log" 2>&1; log "build rc=$?") & build=$!
    fi
    ab() { local t=$((end - $(now))); [ $t -gt 30 ] && timeout -k 15 -s INT $t python3 -m hymba.cli ablate --preset seed --recall "$@"; }
    ab --recall-workers 2 --rows "${ATTN_ROWS:-6,10}" --out runs/abl-attn > "$W/attn.log" 2>&1 & attn=$!
    if [ -z "${NO_TESTS:-}" ]; then
        timeout $((end - $(now))) python3 -m pytest -q -rs -p no:cacheprovider --tb=short -m gpu tests > "$W/gpu_tests.log" 2>&1
        log "gpu tests rc=$?"
    fi
    [ -n "${build:-}" ] && wait $build
    wait $attn; log "attention rows rc=$?"
    ab --recall-workers "${WORKERS:-3}" --rows "${ROWS:-13,7,1,9,5,8,12,4,11,2,3}" --out runs/abl-seed > "$W/seed.log" 2>&1
    log "ssm rows rc=$?"
    kill $smi; touch "$W/finished"
    exit 0
fi

if [ ! -e "$W/finished" ] && ! { [ -e "$W/pid" ] && kill -0 "$(cat "$W/pid")" 2>/dev/null; }; then
    rm -rf "$W"; mkdir -p "$W/repo"; cp -a . "$W/repo/"
    echo $(($(now) + ${DEADLINE:-1500})) > "$W/end"
    setsid nohup bash "$W/repo/benchmarks/recall_call.sh" job > "$W/job.log" 2>&1 < /dev/null & echo $! > "$W/pid"
    echo "started the job (deadline in ${DEADLINE:-1500} s)"
fi
stop=$(($(now) + ${WAIT:-570}))
while [ ! -e "$W/finished" ] && [ "$(now)" -lt $stop ]; do sleep 5; done
cp "$W/repo/runs/abl-attn/results.json" "$OUT/attn-results.json" 2>/dev/null
cp "$W/repo/runs/abl-seed/results.json" "$OUT/seed-results.json" 2>/dev/null
cp "$W"/session.log "$W"/smi.log "$W"/gpu_tests.log "$W"/attn.log "$W"/seed.log "$OUT/" 2>/dev/null
tail -3 "$W/gpu_tests.log" 2>/dev/null; tail -3 "$W/build.log" 2>/dev/null
grep -h "recall\|FAIL\|Error" "$W/attn.log" "$W/seed.log" 2>/dev/null | cut -c1-240
cat "$W/session.log" 2>/dev/null; tail -4 "$W/smi.log" 2>/dev/null
[ -e "$W/finished" ] && echo "job finished" || echo "job running: $(($(cat "$W/end") - $(now))) s to its deadline"
