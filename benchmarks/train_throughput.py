"""Training throughput of ablation rows per kernel backend, through the trainer itself (``hymba.train.train``:
AdamW, LR schedule, clipping, bf16 autocast on CUDA) at a scale of ``roadmap.toml``, one JSON line per row and
scan/attention pair: tokens/s with the warm-up steps left out, MFU against the trainer's ``peak_flops``, peak
GPU memory. The rows train on the scale's own data, as in ``hymba ablate``.

    python benchmarks/train_throughput.py --preset seed --rows 1,6,13 --backends ref/sdpa,triton/flex,mamba_ssm/flex
    (--set train.batch_size=32 --set train.compile=true: any scale setting, as for `hymba ablate`;
    --set train.cuda_graphs=true: each step replayed as one CUDA graph)
    python benchmarks/train_throughput.py --rows 6 --hf-llama --matmul-peak   # + transformers' Llama, + MFU
                                                                              #   against a measured matmul peak

``--hf-llama`` also trains transformers' ``LlamaForCausalLM`` built to row 6's shape (the ``hf`` extra), eager
and compiled, in a plain loop with the scale's batch, sequence, AdamW (fused on CUDA) and precision, on random
tokens. ``--matmul-peak`` measures a bf16 matmul's FLOP/s in this run (8192 cubed on CUDA) and adds each row's
MFU against it (``mfu_measured_peak``) beside the MFU against the GPU's spec peak.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import _hymba_path  # noqa: F401  (a plain clone: src/ on the path)
import torch

from hymba.ablation.settings import AblationSettings
from hymba.bench import hf_llama_config
from hymba.cli.args import add_global_attn_arg, add_scan_impl_arg, add_set_arg
from hymba.config import RunConfig
from hymba.data import prepare
from hymba.kernels import attention
from hymba.kernels import scan as scan_kernels
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
        "compiled": tc.compiles(device.type),
        "cuda_graphs": tc.cuda_graphs,
        "train_conv": scan_kernels.TRAIN_CONV,
        "global_attn": attention.GLOBAL_CAUSAL if attn == "auto" else None,
        "scan_impl": scan_kernels.triton_impl() if scan == "triton" else None,
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


def matmul_peak(device: torch.device, reps: int = 20) -> float:
    """FLOP/s of a bf16 n x n x n matmul on ``device``, measured now (n = 8192 on CUDA, 1024 elsewhere)."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_hf_llama(settings: AblationSettings, compiled: bool, steps: int, warmup: int) -> dict:
    """transformers' Llama of row 6's shape (the vocabulary of the scale's tokenizer, as the trainer's) trained in
    a plain loop at the scale's shapes, on random tokens."""
    import transformers

    device = resolve_device(settings.train.device)
    tc = settings.train
    c = settings.row_model(6).replace(vocab_size=prepare(settings.data).vocab_size)  # the trainer's vocabulary
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(hf_llama_config(c)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, fused=device.type == "cuda")
    f = torch.compile(model) if compiled else model
    bf16 = device.type == "cuda" and tc.precision in ("auto", "bf16")
    x = torch.randint(0, c.vocab_size, (tc.batch_size, tc.seq_len + 1), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = f(input_ids=x[:, :-1], labels=x[:, 1:]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    _sync(device)
    warm_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    dt = (time.perf_counter() - t0) / steps
    n = sum(p.numel() for p in model.parameters())
    tok_s = tc.batch_size * tc.seq_len / dt
    peak = peak_flops(device, tc.peak_flops)
    out = {
        "model": "transformers Llama, row 6's shape",
        "compiled": compiled,
        "preset": settings.preset,
        "batch": tc.batch_size,
        "seq": tc.seq_len,
        "tokens_per_s": tok_s,
        "mfu": 6 * n * tok_s / peak if peak else None,  # 6N per token (attention FLOPs left out)
        "peak_flops": peak,
        "params_m": n / 1e6,
        "warmup_s": warm_s,
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
    p.add_argument("--hf-llama", action="store_true", help="also transformers' Llama of row 6's shape")
    p.add_argument("--matmul-peak", action="store_true", help="also MFU against a bf16 matmul peak measured now")
    p.add_argument(
        "--train-conv",
        choices=scan_kernels.TRAIN_CONVS,
        default=scan_kernels.TRAIN_CONV,
        help="the Mamba conv where a gradient is needed (hymba.kernels.scan.TRAIN_CONV; default: %(default)s)",
    )
    add_global_attn_arg(p)
    add_scan_impl_arg(p)
    add_set_arg(
        p,
        "override a setting of the scale (repeatable)",
    )
    args = p.parse_args()
    scan_kernels.TRAIN_CONV = args.train_conv
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
    device = resolve_device(settings.train.device)
    measured = matmul_peak(device) if args.matmul_peak else None
    if measured:
        print(json.dumps({"matmul_peak_flops": measured, "device": str(device)}), flush=True)

    def emit(r: dict) -> None:
        if measured and r.get("mfu") is not None:  # an MFU comes with the spec peak it was taken against
            r["mfu_measured_peak"] = r["mfu"] * r["peak_flops"] / measured
        print(json.dumps(r), flush=True)

    for row in map(int, args.rows.split(",")):
        for pair in args.backends.split(","):
            scan, attn = pair.split("/")
            try:
                r = measure(settings, row, scan, attn)
            except Exception as e:  # one failing combination must not hide the others
                r = {"row": row, "scan": scan, "attn": attn, "error": f"{type(e).__name__}: {e}"[:300]}
            emit(r)
    if args.hf_llama:
        for compiled in (False, True) if device.type == "cuda" else (False,):
            try:
                r = measure_hf_llama(settings, compiled, args.steps, args.warmup)
            except Exception as e:
                r = {"model": "transformers Llama, row 6's shape", "compiled": compiled}
                r["error"] = f"{type(e).__name__}: {e}"[:300]
            emit(r)


if __name__ == "__main__":
    main()
