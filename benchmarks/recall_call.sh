set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
end=$((SECONDS + ${DEADLINE:-560}))
for d in runs/abl-attn runs/abl-seed; do mkdir -p $d; [ -e $d/results.json ] || cp benchmarks/results/2026-11-29-h200-seed-ablation/results.json $d/; done
if ! python3 -c "import mamba_ssm" 2>/dev/null; then
  if ls .device/whl/*.whl >/dev/null 2>&1; then python3 -m pip install -q --no-index --no-deps .device/whl/*.whl > $OUT/build.log 2>&1
  else (WHEEL_DIR=$OUT/whl bash .device/build_mamba_ssm.sh .device/sdist > $OUT/build.log 2>&1) & build=$!; fi
fi
ab() { local t=$((end - SECONDS)); [ $t -gt 30 ] && timeout -k 15 -s INT $t python3 -m hymba.cli ablate --preset seed --recall "$@"; }
if [ -n "${ATTN:-}" ]; then ab --recall-workers 2 --rows 6,10 --out runs/abl-attn > $OUT/attn.log 2>&1 & attn=$!; fi
[ -n "${build:-}" ] && wait $build; echo "build done at $SECONDS" >> $OUT/session.log
[ -n "${attn:-}" ] && wait $attn; echo "attn done at $SECONDS" >> $OUT/session.log
ab --recall-workers 3 --rows ${ROWS:-13,7,1,9,2,3,4,5,8,11,12} --out runs/abl-seed > $OUT/seed.log 2>&1
echo "seed done at $SECONDS" >> $OUT/session.log
cp runs/abl-attn/results.json $OUT/attn-results.json; cp runs/abl-seed/results.json $OUT/seed-results.json
ls -la $OUT/whl 2>/dev/null; tail -5 $OUT/attn.log; tail -15 $OUT/seed.log; cat $OUT/session.log
