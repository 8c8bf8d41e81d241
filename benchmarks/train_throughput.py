"""Training throughput of ablation rows per kernel backend, through the trainer itself (``hymba.train.train``:
AdamW, LR schedule, clipping, bf16 autocast on CUDA) at a scale of ``roadmap.toml``, one JSON line per row and
scan/attention pair: tokens/s with the warm-up steps left out, MFU against the trainer's ``peak_flops``, peak
GPU memory. The rows train on the scale's own data, as in ``hymba ablate``.

    python benchmarks/train_throughput.py --preset seed --rows 1,6,13 --backends ref/sdpa,triton/flex,mamba_ssm/flex
    (--set train.batch_size=32 --set train.compile=true: any scale setting, as for `hymba ablate`)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from hymba.ablation.settings import AblationSettings
from hymba.cli.args import add_set_arg
from hymba.config import RunConfig
from hymba.runtime import peak_flops, resolve_device
from hymba.train import train


def measure(settings: AblationSettings, row: int, scan: str, attn: str) -> dict:
    device = resolve_device(settings.train.device)
    model_cfg = settings.row_model(row).replace(scan_backend=scan, attn_backend=attn)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory(prefix="hymba-train-throughput-") as tmp:
        result = train(RunConfig(model=model_cfg, data=settings.data, train=settings.train), Path(tmp) / "run")
    tc = settings.train
    out = {
        "row": row,
        "preset": settings.preset,
        "scan": scan,
        "attn": attn,
        "batch": tc.batch_size,
        "seq": tc.seq_len,
        "grad_accum": tc.grad_accum,
        "timed_steps": tc.max_steps - tc.throughput_skip_steps,
        "tokens_per_s": result.train_tokens_per_s,
        "mfu": result.mfu,
        "peak_flops": peak_flops(device, tc.peak_flops),
        "val_loss": result.val_loss,
        "params_m": result.n_params / 1e6,
        "device": str(device),
    }
    if device.type == "cuda":
        out.update(gpu=torch.cuda.get_device_name(device), peak_mem_gb=torch.cuda.max_memory_allocated(device) / 1e9)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="seed", help="scale of roadmap.toml (default: %(default)s)")
    p.add_argument("--rows", default=",".join(map(str, range(1, 14))), help="comma list (default: all 13)")
    p.add_argument(
        "--backends",
        default="auto/auto",
        help="comma list of scan/attn backend pairs, e.g. ref/sdpa,triton/flex (default: %(default)s)",
    )
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default: %(default)s)")
    add_set_arg(
        p,
        "override a setting of the scale (repeatable)",
    )
    args = p.parse_args()
    settings = AblationSettings.load(
        args.preset,
        [
            *args.overrides,
            f"train.max_steps={args.warmup + args.steps}",
            f"train.throughput_skip_steps={args.warmup}",
            "train.eval_every=0",
            "train.ckpt_every=0",
            "train.progress=false",
        ],
    )
    for row in map(int, args.rows.split(",")):
        for pair in args.backends.split(","):
            scan, attn = pair.split("/")
            try:
                r = measure(settings, row, scan, attn)
            except Exception as e:  # one failing combination must not hide the others
                r = {"row": row, "scan": scan, "attn": attn, "error": f"{type(e).__name__}: {e}"[:300]}
            print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
