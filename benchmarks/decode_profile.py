"""GPU kernels of one cached decode step of a model TOML, from torch.profiler: random bf16 weights, a prefill of
batch x prompt, then N decode steps profiled eagerly and replayed from the CUDA graph (GraphedDecoder). One JSON
line per mode: GPU time per step (kernels, copies and memsets), kernels per step, the top kernels by GPU time
per step; plus the graph replay's step time from CUDA events. Mode ``prefill`` profiles the prefill of one
chunk (``--prefill-chunk`` rows x the prompt) instead: where the prompt's time goes.

    python benchmarks/decode_profile.py                                  # Hymba-1.5B, batch 128, 8K prompt
    python benchmarks/decode_profile.py --batch 16 --prompt-len 1024 --modes eager
    python benchmarks/decode_profile.py --modes prefill,cuda_graph --steps 5
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

import _hymba_path  # noqa: F401  (a plain clone: src/ on the path)
import torch
from torch.profiler import ProfilerActivity, profile

from hymba.bench import DECODE_MODES, load_model_config
from hymba.model import HymbaLM


def gpu_events(prof) -> list:
    return [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def summarize(prof, steps: int, top: int) -> dict:
    per_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for e in gpu_events(prof):
        t = per_name[e.name]
        t[0] += e.time_range.elapsed_us()
        t[1] += 1
    total = sum(t for t, _ in per_name.values())
    rows = sorted(per_name.items(), key=lambda kv: -kv[1][0])[:top]
    return {
        "gpu_us_per_step": round(total / steps, 1),
        "kernels_per_step": round(sum(n for _, n in per_name.values()) / steps, 1),
        "top": [
            {"name": k[:120], "us_per_step": round(t / steps, 1), "calls_per_step": round(n / steps, 2)}
            for k, (t, n) in rows
        ],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/models/hymba-1.5b.toml")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--prompt-len", type=int, default=8192)
    p.add_argument("--steps", type=int, default=10, help="decode steps profiled per mode")
    p.add_argument("--prefill-chunk", type=int, default=8, help="prefill rows at a time (bounds activations)")
    p.add_argument(
        "--modes", default="eager,cuda_graph", help=f"prefill or of {', '.join(DECODE_MODES)} (comma-separated)"
    )
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args()
    if not torch.cuda.is_available():
        print("decode_profile.py needs a CUDA GPU (torch.cuda.is_available() is False); nothing to profile on CPU")
        return 1
    dev = torch.device("cuda")
    cfg = load_model_config(a.config)
    torch.manual_seed(0)
    model = HymbaLM(cfg).to(device=dev, dtype=torch.bfloat16).eval()
    ids = torch.randint(0, cfg.vocab_size, (a.batch, a.prompt_len), device=dev)
    modes = [m.strip() for m in a.modes.split(",")]
    room = 4 + (a.steps + 4) * len(modes)
    with torch.no_grad():
        _, cache = model.prefill(ids, max_len=a.prompt_len + room, last_only=True, batch_chunk=a.prefill_chunk)
        nxt = ids[:, -1]
        base = {"config": a.config, "batch": a.batch, "prompt_len": a.prompt_len, "steps": a.steps}
        base["device"] = torch.cuda.get_device_name(dev)
        for mode in modes:
            if mode == "prefill":
                chunk = ids[: a.prefill_chunk]
                torch.cuda.synchronize()
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    model.prefill(chunk, max_len=a.prompt_len + 4, last_only=True)
                    torch.cuda.synchronize()
                out = {**base, "mode": mode, "prefill_rows": chunk.shape[0], **summarize(prof, 1, a.top)}
                print(json.dumps(out), flush=True)
                continue
            if mode not in DECODE_MODES:
                raise SystemExit(f"--modes: unknown mode {mode!r} (prefill, {', '.join(DECODE_MODES)})")
            step = model.decoder(
                cache,
                cuda_graph=mode != "eager",
                compile=mode.startswith("compiled_graph"),
                overlap=mode.endswith("_overlap"),
            )
            for _ in range(2):  # warm-up (Triton compiles, cuBLAS handles)
                step(nxt)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(a.steps):
                    step(nxt)
                torch.cuda.synchronize()
            out = {**base, "mode": mode, **summarize(prof, a.steps, a.top)}
            t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0.record()
            for _ in range(2):
                step(nxt)
            t1.record()
            torch.cuda.synchronize()
            out["event_ms_per_step"] = round(t0.elapsed_time(t1) / 2, 3)
            if out["kernels_per_step"] == 0:
                out["note"] = "the profiler saw no kernels (CUPTI does not trace this graph); see event_ms_per_step"
            print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
