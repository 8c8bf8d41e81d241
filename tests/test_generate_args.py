"""``HymbaLM.generate`` checks its arguments at the entry."""

import math

import pytest
import torch

from hymba import HymbaLM, ModelConfig


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return HymbaLM(ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, n_meta_tokens=2, d_state=8)).eval()


def test_zero_new_tokens_is_an_empty_result(model):
    ids = torch.randint(0, 64, (3, 5))
    out = model.generate(ids, 0)
    assert out.shape == (3, 0) and out.dtype == ids.dtype


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(max_new_tokens=-1), "max_new_tokens=-1"),
        (dict(max_new_tokens=2.0), "max_new_tokens=2.0"),
        (dict(max_new_tokens=2, temperature=-0.5), "temperature=-0.5"),
        (dict(max_new_tokens=2, temperature=math.nan), "temperature=nan"),
        (dict(max_new_tokens=2, temperature=math.inf), "temperature=inf"),
        (dict(max_new_tokens=2, temperature=1.0, top_k=0), "top_k=0"),
    ],
)
def test_bad_arguments_name_themselves(model, kwargs, name):
    with pytest.raises(ValueError, match=rf"generate\({name}\)"):
        model.generate(torch.randint(0, 64, (2, 4)), **kwargs)


def test_valid_arguments_still_generate(model):
    out = model.generate(torch.randint(0, 64, (2, 4)), 3, temperature=0.7, top_k=5, seed=1)
    assert out.shape == (2, 3)
