"""MQAR learning curves of ablation rows: how many steps until the lookup forms, at a preset's recall settings.

The Recall column trains each row for a fixed budget; this shows whether that budget is past the phase
transition. One JSON line per evaluation: row, step, mean loss since the last line, accuracy per setting.

    python benchmarks/recall_curve.py --preset seed --rows 6,6:swa_plan=all --steps 2000 --every 250 --lr 1e-3
    (the preset's recall.target and recall.eval_every end a row once it has learned; the probe size is the
    preset's: `hymba ablate --recall` keeps every run's curve itself, this script is for ad-hoc variants)
    (a row may carry model overrides after a colon, comma-free: 6:swa_plan=all;window=128)
"""

from __future__ import annotations

import argparse
import json
import time

import _hymba_path  # noqa: F401  (a plain clone: src/ on the path)
import numpy as np
import torch

from hymba import HymbaLM
from hymba.ablation.settings import AblationSettings
from hymba.config import parse_override
from hymba.eval.mqar import evaluate_mqar, probe_config, train_mqar


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="seed")
    p.add_argument("--rows", default="6,6:swa_plan=all")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--lr", type=float, required=True, help="peak learning rate (one of a sweep)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="recall.* overrides")
    args = p.parse_args()
    st = AblationSettings.load(args.preset, [*args.overrides, f"recall.train_steps={args.steps}"])
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for job in args.rows.split(","):
        row, _, extra = job.partition(":")
        cfg = st.row_model(int(row))
        for kv in filter(None, extra.split(";")):
            _, key, value = parse_override(f"model.{kv}")
            cfg = cfg.replace(**{key: value})
        torch.manual_seed(0)
        model = HymbaLM(probe_config(cfg, st.recall)).to(dev)
        t0, window = time.perf_counter(), []

        def report(step: int, loss: float) -> None:
            window.append(loss)
            if (step + 1) % args.every == 0 or step + 1 == args.steps:
                acc = evaluate_mqar(model, st.recall, device=dev)
                model.train()
                print(
                    json.dumps(
                        {
                            "preset": args.preset,
                            "row": job,
                            "set": args.overrides,
                            "lr": args.lr,
                            "step": step + 1,
                            "loss": float(np.mean(window)),
                            "accuracy": {f"{t}x{n}": a for (t, n), a in acc.items()},
                            "seconds": round(time.perf_counter() - t0, 1),
                        }
                    ),
                    flush=True,
                )
                window.clear()

        train_mqar(model, st.recall, lr=args.lr, device=dev, seed=0, callback=report)


if __name__ == "__main__":
    main()
