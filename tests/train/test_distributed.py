"""torchrun training on CPU: two gloo processes (DDP, FSDP2) against one process with the same global batch.

Tolerance: fp32 on CPU, one thread per process. The two runs see the same sequences and the same schedule; they
differ only in the order of floating-point sums (the gradient all-reduce, the per-rank means), measured at
~1e-7 relative on losses and most weights after six AdamW steps. The tests allow rtol 1e-5 on losses and
validation losses, rtol 1e-4 on gradient norms and atol 1e-4 on weights: AdamW divides by sqrt(v), so where a
gradient is near zero a 1e-7 difference in it moves that weight by up to lr-sized steps (one element of 8192 moved
1.5e-5 in a test session whose freshly trained tokenizer, not deterministic in `tokenizers`, gave another
trajectory), and the next gradient norm, which sums every squared gradient, carries that move: on one CI machine
the step-3 norm differed by 1.03e-5 relative (1.0157528 against 1.0157424) while every loss agreed to 1e-5. A wrong
shard, a double-counted gradient or a schedule off by one step is off by 1e-2 or more.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hymba.config import RunConfig
from hymba.data import TrainBatches
from hymba.errors import UsageError
from hymba.train import parallel
from hymba.train.trainer import train

REPO = Path(__file__).resolve().parents[2]
RTOL, GRAD_NORM_RTOL, ATOL = 1e-5, 1e-4, 1e-4

TOML = """
[model]
d_model = 32
n_layers = 2
n_heads = 2
d_state = 8

[data]
char_budget = 60000
vocab_size = 300
cache_dir = "{cache}"

[train]
device = "cpu"
seq_len = 32
batch_size = 2
grad_accum = 2
max_steps = 6
warmup_steps = 1
log_every = 1
eval_every = 3
eval_max_tokens = 512
ckpt_every = 3
keep_checkpoints = 3
progress = false
"""


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread, like each torchrun process (OMP_NUM_THREADS=1): the in-process runs are the
    references, and extra threads only spin on a busy CI box."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dist")
    path = root / "run.toml"
    path.write_text(TOML.format(cache=root / "cache"))
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --standalone`` (a free port, so parallel test sessions do not collide) of ``hymba train``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    return subprocess.run(
        [*cmd, "-m", "hymba", "train", *args], env=_env(), capture_output=True, text=True, timeout=300
    )


def one_process(config: Path, out: Path, *overrides: str, resume: bool = False):
    if resume:
        from hymba.train.trainer import saved_config

        return train(saved_config(out, overrides), out, resume=True)
    return train(RunConfig.load(config, overrides), out)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def curve(out: Path, key: str) -> dict[int, float]:
    return {m["step"]: m[key] for m in metrics(out) if key in m and not m.get("final")}


def final(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def assert_same_run(a: Path, b: Path, steps: range, rtol: float = RTOL, atol: float = ATOL) -> None:
    for key in ("loss", "grad_norm", "lr"):
        ca, cb = curve(a, key), curve(b, key)
        assert [s for s in ca if s in steps] == list(steps) == [s for s in cb if s in steps], key
        for s in steps:
            tol = max(rtol, GRAD_NORM_RTOL) if key == "grad_norm" else rtol
            assert cb[s] == pytest.approx(ca[s], rel=tol), (key, s)
    assert curve(b, "val_loss")[3] == pytest.approx(curve(a, "val_loss")[3], rel=rtol)
    assert final(b)["val_loss"] == pytest.approx(final(a)["val_loss"], rel=rtol)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert sorted(wa) == sorted(wb)
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=atol, msg=lambda m, k=k: f"{k}: {m}")


def crash_after_step_3(src: Path, dst: Path) -> Path:
    """A copy of a finished run as if it had been killed right after its step-3 checkpoint."""
    shutil.copytree(src, dst)
    for p in ("results.json", "model.safetensors", "checkpoints/latest"):
        (dst / p).unlink()
    shutil.rmtree(dst / "checkpoints" / "step_0000006")
    return dst


@pytest.fixture(scope="module")
def ref(config, tmp_path_factory) -> Path:
    """One process with the global batch of the two-rank runs: 4 sequences per micro-step, 2 micro-steps per
    optimizer step (the two-rank runs skip the gradient sync on the first)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    one_process(config, out, "train.batch_size=4")
    return out


@pytest.fixture(scope="module")
def ddp(config, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("ddp") / "run"
    proc = torchrun("--config", str(config), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_ddp_matches_one_process(ref, ddp):
    out, _ = ddp
    assert_same_run(ref, out, range(1, 7))
    run = json.loads((out / "run.json").read_text())
    assert run["parallel"] == {"mode": "ddp", "world_size": 2}
    state = torch.load(out / "checkpoints" / "step_0000006" / "state.pt", weights_only=True)
    assert state["data"]["batch_size"] == 4 and state["data"]["next_index"] == 12  # global terms


def test_only_rank0_writes_and_prints(ref, ddp):
    out, proc = ddp

    def files(d: Path) -> list[str]:
        return sorted(str(p.relative_to(d)) for p in d.rglob("*"))

    assert files(out) == files(ref)
    assert len(metrics(out)) == len(metrics(ref))  # no line written twice
    log = (out / "train.log").read_text()
    assert log.count("model: ") == 1 and "DDP over 2 process(es), gloo" in log
    assert proc.stdout.count("val_loss") == 1  # the result line, from rank 0 only
    assert proc.stderr.count("model: ") == 1


def test_fsdp_matches_one_process(ref, config, tmp_path):
    """FSDP2 over 2 ranks (inner micro-steps without gradient sync) == one process; its checkpoints, gathered
    from the shards, hold the optimizer state one process holds."""
    out = tmp_path / "fsdp"
    proc = torchrun("--config", str(config), "--out", str(out), "--set", "train.parallel=fsdp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_run(ref, out, range(1, 7))
    assert "FSDP over 2 process(es), gloo" in (out / "train.log").read_text()
    sa = torch.load(ref / "checkpoints" / "step_0000006" / "state.pt", weights_only=True)
    sb = torch.load(out / "checkpoints" / "step_0000006" / "state.pt", weights_only=True)
    assert sb["optimizer"]["param_groups"] == sa["optimizer"]["param_groups"]
    assert sorted(sb["optimizer"]["state"]) == sorted(sa["optimizer"]["state"])
    for i, s in sa["optimizer"]["state"].items():
        assert sb["optimizer"]["state"][i]["step"] == s["step"]
        for k in ("exp_avg", "exp_avg_sq"):  # the moments see no 1 / sqrt(v) amplification: 1e-5
            torch.testing.assert_close(sb["optimizer"]["state"][i][k], s[k], rtol=0, atol=1e-5)


def test_two_rank_checkpoint_resumes_in_one_process(ref, ddp, tmp_path):
    out = crash_after_step_3(ddp[0], tmp_path / "run")
    one_process(None, out, "train.batch_size=4", resume=True)  # the same global batch on one rank
    assert_same_run(ref, out, range(1, 7))
    assert [r["parallel"] for r in json.loads((out / "run.json").read_text())["resumes"]] == [
        {"mode": "none", "world_size": 1}
    ]


def test_one_process_checkpoint_resumes_on_two_ranks(ref, tmp_path):
    out = crash_after_step_3(ref, tmp_path / "run")
    proc = torchrun("--out", str(out), "--resume", "--set", "train.batch_size=2", "--set", "train.parallel=fsdp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_run(ref, out, range(1, 7))


def test_resume_with_another_global_batch_is_refused(ddp, tmp_path):
    out = crash_after_step_3(ddp[0], tmp_path / "run")
    proc = subprocess.run(
        [sys.executable, "-m", "hymba", "train", "--out", str(out), "--resume"],
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert (
        "cannot resume: the checkpoint's global batch is 4 sequences (train.batch_size=2 on 2 rank(s)), this run's "
        "is 2 (2 on 1); pass --set train.batch_size=4 to keep it" in proc.stderr
    )
    assert "resumes" not in json.loads((out / "run.json").read_text())  # refused before it was recorded


def test_parallel_none_under_torchrun_is_one_error(config, tmp_path):
    out = tmp_path / "run"
    proc = torchrun("--config", str(config), "--out", str(out), "--set", "train.parallel=none")
    assert proc.returncode != 0  # each rank exits 2; torchrun itself then exits 1 with its own report
    both = proc.stdout + proc.stderr
    assert both.count("hymba train: error: train.parallel='none' with 2 torchrun processes") == 1
    assert "exitcode  : 2" in both
    assert not out.exists()


def test_fsdp_without_gloo_is_one_error(config, tmp_path, monkeypatch, capsys):
    """Where this PyTorch build cannot run FSDP2 on CPU (no gloo): one line, exit code 2, nothing written."""
    from hymba.cli import main

    monkeypatch.setattr(torch.distributed, "is_gloo_available", lambda: False)
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out), "--set", "train.parallel=fsdp"]) == 2
    assert capsys.readouterr().err == (
        "hymba train: error: train.parallel='fsdp' on CPU needs the gloo backend, which this PyTorch build lacks\n"
    )
    assert not out.exists()


def test_world_of_one_fsdp_without_torchrun(ref, config, tmp_path):
    """``train.parallel=fsdp`` in a plain process: a world of one, the same path, the same numbers."""
    out = tmp_path / "run"
    one_process(config, out, "train.batch_size=4", "train.parallel=fsdp")
    assert_same_run(ref, out, range(1, 7))
    assert not torch.distributed.is_initialized()  # the process group it set up is gone


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_world_of_one_on_nccl(config, tmp_path, mode):
    """torchrun with one process on one GPU: DDP / FSDP2 over NCCL train like the plain process in fp32
    (rtol 1e-4: cuBLAS and atomics may sum in another order), and FSDP2's bf16 parameters train too."""
    cuda = ("train.device=cuda", "train.batch_size=4")
    ref = tmp_path / "ref"
    one_process(config, ref, *cuda, "train.precision=fp32")
    out = tmp_path / mode
    sets = [a for kv in (*cuda, "train.precision=fp32", f"train.parallel={mode}") for a in ("--set", kv)]
    proc = torchrun("--config", str(config), "--out", str(out), *sets, nproc=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{mode.upper()} over 1 process(es), nccl" in (out / "train.log").read_text()
    assert_same_run(ref, out, range(1, 7), rtol=1e-4, atol=1e-4)
    if mode == "fsdp":  # bf16 parameters, fp32 gradient reduction: close to fp32, not equal
        bf16 = tmp_path / "bf16"
        proc = torchrun("--config", str(config), "--out", str(bf16), "--set", cuda[0], "--set", cuda[1],
                        "--set", "train.parallel=fsdp", nproc=1)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert final(bf16)["val_loss"] == pytest.approx(final(ref)["val_loss"], rel=0.02)


# ---- units ----------------------------------------------------------------------------------------------
def test_rank_slices_make_up_the_global_batch():
    tokens = torch.randint(0, 300, (5000,)).numpy()
    whole = TrainBatches(tokens, 16, 6, seed=3).batch(7)
    parts = [TrainBatches(tokens, 16, 2, seed=3, rank=r, world_size=3).batch(7) for r in range(3)]
    for i in range(2):
        assert torch.equal(torch.cat([p[i] for p in parts]), whole[i])
    assert not torch.equal(parts[0][0], parts[1][0])


def test_resume_state_needs_a_world_size_that_divides_the_global_batch():
    tokens = torch.randint(0, 300, (5000,)).numpy()
    saved = TrainBatches(tokens, 16, 3, seed=0).state_dict()  # a global batch of 3 on one rank
    with pytest.raises(ValueError, match="launch a number of ranks that divides 3"):
        TrainBatches(tokens, 16, 1, seed=0, rank=0, world_size=2).load_state_dict(saved)
    ok = TrainBatches(tokens, 16, 1, seed=0, rank=2, world_size=3)
    ok.load_state_dict({**saved, "next_index": 5})
    assert ok.next_index == 5


def test_launch_and_mode():
    assert parallel.Launch.from_env({}) == parallel.Launch()
    env = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}
    assert parallel.Launch.from_env(env) == parallel.Launch(3, 1, 4, 2, True)
    with pytest.raises(ValueError, match="RANK='x'"):
        parallel.Launch.from_env({**env, "RANK": "x"})
    assert parallel.resolve_mode("auto", 1) == "none" and parallel.resolve_mode("auto", 2) == "ddp"
    assert parallel.resolve_mode("fsdp", 1) == "fsdp"
    with pytest.raises(UsageError, match="train.parallel='none' with 2 torchrun processes"):
        parallel.resolve_mode("none", 2)


def test_parallel_field_is_validated():
    with pytest.raises(ValueError, match=r"train.parallel='zero' is invalid: expected one of auto, none, ddp, fsdp"):
        RunConfig.load(None, ["train.parallel='zero'"])
