"""A tiny checkpoint directory in NVIDIA's released layout, shared by the format and transformers tests."""

import json

import pytest
import torch

from hymba.data.tokenizer import train_unigram
from hymba.model import HymbaLM
from hymba.model.pretrained import config_from_released

TEXT = "the quick brown fox jumps over the lazy dog. " * 20 + "pack my box with five dozen liquor jugs. " * 20


def released_style_config(vocab_size: int) -> dict:
    """A tiny config.json as NVIDIA's release writes it: NTK RoPE, a KV-reuse triple, meta tokens, a window
    far smaller than the prompts, runtime fields."""
    L = 6
    return {
        "architectures": ["HymbaForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_hymba.HymbaConfig"},
        "model_type": "hymba",
        "attn_implementation": "flex",
        "attn_implementation_new": "flex",
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "num_hidden_layers": L,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 48,
        "kq_head_dim": -1,
        "v_head_dim": 16,
        "attn_hidden_size": -1,
        "kq_norm": "none",
        "mamba_d_state": 4,
        "mamba_d_conv": 4,
        "mamba_expand": 2,
        "mamba_dt_rank": 3,
        "mamba_conv_bias": True,
        "mamba_proj_bias": False,
        "mamba_inner_layernorms": True,
        "num_memory_tokens": 3,
        "memory_tokens_interspersed_every": 0,
        "global_attn_idx": [0, 5],
        "kv_reuse_group": [[1, 2, 3]],
        "kv_reuse_every_i_layer": -1,
        "kv_weight_reuse": False,
        "sliding_window": 3,
        "rope": True,
        "rope_theta": 10000.0,
        "rope_type": "ntk",
        "max_position_embeddings": 512,
        "orig_max_position_embeddings": 128,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
        "initializer_range": 0.2,
        "num_experts": 1,
        "num_experts_per_tok": 1,
        "num_mamba": 1,
        "hidden_act": "silu",
        "mlp_hidden_act": "silu",
        "attention_dropout": 0.0,
        "conv_dim": {str(i): 64 for i in range(L)},
        "layer_type": ["h"] * L,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
        "transformers_version": "4.44.0",
        "use_cache": False,
    }


@pytest.fixture
def released_style():
    """The config.json builder above, for tests that change a field."""
    return released_style_config


@pytest.fixture(scope="module")
def released_dir(tmp_path_factory):
    """A released-layout directory: the config above, weights under the official names, a tokenizer.json."""
    path = tmp_path_factory.mktemp("released")
    tok = train_unigram([TEXT], vocab_size=300, pad_token="<unk>", bos_token="<s>", eos_token="</s>")
    raw = released_style_config(tok.vocab_size)
    torch.manual_seed(0)
    model = HymbaLM(config_from_released(raw))
    with torch.no_grad():  # norms and biases away from their init, so a swapped one shows
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.3 * torch.randn_like(p))
    model.save_pretrained(path)
    (path / "config.json").write_text(json.dumps(raw, indent=2))
    tok.save(path / "tokenizer.json")
    return path, model, tok
