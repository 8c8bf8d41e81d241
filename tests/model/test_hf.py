"""hymba.hf: the transformers 5 classes load a released-layout directory through AutoModelForCausalLM, and their
forward and generate agree with HymbaLM (the ``hf`` extra; CI installs it)."""

import json

import pytest
import torch
import torch.nn.functional as F

from hymba.model import HymbaLM
from hymba.model.hymba import left_pad

transformers = pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")


@pytest.fixture(scope="module")
def hf():
    import hymba.hf

    return hymba.hf


def test_auto_classes_load_a_released_directory(hf, released_dir):
    from transformers import AutoConfig, AutoModelForCausalLM

    path, _, _ = released_dir
    config = AutoConfig.from_pretrained(path)
    assert isinstance(config, hf.HymbaConfig) and config.num_memory_tokens == 3
    model = AutoModelForCausalLM.from_pretrained(path)  # config.json has auto_map: no remote code is run
    assert isinstance(model, hf.HymbaForCausalLM)
    ours = HymbaLM.from_pretrained(path)
    assert model.model.config == ours.config and model.model.config.window == 4
    ids = torch.randint(0, ours.config.vocab_size, (2, 13))
    out = model(ids, labels=ids)
    torch.testing.assert_close(out.logits, ours(ids).logits, rtol=0, atol=0)
    # transformers' convention: logits at t score labels at t + 1
    expected = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    torch.testing.assert_close(out.loss, expected)


def test_generate_left_padded_batch(hf, released_dir):
    path, _, tok = released_dir
    model = hf.HymbaForCausalLM.from_pretrained(path)
    ours = HymbaLM.from_pretrained(path)
    prompts = [tok.encode(p) for p in ("the quick brown fox jumps", "pack", "over the lazy dog")]
    ids, mask = left_pad(prompts, pad_id=0)
    out = model.generate(ids, attention_mask=mask, max_new_tokens=7, do_sample=False)
    assert out.shape == (3, ids.shape[1] + 7) and torch.equal(out[:, : ids.shape[1]], ids)
    for row, p in zip(out, prompts):
        alone = ours.generate(torch.tensor([p]), 7)[0]
        n = int((alone == 2).nonzero()[0]) + 1 if (alone == 2).any() else 7  # stops at </s>, then padding
        assert torch.equal(row[ids.shape[1] : ids.shape[1] + n], alone[:n])
        assert (row[ids.shape[1] + n :] == 0).all()
    sampled = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=True, temperature=0.7, top_k=5)
    again = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=True, temperature=0.7, top_k=5)
    assert sampled.shape == again.shape == (3, ids.shape[1] + 5)


def test_unsupported_arguments_are_errors(hf, released_dir):
    path, _, _ = released_dir
    model = hf.HymbaForCausalLM.from_pretrained(path)
    ids = torch.ones(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="num_beams"):
        model.generate(ids, max_new_tokens=2, num_beams=4)
    with pytest.raises(ValueError, match="past_key_values"):
        model(ids, past_key_values=object())
    with pytest.raises(ValueError, match="load_in_8bit"):
        hf.HymbaForCausalLM.from_pretrained(path, load_in_8bit=True)
    # the hub arguments transformers' Auto classes pass on: harmless at their defaults, an error otherwise
    hf.HymbaForCausalLM.from_pretrained(path, force_download=False, subfolder="", cache_dir=None)
    with pytest.raises(ValueError, match="subfolder"):
        hf.HymbaForCausalLM.from_pretrained(path, subfolder="weights")
    with pytest.raises(ValueError, match="force_download"):
        hf.HymbaForCausalLM.from_pretrained(path, force_download=True)


def test_save_pretrained_writes_the_released_layout(hf, released_dir, tmp_path):
    path, _, _ = released_dir
    model = hf.HymbaForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    assert model.model.embed.weight.dtype == torch.bfloat16
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "hymba" and cfg["eos_token_id"] == 2 and cfg["torch_dtype"] == "bfloat16"
    back = HymbaLM.from_pretrained(tmp_path)
    for (k, a), (_, b) in zip(model.model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), k
