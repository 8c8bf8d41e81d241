"""The released checkpoint format (hymba.model.pretrained): config and name conversion, save/load round trips,
sharded weights, one clear error per bad checkpoint, and generation from such a directory."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hymba.config import ModelConfig
from hymba.model import HymbaLM
from hymba.model.hymba import left_pad
from hymba.model.pretrained import (
    config_from_released,
    config_to_released,
    ntk_rope_base,
    window_from_released,
)
from hymba.train.checkpoint import load_run

# config.json of nvidia/Hymba-1.5B-Base as released
RELEASED = Path(__file__).parents[2] / "configs" / "models" / "hymba-1.5b-base.config.json"

# the tensor names of one layer in the official modeling code (HymbaDecoderLayer / HymbaBlock / HymbaMLP)
OFFICIAL_LAYER = {
    "input_layernorm.weight",
    "mamba.in_proj.weight",
    "mamba.out_proj.weight",
    "mamba.pre_avg_layernorm1.weight",
    "mamba.pre_avg_layernorm2.weight",
    "mamba.conv1d.weight",
    "mamba.conv1d.bias",
    "mamba.x_proj.0.weight",
    "mamba.dt_proj.0.weight",
    "mamba.dt_proj.0.bias",
    "mamba.A_log.0",
    "mamba.D.0",
    "mamba.dt_layernorm.weight",
    "mamba.B_layernorm.weight",
    "mamba.C_layernorm.weight",
    "pre_moe_layernorm.weight",
    "moe.experts.0.gate_proj.weight",
    "moe.experts.0.up_proj.weight",
    "moe.experts.0.down_proj.weight",
}


def test_window_and_rope_conversion_by_hand():
    assert window_from_released(1024) == 1025  # q - k <= 1024: 1025 keys
    # theta * (2 * 8192 / 2048 - 1) ** (64 / 62) = 10000 * 7 ** (32 / 31)
    assert ntk_rope_base(10000.0, 64, 8192, 2048) == pytest.approx(74534.8, abs=0.05)
    assert ntk_rope_base(10000.0, 64, 8192, 2048) == pytest.approx(10000 * 7 ** (32 / 31), rel=1e-12)
    raw = json.loads(RELEASED.read_text())
    c = config_from_released(raw)
    assert c.window == 1025 and c.rope_base == pytest.approx(74534.8, abs=0.05)
    assert c.global_layers() == [0, 15, 31] and len([i for i, p in enumerate(c.kv_producer()) if p == i]) == 17
    assert [16, 17, 18] in c.kv_groups() and c.n_meta_tokens == 128 and c.tie_embeddings
    with torch.device("meta"):
        n = sum(p.numel() for p in HymbaLM(c).parameters())
    assert n == 1_522_797_824
    # and back: the released fields the official code reads
    out = config_to_released(c)
    assert out["sliding_window"] == 1024 and out["global_attn_idx"] == [0, 15, 31]
    assert out["kv_reuse_group"] == raw["kv_reuse_group"] and out["num_memory_tokens"] == 128
    assert out["rope_type"] == "default" and out["rope_theta"] == c.rope_base


def test_released_window_sees_w_plus_one_keys(released_style):
    """With our window = W + 1 a query sees exactly the keys the official mask allows (q - k <= W): a token
    just inside that span changes the output, one just outside does not."""
    raw = released_style(300)
    W = raw["sliding_window"]
    c = config_from_released(raw).replace(
        n_layers=1, swa_plan="all", kv_share=False, kv_share_groups=None, ssm=True, n_meta_tokens=0
    )
    torch.manual_seed(1)
    m = HymbaLM(c.replace(init_std=0.5)).eval()
    block = m.layers[0]
    T = 12
    x = torch.randn(1, T, c.d_model)
    q, k, v, *_ = block.in_proj(block.mixer_norm(x)).split(block.split, dim=-1)
    ctx = m._context(torch.arange(T)[None], None, x.dtype)
    out = block._attention(q, k, v, ctx)
    for far in (T - 1 - W, T - 2 - W):  # q - k = W (visible), W + 1 (not)
        v2 = v.clone()
        v2[0, far] += 5.0
        ctx = m._context(torch.arange(T)[None], None, x.dtype)
        changed = not torch.allclose(block._attention(q, k, v2, ctx)[0, -1], out[0, -1])
        assert changed == (T - 1 - far <= W)


def test_loaded_rope_frequencies_are_the_ntk_ones(released_dir):
    path, _, _ = released_dir
    m = HymbaLM.from_pretrained(path)
    d = m.config.qk_head_dim
    base = 10000.0 * (2 * 512 / 128 - 1) ** (d / (d - 2))
    expected = 1.0 / base ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    torch.testing.assert_close(m.rotary.inv_freq, expected, rtol=0, atol=0)


def test_official_names_and_round_trip(released_dir, tmp_path):
    path, model, _ = released_dir
    names = set(load_file(path / "model.safetensors"))
    L = model.config.n_layers
    expected = {f"model.layers.{i}.{n}" for i in range(L) for n in OFFICIAL_LAYER}
    expected |= {"model.embed_tokens.weight", "model.memory_tokens", "model.final_layernorm.weight"}
    assert names == expected  # tied: no lm_head.weight
    loaded = HymbaLM.from_pretrained(path)
    assert loaded.config == model.config
    assert loaded.lm_head.weight is loaded.embed.weight
    ids = torch.randint(0, model.config.vocab_size, (2, 17))  # longer than the window (4)
    model.eval()
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    # save again, load again: lossless
    loaded.save_pretrained(tmp_path / "again")
    again = HymbaLM.from_pretrained(tmp_path / "again")
    for (k, a), (_, b) in zip(loaded.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    cfg = json.loads((tmp_path / "again" / "config.json").read_text())
    assert cfg["sliding_window"] == 3 and cfg["kv_reuse_group"] == [[1, 2, 3]]
    assert cfg["v_head_dim"] == model.config.value_head_dim == model.config.d_inner // model.config.n_heads
    from safetensors import safe_open

    with safe_open(str(tmp_path / "again" / "model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}  # the official loader needs it


def test_released_gate_and_up_are_the_ffn_gate_and_up(released_dir):
    """Our FFN stacks the official gate_proj and up_proj: the FFN is down(silu(x gate^T) * x up^T) with the
    file's tensors, and the earlier layout (w_gate, w_up apart) loads into the stacked one."""
    path, _, _ = released_dir
    state = load_file(path / "model.safetensors")
    model = HymbaLM.from_pretrained(path)
    p = "model.layers.1.moe.experts.0."
    gate, up, down = (state[p + n + "_proj.weight"] for n in ("gate", "up", "down"))
    x = torch.randn(5, gate.shape[1])
    want = (torch.nn.functional.silu(x @ gate.T) * (x @ up.T)) @ down.T
    with torch.no_grad():
        torch.testing.assert_close(model.layers[1].ffn(x), want)
    old = {k: v for k, v in model.state_dict().items() if "w_gate_up" not in k}
    for i in range(model.config.n_layers):
        gu = model.layers[i].ffn.w_gate_up.weight
        old[f"layers.{i}.ffn.w_gate.weight"], old[f"layers.{i}.ffn.w_up.weight"] = gu.detach().chunk(2)
    again = HymbaLM(model.config)
    again.load_state_dict(old, strict=True)
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k


def test_untied_head_and_dtype(tmp_path):
    c = ModelConfig(vocab_size=50, d_model=32, n_heads=4, n_layers=2, tie_embeddings=False, init_std=0.2)
    m = HymbaLM(c).eval()
    m.save_pretrained(tmp_path)
    assert "lm_head.weight" in load_file(tmp_path / "model.safetensors")
    half = HymbaLM.from_pretrained(tmp_path, dtype="bf16")
    assert half.lm_head.weight.dtype == torch.bfloat16 and half.lm_head.weight is not half.embed.weight
    full = HymbaLM.from_pretrained(tmp_path)
    ids = torch.randint(0, 50, (1, 9))
    torch.testing.assert_close(full(ids).logits, m(ids).logits, rtol=0, atol=0)


def test_sharded_weights(released_dir, tmp_path):
    path, model, _ = released_dir
    model.save_pretrained(tmp_path, max_shard_bytes=20_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and not (tmp_path / "model.safetensors").exists()
    assert all((tmp_path / s).is_file() for s in shards)
    loaded = HymbaLM.from_pretrained(tmp_path)
    ids = torch.randint(0, model.config.vocab_size, (1, 11))
    torch.testing.assert_close(loaded(ids).logits, model.eval()(ids).logits, rtol=0, atol=0)
    model.save_pretrained(tmp_path)  # back to one file: the shards go
    assert not (tmp_path / "model.safetensors.index.json").exists() and not (tmp_path / shards[0]).exists()
    HymbaLM.from_pretrained(tmp_path)


def _copy(path, dst):
    dst.mkdir()
    for f in path.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize(
    "damage, message",
    [
        ("shape", "model.layers.2.mamba.in_proj.weight has shape [1, 32] but config.json gives"),
        ("missing", "missing tensor model.layers.1.mamba.D.0"),
        ("missing part", "missing tensor model.layers.1.moe.experts.0.up_proj.weight"),
        ("part shape", "model.layers.0.moe.experts.0.gate_proj.weight has shape [3, 32] but config.json gives"),
        ("unexpected", "unexpected tensor model.layers.0.mamba.extra"),
        ("field", "num_experts=4 is not supported"),
        ("rope", 'rope_type="dynamic_ntk" is not supported'),
    ],
)
def test_bad_checkpoint_is_one_clear_error(released_dir, tmp_path, damage, message):
    path, _, _ = released_dir
    bad = _copy(path, tmp_path / "bad")
    state = load_file(bad / "model.safetensors")
    raw = json.loads((bad / "config.json").read_text())
    if damage == "shape":
        state["model.layers.2.mamba.in_proj.weight"] = torch.zeros(1, 32)
    elif damage == "missing":
        del state["model.layers.1.mamba.D.0"]
    elif damage == "missing part":
        del state["model.layers.1.moe.experts.0.up_proj.weight"]
    elif damage == "part shape":
        state["model.layers.0.moe.experts.0.gate_proj.weight"] = torch.zeros(3, 32)
    elif damage == "unexpected":
        state["model.layers.0.mamba.extra"] = torch.zeros(3)
    elif damage == "field":
        raw["num_experts"] = 4
    else:
        raw["rope_type"] = "dynamic_ntk"
    save_file(state, bad / "model.safetensors", metadata={"format": "pt"})
    (bad / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError) as e:
        HymbaLM.from_pretrained(bad)
    assert message in str(e.value)
    r = subprocess.run(
        [sys.executable, "-m", "hymba.cli", "generate", str(bad), "--prompt", "a"], capture_output=True, text=True
    )
    assert r.returncode == 2 and message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_unknown_fields_are_listed_once(caplog, released_style):
    raw = released_style(300)
    raw["shiny_new_option"] = 1
    raw["another"] = "x"
    with caplog.at_level("WARNING", logger="hymba.model.pretrained"):
        config_from_released(raw)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "another, shiny_new_option" in warnings[0]


def test_unexpressible_config_is_an_error(tmp_path):
    m = HymbaLM(ModelConfig(vocab_size=50, d_model=32, n_heads=4, n_layers=2, fusion="concat"))
    with pytest.raises(ValueError, match="model.fusion='concat'"):
        m.save_pretrained(tmp_path)
    m = HymbaLM(ModelConfig(vocab_size=50, d_model=32, n_heads=4, n_layers=2, v_head_dim=8))
    with pytest.raises(ValueError, match="model.v_head_dim=8"):
        m.save_pretrained(tmp_path)


def test_generate_ragged_batch_equals_each_prompt_alone(released_dir):
    path, _, _ = released_dir
    model, tok, cfg = load_run(path)
    assert cfg.train.seq_len == 512 and tok.eos_id == 2
    prompts = [tok.encode(p) for p in ("the quick brown fox jumps", "pack", "over the lazy dog. pack my box")]
    assert len({len(p) for p in prompts}) == 3 and max(len(p) for p in prompts) > model.config.window
    ids, mask = left_pad(prompts, tok.eos_id)
    batch = model.generate(ids, 8, attention_mask=mask)
    for row, p in zip(batch, prompts):
        alone = model.generate(torch.tensor([p]), 8)[0]
        assert torch.equal(row, alone)


def test_generate_cli_on_a_released_directory(released_dir):
    path, _, _ = released_dir
    prompts = ["the quick", "pack my box with"]
    args = [sys.executable, "-m", "hymba.cli", "generate", str(path), "--temperature", "0", "--max-new-tokens", "6"]
    r = subprocess.run([*args, "--json", *sum((["--prompt", p] for p in prompts), [])], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    from hymba.eval.generate import generate_text

    model, tok, _ = load_run(path)
    expected = generate_text(model, tok, prompts, 6, temperature=0.0)
    assert [row["prompt"] for row in rows] == prompts and [row["completion"] for row in rows] == expected
    assert any(e for e in expected)


def test_train_init_starts_from_the_checkpoint(released_dir, tmp_path):
    path, model, _ = released_dir
    out = tmp_path / "run"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "hymba.cli",
            "train",
            "--init",
            str(path),
            "--out",
            str(out),
            *("--set", "train.max_steps=2", "--set", "train.lr=1e-12", "--set", "train.seq_len=16"),
            *("--set", "train.batch_size=2", "--set", "train.progress=false", "--set", "data.char_budget=20000"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    trained, tok, cfg = load_run(out)
    _, released_tok, _ = load_run(path)
    assert tok.tokenizer.get_vocab() == released_tok.tokenizer.get_vocab()
    assert tok.encode("the lazy dog jumps") == released_tok.encode("the lazy dog jumps")
    assert cfg.model == model.config and cfg.train.init == str(path) and tok.eos_id == 2
    start = HymbaLM.from_pretrained(path).state_dict()
    for k, v in trained.state_dict().items():  # lr 1e-12: two steps move no weight visibly; a fresh init differs
        torch.testing.assert_close(v, start[k], rtol=0, atol=1e-6, msg=k)
    # a resume continues from the run's own checkpoint, as for any run
    r = subprocess.run(
        [sys.executable, "-m", "hymba.cli", "train", "--out", str(out), "--resume", "--set", "train.max_steps=3"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "results.json").read_text())["steps"] == 3
    assert "resumed from" in (out / "train.log").read_text()


def test_train_init_errors(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "hymba.cli", "train", "--init", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "train.init=" in r.stderr and "nope" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()
    r = subprocess.run(
        [sys.executable, "-m", "hymba.cli", "train", "--init", str(tmp_path), "--out", str(tmp_path / "o"), "--resume"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "--init starts a fresh run" in r.stderr


def test_eval_cli_on_a_released_directory(released_dir, tmp_path):
    pytest.importorskip("lm_eval")
    path, _, _ = released_dir
    data = Path(__file__).parents[1] / "eval" / "data"
    out = tmp_path / "lm_eval.json"
    r = subprocess.run(
        [sys.executable, "-m", "hymba.cli", "eval", str(path), "--tasks", "hymba_toy_mc", "--include-path", str(data)]
        + ["--limit", "4", "--batch-size", "2", "--device", "cpu", "--output", str(out)],
        capture_output=True,
        text=True,
        cwd=data,
        env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf")},
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["checkpoint"] == str(path) and res["tasks"]["hymba_toy_mc"]["n"] == 4


def test_prompts_start_with_bos_when_the_tokenizer_adds_it(released_dir, tmp_path):
    from tokenizers import Tokenizer, processors

    from hymba.eval.generate import generate_text

    path, _, _ = released_dir
    assert not load_run(path)[1].prompt_bos  # the fixture's tokenizer adds nothing
    d = _copy(path, tmp_path / "bos")
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.save(str(d / "tokenizer.json"))  # as the released Llama-style tokenizer.json does
    model, t, _ = load_run(d)
    assert t.prompt_bos and t.bos_id == 1
    new = model.generate(torch.tensor([[1, *t.encode("pack my")]]), 5)[0].tolist()
    new = new[: new.index(2)] if 2 in new else new
    assert generate_text(model, t, ["pack my"], 5, temperature=0.0) == [t.decode(new, skip_special_tokens=True)]


@pytest.mark.gpu
def test_released_directory_on_cuda(released_dir):
    """The same directory on CUDA (flex attention where it serves, the Triton scan): logits as on CPU, and a
    ragged batch generates what each prompt does alone."""
    path, _, _ = released_dir
    cpu = HymbaLM.from_pretrained(path)
    gpu = HymbaLM.from_pretrained(path, device="cuda")
    ids = torch.randint(0, cpu.config.vocab_size, (2, 40))
    torch.testing.assert_close(gpu(ids.cuda()).logits.cpu(), cpu(ids).logits, rtol=1e-4, atol=1e-4)
    prompts = [ids[0, :30].tolist(), ids[1, :7].tolist(), ids[0, 5:21].tolist()]
    batch_ids, mask = left_pad(prompts, 2)
    batch = gpu.generate(batch_ids.cuda(), 6, attention_mask=mask.cuda())
    for row, p in zip(batch, prompts):
        assert torch.equal(row, gpu.generate(torch.tensor([p]).cuda(), 6)[0])
