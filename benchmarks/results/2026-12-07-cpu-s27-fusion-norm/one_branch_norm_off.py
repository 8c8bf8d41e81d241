"""benchmarks/recall_curve.py with one of mean fusion's two branch norms switched off (a one-off diagnosis of
session 27; `model.fusion_norm=false` switches off both). NORM_A=0: no attention-branch norm, NORM_S=0: no SSM-
branch norm; y = W_out((a' + s') / 2). Run from the repository root:

    NORM_A=0 python benchmarks/results/2026-12-07-cpu-s27-fusion-norm/one_branch_norm_off.py \\
        --preset tiny --rows 4 --steps 600 --every 50 --lr 1e-3 <the --set flags of ../2026-12-07-h100-s27.md>
"""

import os
import runpy
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(BENCHMARKS))  # recall_curve.py's own imports (_hymba_path), as when it runs as a script
import _hymba_path  # noqa: E402, F401  (a plain clone: src/ on the path)

from hymba.kernels.norm import rms_norm  # noqa: E402
from hymba.model import hymba as H  # noqa: E402

NORM_A, NORM_S = os.environ.get("NORM_A", "1") == "1", os.environ.get("NORM_S", "1") == "1"
orig = H.HymbaBlock._fuse_ffn


def patched(self, x, a, s, fused):
    if a is not None and s is not None and self.c.fusion == "mean" and self.c.fusion_norm and not self.c.split_out_proj:
        y = self.out_proj(((self.attn_norm(a) if NORM_A else a) + (self.ssm_norm(s) if NORM_S else s)) / 2)
        if not fused:
            x = x + y
            return x + self.ffn(self.ffn_norm(x))
        h, x = rms_norm(y, self.ffn_norm.weight, self.ffn_norm.eps, residual=x)
        return x + self.ffn(h)
    return orig(self, x, a, s, fused)


H.HymbaBlock._fuse_ffn = patched
sys.argv = ["recall_curve.py", *sys.argv[1:]]
runpy.run_path(str(BENCHMARKS / "recall_curve.py"), run_name="__main__")
