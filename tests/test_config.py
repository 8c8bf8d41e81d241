"""Config validation: every float field is finite and in range, errors name the key as `--set` spells it."""

import dataclasses
import math
import typing

import pytest

from hymba.config import DataConfig, ModelConfig, RunConfig, TrainConfig

SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}
FLOAT_FIELDS = [(section, f.name) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)
                if typing.get_type_hints(cls)[f.name] is float]


def test_every_section_has_float_fields_to_check():
    assert {s for s, _ in FLOAT_FIELDS} == set(SECTIONS) and len(FLOAT_FIELDS) >= 15


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("section, name", FLOAT_FIELDS, ids=[f"{s}.{n}" for s, n in FLOAT_FIELDS])
def test_non_finite_floats_are_rejected_by_name(section, name, value):
    with pytest.raises(ValueError, match=rf"^{section}\.{name}={value!r} is invalid"):
        RunConfig.load(None, [f"{section}.{name}={value}"])


@pytest.mark.parametrize("item", ["model.init_std=-1", "model.init_std=0", "model.dt_min=-1", "model.dt_min=0",
                                  "model.dt_max=-1", "model.norm_eps=-1", "model.norm_eps=0", "model.rope_base=0",
                                  "model.dt_init_floor=-1", "train.lr=0", "train.eps=0", "train.eps=-1",
                                  "train.weight_decay=-0.1", "train.grad_clip=-1", "train.peak_flops=-1"])
def test_out_of_range_floats_name_the_key(item):
    key = item.partition("=")[0]
    with pytest.raises(ValueError, match=rf"^{key}=-?[0-9.]+ is invalid: must be (>|>=) 0"):
        RunConfig.load(None, [item])


def test_dt_max_below_dt_min():
    with pytest.raises(ValueError, match=r"^model.dt_max=0.0001 is invalid: must be >= model.dt_min=0.001"):
        ModelConfig(dt_min=1e-3, dt_max=1e-4)


def test_model_errors_use_the_model_key():
    with pytest.raises(ValueError, match=r"^model.n_heads=5 is invalid"):
        ModelConfig(n_heads=5, d_model=64)
