"""Config validation: every float field is finite and in range, errors name the key as `--set` spells it."""

import dataclasses
import math
import typing

import pytest

from hymba.config import COMPILE_MIN_STEPS, DataConfig, ModelConfig, RunConfig, TrainConfig, tiny_model
from hymba.eval.mqar import MQARSettings

SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}
FLOAT_FIELDS = [
    (section, f.name)
    for section, cls in SECTIONS.items()
    for f in dataclasses.fields(cls)
    if typing.get_type_hints(cls)[f.name] is float
]


def test_every_section_has_float_fields_to_check():
    assert {s for s, _ in FLOAT_FIELDS} == set(SECTIONS) and len(FLOAT_FIELDS) >= 15


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("section, name", FLOAT_FIELDS, ids=[f"{s}.{n}" for s, n in FLOAT_FIELDS])
def test_non_finite_floats_are_rejected_by_name(section, name, value):
    with pytest.raises(ValueError, match=rf"^{section}\.{name}={value!r} is invalid"):
        RunConfig.load(None, [f"{section}.{name}={value}"])


@pytest.mark.parametrize(
    "item",
    [
        "model.init_std=-1",
        "model.init_std=0",
        "model.dt_min=-1",
        "model.dt_min=0",
        "model.dt_max=-1",
        "model.norm_eps=-1",
        "model.norm_eps=0",
        "model.rope_base=0",
        "model.dt_init_floor=-1",
        "train.lr=0",
        "train.eps=0",
        "train.eps=-1",
        "train.weight_decay=-0.1",
        "train.grad_clip=-1",
        "train.peak_flops=-1",
    ],
)
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


# ---- one loader and one set of checks for every TOML section (issue 13) -------------------------------------
def _ablation_sections():
    from hymba.ablation.settings import SECTIONS as ABLATION_SECTIONS

    return ABLATION_SECTIONS


def test_every_toml_section_is_a_config_section_named_as_in_toml():
    from hymba.config import Section

    sections = {**SECTIONS, **_ablation_sections()}
    assert set(sections) == {"model", "data", "train", "bench", "recall"}
    for name, cls in sections.items():
        assert issubclass(cls, Section) and cls.SECTION == name, name


RECALL_FLOATS = [
    f.name for f in dataclasses.fields(MQARSettings) if typing.get_type_hints(MQARSettings)[f.name] is float
]


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("name", RECALL_FLOATS)
def test_non_finite_recall_floats_are_rejected_by_name(name, value):
    from hymba.ablation.settings import AblationSettings

    assert len(RECALL_FLOATS) >= 3
    with pytest.raises(ValueError, match=rf"^recall\.{name}={value!r} is invalid: must be a finite number"):
        AblationSettings.load("micro", [f"recall.{name}={value}"])


@pytest.mark.parametrize(
    "item, valid",
    [
        ("recall.lrs=[0.0]", "expected a non-empty list of distinct learning rates > 0"),
        ("recall.lrs=[1e-3, nan]", "expected a non-empty list of distinct learning rates > 0"),
        ("recall.lrs=[]", "expected a non-empty list of distinct learning rates > 0"),
        ("recall.lrs=[1e-3, 1e-3]", "expected a non-empty list of distinct learning rates > 0"),
        ("recall.seeds=0", "must be a positive integer"),
        ("recall.eval_every=0", "must be a positive integer"),
        ("recall.n_layers=0", "must be a positive integer (or unset: the row's value)"),
        ("recall.attn_backend=cuda", "expected one of auto, sdpa, flex, triton (or unset: the row's value)"),
        ("recall.power_a=0", "must be > 0"),
        ("recall.weight_decay=-1", "must be >= 0"),
        ("recall.grad_clip=-1", "must be >= 0"),
        ("recall.train_steps=0", "must be a positive integer"),
        ("recall.warmup_steps=-1", "must be an integer >= 0"),
        ("recall.lr_schedule=linear", "expected one of cosine, constant"),
        ("recall.target=2", "must lie in (0, 1]"),
        ("recall.vocab=2", "must be an integer >= 4"),
        ("recall.train=[[8, 4]]", "the setting [8, 4] has seq_len=8: 4 pairs need seq_len >= 16"),
        ("recall.eval=[[32, 2], [64, 40]]", "the setting [64, 40] has pairs=40: vocab=32 offers 15 keys"),
        ("bench.batch=0", "must be a positive integer"),
        ("bench.warmup=-1", "must be an integer >= 0"),
        ("bench.dtype=fp8", "expected one of auto, fp32, bf16, fp16"),
    ],
)
def test_ablation_section_errors_name_the_key_as_set_spells_it(item, valid):
    from hymba.ablation.settings import AblationSettings

    key = item.partition("=")[0]
    with pytest.raises(ValueError) as e:
        AblationSettings.load("micro", [item])
    message = str(e.value)
    assert message.startswith(f"{key}=") and " is invalid: " in message and valid in message, message


def test_backend_names_come_from_the_kernels_registries(monkeypatch):
    import hymba.kernels.attention as attention
    import hymba.kernels.scan as scan
    from hymba.config.model import backends

    for field, registry in (("attn_backend", attention.BACKENDS), ("scan_backend", scan.BACKENDS)):
        assert all(getattr(ModelConfig(**{field: b}), field) == b for b in registry)
        with pytest.raises(
            ValueError, match=rf"^model\.{field}='fast' is invalid: expected one of " + ", ".join(registry) + "$"
        ):
            ModelConfig(**{field: "fast"})
    monkeypatch.setattr(scan, "BACKENDS", (*scan.BACKENDS, "new_kernel"))
    backends.cache_clear()
    try:
        assert ModelConfig(scan_backend="new_kernel").scan_backend == "new_kernel"
    finally:
        backends.cache_clear()


def test_config_imports_neither_presets_nor_triton():
    """The config package sits below presets (presets reads config, never the other way) and stays cheap."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    import hymba.config

    for path in Path(hymba.config.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n.startswith("hymba.presets") for n in names), path
    code = (
        "import sys; from hymba.config import ModelConfig, RunConfig, tiny_model; RunConfig.load(None); "
        "ModelConfig(scan_backend='triton', attn_backend='flex'); tiny_model(); "
        "print(sorted(m for m in sys.modules if m == 'triton' or m.startswith(('triton.', 'hymba.presets'))))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr[-2000:])


# ---- a run TOML may start from a roadmap scale ---------------------------------------------------------------
def test_a_run_toml_starts_from_the_scale_it_names(tmp_path):
    from hymba.config import scale_settings

    path = tmp_path / "run.toml"
    path.write_text('scale = "seed"\n\n[train]\nmax_steps = 5\n')
    cfg = RunConfig.load(path, ["data.char_budget=1000"])
    seed = scale_settings("seed")
    assert cfg.model == ModelConfig.from_dict(seed["model"])
    assert cfg.data == DataConfig.from_dict({**seed["data"], "char_budget": 1000})
    assert cfg.train == TrainConfig.from_dict({**seed["train"], "max_steps": 5})
    assert cfg.train != TrainConfig.from_dict(seed["train"]) and cfg.model != ModelConfig()


@pytest.mark.parametrize("line", ['scale = "huge"', "scale = 3"])
def test_an_unknown_scale_names_the_file_and_lists_the_scales(tmp_path, line):
    path = tmp_path / "run.toml"
    path.write_text(line + "\n")
    with pytest.raises(
        ValueError,
        match=rf"^{path}: scale = .* is not a scale of roadmap.toml; expected one of "
        "tiny, seed, paper",
    ):
        RunConfig.load(path)


def test_tiny_toml_is_derived_from_the_tiny_scale_not_copied():
    import tomllib

    from hymba.config import scale_settings

    text = tomllib.loads(open("configs/train/tiny.toml", encoding="utf-8").read())
    assert text["scale"] == "tiny" and "model" not in text  # the model is the scale's, not a copy
    tiny = scale_settings("tiny")
    for section in ("data", "train"):  # the file keeps only what differs from the scale
        assert all(tiny[section].get(k) != v for k, v in text[section].items()), section
    assert RunConfig.load("configs/train/tiny.toml").model == tiny_model()


def test_train_compile_auto_compiles_on_cuda_only_and_rejects_other_values():
    """``train.compile = "auto"`` (the default) compiles long runs on CUDA, never on CPU; true/false force it; any other
    value is one error naming the key, from TOML or ``--set`` alike."""
    assert TrainConfig().compile == "auto"
    long, short = TrainConfig(max_steps=COMPILE_MIN_STEPS), TrainConfig(max_steps=COMPILE_MIN_STEPS - 1)
    assert long.compiles("cuda") and not long.compiles("cpu") and not short.compiles("cuda")
    assert TrainConfig(compile=True).compiles("cpu") and not TrainConfig(compile=False).compiles("cuda")
    with pytest.raises(ValueError, match=r"train.compile='fast' is invalid"):
        TrainConfig(compile="fast")
    with pytest.raises(ValueError, match=r"compile = 'fast' has the wrong type"):
        TrainConfig.from_dict({"compile": "fast"})
