#!/usr/bin/env bash
# Build the official mamba-ssm CUDA kernels for the GPU in this machine only (a few minutes on 16 cores, where
# a build for every architecture takes far longer), for the side-by-side comparisons; our own code never needs it.
#   bash benchmarks/build_mamba_ssm.sh            # downloads the sdist (needs network)
#   bash benchmarks/build_mamba_ssm.sh SDIST_DIR  # or builds from mamba_ssm-*.tar.gz in SDIST_DIR (offline)
# Make SDIST_DIR on a machine with network and torch installed:
#   MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE python3 -m pip download --no-deps --no-binary :all: \
#       --no-build-isolation mamba-ssm==2.3.2.post1 -d SDIST_DIR
set -euo pipefail
work=$(mktemp -d)
sdist=${1:-$work/sdist}
if [ -z "${1:-}" ]; then
    MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE python3 -m pip download -q --no-deps --no-binary :all: \
        --no-build-isolation mamba-ssm==2.3.2.post1 -d "$sdist"
fi
tar xzf "$sdist"/mamba_ssm-*.tar.gz -C "$work"
src=$(ls -d "$work"/mamba_ssm-*/)
arch=$(python3 -c "import torch; print('%d%d' % torch.cuda.get_device_capability())")
# keep only this GPU's target
python3 - "$src/setup.py" "$arch" <<'PY'
import re, sys
p, arch = sys.argv[1], sys.argv[2]
s = open(p).read()
s = re.sub(r'cc_flag\.append\("-gencode"\)\s*\n\s*cc_flag\.append\("arch=compute_(\d+),code=sm_\d+"\)',
           lambda m: m.group(0) if m.group(1) == arch else "pass", s)
open(p, "w").write(s)
PY
export MAMBA_FORCE_BUILD=TRUE MAX_JOBS=${MAX_JOBS:-$(nproc)} TORCH_CUDA_ARCH_LIST=${arch:0:-1}.${arch: -1}
(cd "$src" && python3 -m pip wheel -q --no-build-isolation --no-deps -w "$work/whl" .)
python3 -m pip install -q --no-index --no-deps "$work"/whl/*.whl
python3 -c "from mamba_ssm.ops.selective_scan_interface import selective_scan_fn; print('mamba_ssm kernels ready')"
