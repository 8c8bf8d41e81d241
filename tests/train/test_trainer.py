"""Optimizer groups, schedule, evaluation against an independent reference, training on the built-in corpus."""

import dataclasses
import importlib.util
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from hymba.config import ModelConfig, TrainConfig
from hymba.model import HymbaLM, ModelOutput
from hymba.train import TrainingDiverged, build_optimizer, evaluate, lr_at, train


def test_lr_schedule_warmup_then_cosine():
    c = TrainConfig(lr=1.0, warmup_steps=4, max_steps=14, min_lr_ratio=0.1)
    assert [lr_at(s, c) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(9, c) == pytest.approx(0.55)  # halfway through the decay: (1 + 0.1) / 2
    assert lr_at(14, c) == pytest.approx(0.1) and lr_at(100, c) == pytest.approx(0.1)
    assert all(lr_at(s, c) >= lr_at(s + 1, c) for s in range(4, 20))


def test_no_weight_decay_on_norms_embeddings_meta_tokens():
    model = HymbaLM(ModelConfig(d_model=32, n_layers=2, n_heads=2, n_meta_tokens=2))
    opt = build_optimizer(model, TrainConfig(weight_decay=0.1))
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in opt.param_groups[0]["params"]}
    plain = {names[id(p)] for p in opt.param_groups[1]["params"]}
    assert opt.param_groups[0]["weight_decay"] == 0.1 and opt.param_groups[1]["weight_decay"] == 0.0
    assert {"embed.weight", "meta_tokens", "norm.weight", "layers.0.ffn_norm.weight"} <= plain
    assert "layers.0.ffn.w_gate_up.weight" in decayed and "layers.0.in_proj.weight" in decayed
    assert not any("norm" in n or "embed" in n or "bias" in n for n in decayed)
    assert len(decayed | plain) == len(list(model.parameters()))


class Bigram(nn.Module):
    """Logits depend only on the current token: the exact loss is a sum over consecutive pairs."""

    def __init__(self, vocab: int):
        super().__init__()
        self.table = nn.Parameter(torch.randn(vocab, vocab))

    def forward(self, x, labels=None):
        return ModelOutput(self.table[x], None)


def test_evaluate_is_token_weighted_over_the_whole_split():
    vocab, n = 11, 203  # 202 targets: 3 full windows of 64 and a short one of 10
    tokens = np.random.default_rng(0).integers(0, vocab, n).astype(np.uint16)
    model = Bigram(vocab)
    logp = torch.log_softmax(model.table.detach().double(), -1).numpy()
    nll = -logp[tokens[:-1], tokens[1:]]
    hits = logp[tokens[:-1]].argmax(-1) == tokens[1:]
    got = evaluate(model, tokens, seq_len=64, batch_size=3, device="cpu")
    assert got["tokens"] == n - 1
    assert got["loss"] == pytest.approx(nll.mean(), rel=1e-6)
    assert got["ppl"] == pytest.approx(math.exp(nll.mean()), rel=1e-6)
    assert got["acc"] == pytest.approx(hits.mean())


def test_loss_decreases_on_builtin_corpus(small_run, tmp_path):
    cfg = small_run(max_steps=25, eval_every=0)
    result = train(cfg, tmp_path / "run")
    losses = [r["loss"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").open()) if "loss" in r]
    assert len(losses) == 25
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3
    assert result.val_loss < math.log(result.vocab_size) - 0.5  # well below a uniform guess
    assert result.val_ppl == pytest.approx(math.exp(result.val_loss))
    assert 0 < result.val_acc < 1 and result.train_tokens_per_s > 0 and result.mfu is None
    assert result.steps == 25 and result.n_params == sum(p.numel() for p in result.model.parameters())


def test_run_directory_is_loadable_by_hymba_eval(small_run, tmp_path):
    from hymba.train.checkpoint import load_run

    out = tmp_path / "run"
    result = train(small_run(max_steps=2), out)
    for name in (
        "config.json",
        "config.toml",
        "run.json",
        "train.log",
        "metrics.jsonl",
        "results.json",
        "model.safetensors",
        "tokenizer.json",
        "checkpoints/latest",
    ):
        assert (out / name).is_file(), name
    run = json.loads((out / "run.json").read_text())
    assert len(run["git"]["commit"]) in (40, len("unknown"))
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["vocab_size"] == result.vocab_size and saved["train"]["max_steps"] == 2
    model, tok, cfg = load_run(out)
    assert cfg.train.seq_len == 64 and cfg.model.vocab_size == result.vocab_size and tok.eos_id == 2
    x = torch.tensor([tok.encode("ROMEO:\nBut soft, what light")])
    torch.testing.assert_close(model(x).logits, result.model(x).logits, rtol=0, atol=0)


def test_nan_guard_stops_with_a_clear_error(small_run, tmp_path):
    cfg = small_run(max_steps=3)
    broken = cfg.model.replace(init_std=1e30)  # activations overflow to inf at the first step
    with pytest.raises(TrainingDiverged, match=r"training diverged at step 1: .*nan"):
        train(cfg, tmp_path / "run", model_config_override=broken)


def test_missing_corpus_is_a_clear_error(small_run, tmp_path):
    cfg = small_run()
    cfg.data.source = str(tmp_path / "missing.txt")
    with pytest.raises(FileNotFoundError, match="corpus not found: .*missing.txt"):
        train(cfg, tmp_path / "run")


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed")
def test_tensorboard_without_the_package_is_a_clear_error(small_run, tmp_path):
    with pytest.raises(ValueError, match=r"train.tensorboard=true needs the tensorboard package"):
        train(small_run(tensorboard=True), tmp_path / "run")


def test_generate_cli_samples_each_prompt_as_if_alone(small_run, tmp_path, capsys):
    from hymba.cli import main
    from hymba.train.checkpoint import load_run

    out = tmp_path / "run"
    cfg = small_run(max_steps=2)  # strong weights: at 0.02 after 2 steps wrong meta K/V still picks the same tokens
    train(dataclasses.replace(cfg, model=cfg.model.replace(init_std=0.3)), out)
    prompts = ["ROMEO:", "But soft, what light through yonder"]
    argv = ["generate", str(out), "--max-new-tokens", "8", "--temperature", "0", "--json"]
    assert main(argv + [a for p in prompts for a in ("--prompt", p)]) == 0
    got = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    model, tok, _ = load_run(out)
    for line, prompt in zip(got, prompts):  # the batch is ragged: each row must match its prompt run alone
        new = model.generate(torch.tensor([tok.encode(prompt)]), 8, eos_id=tok.eos_id)[0].tolist()
        new = new[: new.index(tok.eos_id)] if tok.eos_id in new else new
        assert line == {"prompt": prompt, "completion": tok.decode(new, skip_special_tokens=True)}
    assert main(["generate", str(tmp_path / "nope"), "--prompt", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cuda_graph_steps_need_cuda_one_process_and_no_accumulation(small_run, tmp_path):
    with pytest.raises(ValueError, match=r"^train.cuda_graphs=true needs CUDA and one process, not device cpu$"):
        train(small_run(device="cpu", cuda_graphs=True), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any work
    with pytest.raises(ValueError, match=r"train.cuda_graphs=True is invalid: needs train.grad_accum = 1"):
        small_run(cuda_graphs=True, grad_accum=2)
