"""Generation side by side in one process, each model at the paper protocol (a batch of random prompts, halved
on out-of-memory; greedy new tokens; bf16 on CUDA): our Hymba-1.5B and Llama-3.2-1B configs, our rows 6 and 13
at a scale of ``roadmap.toml``, and transformers' ``LlamaForCausalLM`` built to row 6's shape (its own
``generate``, the ``hf`` extra).

Ours run through :func:`hymba.bench.generation_benchmark` in each decode mode asked for (the numbers of ``hymba
bench``). Transformers' model is timed as a user would call it: ``generate`` of 1 new token (the prefill) and of
N; its decode rate is the batch x (N - 1) tokens over the difference. Every model reports tokens/s, ms per
decode step, the bytes a step must read and the fraction of the copy bandwidth (measured once, in this run)
that gives, prefill time and peak memory. One JSON line per model and mode; a model that fails prints its
error and the others still run.

    python benchmarks/generation_compare.py                       # an H200: 8K prompts, batch 128, 64 new tokens
    python benchmarks/generation_compare.py --models row6,row13,hf-row6 --preset tiny --device cpu \\
        --prompt-len 32 --batch 2 --new-tokens 4                  # a smoke run anywhere
"""

from __future__ import annotations

import argparse
import json
import time

import _hymba_path  # noqa: F401  (a plain clone: src/ on the path)
import torch

from hymba import HymbaLM
from hymba.bench import DECODE_MODES, copy_bandwidth, generation_benchmark, hf_llama_config, load_model_config
from hymba.cli.args import add_global_attn_arg
from hymba.config import ModelConfig
from hymba.presets import row_config

MODELS = {
    "hymba-1.5b": "configs/models/hymba-1.5b.toml",
    "llama-3.2-1b": "configs/models/llama-3.2-1b.toml",
    "row6": 6,
    "row13": 13,
    "hf-row6": 6,  # transformers' Llama of this row's shape
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hf_generation(model, c: ModelConfig, batch: int, prompt_len: int, new_tokens: int, device, bandwidth) -> dict:
    """transformers' generate at the protocol: tokens/s of the decode steps (the prefill's 1-token call
    subtracted), the batch halved on out-of-memory."""
    while True:
        try:
            g = torch.Generator(device="cpu").manual_seed(0)
            ids = torch.randint(0, c.vocab_size, (batch, prompt_len), generator=g).to(device)
            mask = torch.ones_like(ids)

            def gen(n: int) -> tuple[float, int]:
                _sync(device)
                t0 = time.perf_counter()
                with torch.no_grad():
                    out = model.generate(
                        input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False
                    )
                _sync(device)
                return time.perf_counter() - t0, out.shape[1] - prompt_len

            gen(2)  # warm-up
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t1, _ = gen(1)
            tn, n = gen(new_tokens)
            step_s = (tn - t1) / max(n - 1, 1)
            break
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if batch == 1:
                raise
            batch //= 2
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    itemsize = next(model.parameters()).element_size()
    kv = 2 * c.n_layers * c.kv_heads * c.qk_head_dim * (prompt_len + new_tokens) * batch * itemsize
    step_bytes = weights + kv
    out = {
        "tokens_per_s": batch / step_s,
        "step_ms": step_s * 1e3,
        "step_gb": step_bytes / 1e9,
        "hbm_fraction": step_bytes / step_s / bandwidth,
        "batch_used": batch,
        "prompt_len": prompt_len,
        "new_tokens": n,
        "prefill_s": t1,
    }
    if device.type == "cuda":
        out["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma list of {', '.join(MODELS)}")
    p.add_argument("--preset", default="seed", help="scale of the rows (default: %(default)s)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--prompt-len", type=int, default=8192)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--decode", default=None, help=f"our decode modes, of {', '.join(DECODE_MODES)} "
                   "(default: cuda_graph,compiled_graph on CUDA, eager elsewhere)")  # fmt: skip
    p.add_argument("--ssm-state-dtype", default="fp32", help="comma list of fp32 and model: our SSM state's dtype "
                   "in the cache, each from its own prefill (model: the weights' dtype, as the released code keeps "
                   "it) (default: %(default)s)")  # fmt: skip
    add_global_attn_arg(p)
    a = p.parse_args()
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here (use --device cpu)")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    default_modes = "cuda_graph,compiled_graph" if device.type == "cuda" else "eager"
    modes = tuple(m.strip() for m in (a.decode or default_modes).split(","))
    names = [m.strip() for m in a.models.split(",")]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        p.error(f"--models: unknown {unknown[0]!r}; expected some of {', '.join(MODELS)}")
    for m in modes:
        if m not in DECODE_MODES:
            p.error(f"--decode: unknown mode {m!r}; modes are {', '.join(DECODE_MODES)}")
        if m != "eager" and device.type != "cuda":
            p.error(f"--decode {m}: needs a CUDA device (on {device.type}: eager)")
    states = [x.strip() for x in a.ssm_state_dtype.split(",")]
    if not states or any(x not in ("fp32", "model") for x in states):
        p.error(f"--ssm-state-dtype {a.ssm_state_dtype}: expected a comma list of fp32 and model")
    bandwidth = copy_bandwidth(device)
    head = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    print(
        json.dumps(
            {**head, "copy_bw_gbs": round(bandwidth / 1e9, 1), "torch": torch.__version__, "global_attn": a.global_attn}
        ),
        flush=True,
    )
    for name in names:
        spec = MODELS[name]
        cfg = load_model_config(spec) if isinstance(spec, str) else row_config(spec, a.preset)
        row = {**head, "model": name, "params_m": None}
        try:
            if name.startswith("hf-"):
                import transformers

                torch.manual_seed(0)
                model = transformers.LlamaForCausalLM(hf_llama_config(cfg)).to(device=device, dtype=dtype).eval()
                row["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 3)
                r = hf_generation(model, cfg, a.batch, a.prompt_len, a.new_tokens, device, bandwidth)
                print(json.dumps({**row, "decode": "transformers generate", **r}), flush=True)
            else:
                model = HymbaLM(cfg).to(device=device, dtype=dtype)
                row["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 3)
                for state in states if cfg.ssm else states[:1]:  # no SSM: no state to vary
                    generation_benchmark(
                        model,
                        prompt_len=a.prompt_len,
                        batch=a.batch,
                        new_tokens=a.new_tokens,
                        device=device,
                        modes=modes,
                        bandwidth=bandwidth,
                        on_result=lambda r, row=row: print(json.dumps({**row, **r}), flush=True),
                        ssm_dtype=torch.float32 if state == "fp32" else dtype,
                    )
        except Exception as e:  # one failing model must not hide the others
            print(json.dumps({**row, "error": f"{type(e).__name__}: {e}"[:300]}), flush=True)
        finally:
            model = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
