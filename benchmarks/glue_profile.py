"""Glue around the scan in one training step (forward + backward) of a roadmap row: how many copy, cast, cat
and contiguous ops it runs and, on CUDA, their device time, from torch.profiler. One JSON line per row.

    python benchmarks/glue_profile.py --rows 13 --device cpu --d-model 128 --n-layers 2 --scan ref
    python benchmarks/glue_profile.py --rows 1,6,13 --device cuda --scan triton --attn flex --batch 16 --seq 512
    python benchmarks/glue_profile.py --rows 6,13 --device cuda --scan triton --probe --batch 128 --seq 256

``--probe``: the row at the preset's MQAR recall-probe size (``[scales.<preset>.recall]``), MQAR vocabulary.
``--top N``: also the N ops with the most device time of their own.
``--compile``: the model under ``torch.compile`` as the trainer compiles it (``hymba.train.step.compile_model``),
so the profile shows the kernels Inductor leaves; ``--flex-in-graph``: with FlexAttention lowered into the
compiled graph as Inductor would (``hymba.kernels.attention.flex.OPAQUE_UNDER_COMPILE`` off) instead of the
opaque custom op the model uses. ``--train-conv triton``: the Mamba conv with autograd through our Triton
kernels (``hymba.kernels.scan.TRAIN_CONV``); ``ref``: PyTorch's conv1d; ``shift``: as shifted multiply-adds that
torch.compile fuses; the default ``auto``: ``shift`` under ``--compile``, ``ref`` eager. ``--scan-impl``: the Triton
scan's implementation (``sequential`` or ``chunked``; with ``--scan triton``). ``wall_ms`` is one whole step's
wall time (mean of 10, synchronised) beside the profiled device time: a step whose wall time exceeds its
device time is bound by the host (kernel launches).
``--step-ms N`` (with ``--probe``): also the wall time of one whole MQAR optimiser step as the Recall column
trains it (``hymba.eval.mqar.train_mqar``: the preset's curriculum and batch, CUDA graphs on CUDA), from runs of
N and 2N steps (their difference per step, so that start-up and graph capture cancel).

bf16 autocast on CUDA (as the trainer), fp32 on CPU unless ``--bf16``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import _hymba_path  # noqa: F401  (a plain clone: src/ on the path)
import torch
from torch.profiler import ProfilerActivity, profile

from hymba.cli.args import add_scan_impl_arg
from hymba.config import scale_settings
from hymba.eval.mqar import MQARSettings, probe_config, train_mqar
from hymba.kernels import scan
from hymba.kernels.attention import flex
from hymba.model import HymbaLM
from hymba.presets import row_config
from hymba.train.step import compile_model

GLUE = ("aten::copy_", "aten::_to_copy", "aten::cat", "aten::contiguous", "aten::clone", "aten::pad")


def step(model, ids: torch.Tensor, autocast: bool) -> None:
    with torch.autocast(ids.device.type, torch.bfloat16, enabled=autocast):
        out = model(ids[:, :-1], labels=ids[:, 1:])
    out.loss.backward()


def wall_ms(model, ids: torch.Tensor, autocast: bool, n: int = 10) -> float:
    """Mean wall milliseconds of ``n`` whole steps (forward + backward), synchronised before and after."""
    sync = torch.cuda.synchronize if ids.device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        step(model, ids, autocast)
    sync()
    return (time.perf_counter() - t0) / n * 1e3


def mqar_step_ms(cfg, settings: dict, dev: torch.device, steps: int) -> float:
    """Milliseconds per MQAR training step of the probe ``cfg`` under the recall ``settings``: runs of ``steps``
    and ``2 * steps`` steps from fresh weights, no early stop, the difference per step."""
    s = MQARSettings.from_dict({**settings, "target": None})

    def run(n: int) -> float:
        model = HymbaLM(cfg).to(dev)
        t0 = time.perf_counter()
        train_mqar(model, s.replace(train_steps=n), device=dev)  # reads the last loss back: synchronised
        return time.perf_counter() - t0

    return (run(2 * steps) - run(steps)) / steps * 1e3


def profile_row(row: int, args) -> dict:
    kw = {}
    if args.d_model:
        kw.update(d_model=args.d_model)
    if args.n_layers:
        kw.update(n_layers=args.n_layers)
    cfg = row_config(row, args.preset, vocab_size=args.vocab, scan_backend=args.scan, attn_backend=args.attn, **kw)
    vocab = args.vocab
    if args.probe:
        settings = scale_settings(args.preset)["recall"]
        cfg = probe_config(cfg, settings)
        vocab = cfg.vocab_size
    dev = torch.device(args.device)
    model = HymbaLM(cfg).to(dev)
    ids = torch.randint(0, vocab, (args.batch, args.seq + 1), device=dev)
    autocast = dev.type == "cuda" or args.bf16
    flex.OPAQUE_UNDER_COMPILE = not args.flex_in_graph
    run = compile_model(model) if args.compile else model
    t0 = time.perf_counter()
    for _ in range(3):  # warm-up: kernels compiled, caches filled
        step(run, ids, autocast)
    warmup_s = time.perf_counter() - t0
    wall = wall_ms(run, ids, autocast)
    model.zero_grad(set_to_none=True)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        step(run, ids, autocast)
        if dev.type == "cuda":
            torch.cuda.synchronize()
    counts, device_ms = Counter(), Counter()
    for e in prof.key_averages():
        if e.key in GLUE:
            counts[e.key] = e.count
            device_ms[e.key] = getattr(e, "device_time_total", 0.0) / 1e3
    total = sum(getattr(e, "self_device_time_total", 0.0) for e in prof.key_averages()) / 1e3
    own = sorted(prof.key_averages(), key=lambda e: -getattr(e, "self_device_time_total", 0.0))[: args.top]
    top = [{"name": e.key[:100], "ms": round(e.self_device_time_total / 1e3, 3), "calls": e.count} for e in own]
    return {
        "row": row,
        "preset": args.preset,
        "scan": args.scan,
        "attn": args.attn,
        "device": str(dev),
        "compiled": args.compile,
        "flex_in_graph": args.flex_in_graph if args.compile and args.attn == "flex" else None,
        "train_conv": args.train_conv,
        "scan_impl": scan.triton_impl() if args.scan == "triton" else None,
        "batch": args.batch,
        "seq": args.seq,
        "warmup_s": round(warmup_s, 1),
        "wall_ms": round(wall, 3),
        "counts": dict(counts),
        "device_ms": {k: round(v, 3) for k, v in device_ms.items()} if dev.type == "cuda" else None,
        "device_total_ms": round(total, 3) if dev.type == "cuda" else None,
        **({"top": top} if args.top and dev.type == "cuda" else {}),
        **({"mqar_step_ms": round(mqar_step_ms(cfg, settings, dev, args.step_ms), 3)} if args.step_ms else {}),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="13")
    p.add_argument("--preset", default="seed")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--scan", default="ref")
    p.add_argument("--attn", default="sdpa")
    p.add_argument("--d-model", type=int, default=0, help="override the preset's d_model (0: keep)")
    p.add_argument("--n-layers", type=int, default=0, help="override the preset's n_layers (0: keep)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast on CPU too")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (as train.compile)")
    p.add_argument("--flex-in-graph", action="store_true", help="with --compile: flex lowered into the graph")
    p.add_argument("--probe", action="store_true", help="the row at the preset's MQAR recall-probe size")
    p.add_argument("--top", type=int, default=0, help="also list the N ops with the most own device time")
    p.add_argument("--step-ms", type=int, default=0, metavar="N", help="with --probe: time whole MQAR steps (N, 2N)")
    p.add_argument("--train-conv", choices=scan.TRAIN_CONVS, default=scan.TRAIN_CONV, help="the conv with autograd")
    add_scan_impl_arg(p)
    args = p.parse_args()
    scan.TRAIN_CONV = args.train_conv
    if args.step_ms and not args.probe:
        p.error("--step-ms times the MQAR probe's training step: add --probe")
    for row in map(int, args.rows.split(",")):
        print(json.dumps(profile_row(row, args)), flush=True)


if __name__ == "__main__":
    main()
