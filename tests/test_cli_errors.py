"""Bad input to the `hymba` command line, run as a user runs it (a subprocess): exit code 2, one line on stderr
naming the flag, config key or file, no traceback, and nothing on disk changed."""

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hymba.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from hymba.presets import ROW_NAMES

REPO = Path(__file__).resolve().parents[1]


def hymba(*args, env=None, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "hymba.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd or REPO,
        timeout=300,
    )


def fails(*args, names, env=None):
    """Run ``hymba *args``; it must exit 2 with one stderr line holding every string of ``names``."""
    r = hymba(*args, env=env)
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr[-3000:]
    for name in [names] if isinstance(names, str) else names:
        assert name in lines[0], lines[0]
    return lines[0]


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` and its contents' hash."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny trained run (`hymba train` layout), made once for the module."""
    from hymba.train.trainer import train

    root = tmp_path_factory.mktemp("cli-errors")
    cfg = RunConfig(
        model=ModelConfig(d_model=32, n_layers=2, n_heads=2, n_meta_tokens=2, d_state=8, window=16, swa_plan=[1]),
        data=DataConfig(char_budget=60_000, vocab_size=300, cache_dir=str(root / "cache")),
        train=TrainConfig(
            seq_len=32, batch_size=4, max_steps=2, warmup_steps=1, log_every=1, progress=False, throughput_skip_steps=1
        ),
    )
    train(cfg, root / "run")
    return root / "run"


@pytest.fixture
def run_copy(run_dir, tmp_path):
    shutil.copytree(run_dir, tmp_path / "run")
    return tmp_path / "run"


# ---- item 11 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["bench", "generate"])
def test_unknown_device_names_the_flag(command, run_dir):
    args = (
        ["bench", "--row", "1", "--prompt-len", "8", "--batch", "1", "--new-tokens", "1"]
        if command == "bench"
        else ["generate", run_dir, "--prompt", "hi"]
    )
    fails(*args, "--device", "tpu", names=["--device tpu", "cpu", "cuda"])


def test_nan_temperature_is_an_error(run_dir):
    fails("generate", run_dir, "--prompt", "hi", "--temperature", "nan", names="--temperature nan")


def test_corrupt_tokenizer_json_names_the_file(run_copy):
    (run_copy / "tokenizer.json").write_text('{"version": ')
    before = snapshot(run_copy)
    fails("generate", run_copy, "--prompt", "hi", names=str(run_copy / "tokenizer.json"))
    assert snapshot(run_copy) == before


def test_long_prompt_is_refused_before_allocating(run_dir):
    fails("generate", run_dir, "--prompt", "a" * 100_000, names=["--prompt 1", "tokens", "--max-length"])


@pytest.mark.parametrize(
    "item, key",
    [
        ("model.init_std=-1", "model.init_std=-1"),
        ("model.dt_min=-1", "model.dt_min=-1"),
        ("model.norm_eps=-1", "model.norm_eps=-1"),
        ("train.lr=inf", "train.lr=inf"),
        ("train.grad_clip=nan", "train.grad_clip=nan"),
    ],
)
def test_bad_config_value_names_the_key(item, key, tmp_path):
    fails("train", "--out", tmp_path / "out", "--set", item, names=key)
    assert not (tmp_path / "out").exists()


def _offline(tmp_path):
    return {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}


def test_hub_corpus_without_network(tmp_path):
    fails(
        "train",
        "--out",
        tmp_path / "out",
        "--set",
        "data.source=nobody-here/no-such-dataset",
        "--set",
        f"data.cache_dir={tmp_path / 'cache'}",
        env=_offline(tmp_path),
        names=["data.source='nobody-here/no-such-dataset'", "network"],
    )


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="needs the eval extra")
def test_eval_task_without_network(run_copy, tmp_path):
    before = snapshot(run_copy)
    fails(
        "eval",
        run_copy,
        "--tasks",
        "piqa",
        "--limit",
        "2",
        "--device",
        "cpu",
        env=_offline(tmp_path),
        names=["--tasks piqa", "network"],
    )
    assert snapshot(run_copy) == before  # no lm_eval.json written


def test_hub_loader_warnings_are_printed_once(tmp_path):
    """huggingface_hub logs through its own stderr handler; `hymba train`'s root handler must not repeat it."""
    script = (
        "import logging, sys, datasets\n"
        "def offline(*a, **k):\n"
        "    logging.getLogger('huggingface_hub.utils._http').warning('Retrying in 1s [Retry 1/5].')\n"
        "    raise ConnectionError(\"Couldn't reach 'x/y' on the Hub (LocalEntryNotFoundError)\")\n"
        "datasets.load_dataset = offline\n"
        "from hymba.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "train",
            "--out",
            str(tmp_path / "out"),
            "--set",
            "data.source=x/y",
            "--set",
            f"data.cache_dir={tmp_path / 'cache'}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("Retrying in 1s") == 1, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("hymba train: error: data.source='x/y'"), r.stderr


# ---- item 12 -------------------------------------------------------------------------------------------
def test_non_utf8_corpus_names_the_file(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 au lait\n".encode("latin-1") * 100)
    fails(
        "train",
        "--out",
        tmp_path / "out",
        "--set",
        f"data.source={bad}",
        "--set",
        f"data.cache_dir={tmp_path / 'cache'}",
        names=[str(bad), "UTF-8"],
    )


def test_non_utf8_config_names_the_file(tmp_path):
    bad = tmp_path / "model.toml"
    bad.write_bytes("[model]\n# r\xe9sum\xe9\nd_model = 64\n".encode("latin-1"))
    fails("cache-size", "--config", bad, names=[str(bad), "UTF-8"])


def test_corrupt_config_json_names_the_file(run_copy):
    (run_copy / "config.json").write_text('{"model": {"d_model": 32,')
    before = snapshot(run_copy)
    fails("generate", run_copy, "--prompt", "hi", names=str(run_copy / "config.json"))
    assert snapshot(run_copy) == before


# ---- item 13 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["cache-size", "bench"])
def test_row_zero_is_an_error(command):
    fails(command, "--row", "0", names=["--row 0", f"1..{max(ROW_NAMES)}"])


def test_reversed_row_range_says_so(tmp_path):
    fails("ablate", "--rows", "5-3", "--out", tmp_path / "abl", names=["5-3", "reversed"])
    assert not (tmp_path / "abl").exists()


def test_report_on_a_training_run_says_what_it_is(run_copy):
    before = snapshot(run_copy)
    fails("report", run_copy, names=[str(run_copy), "training run", "hymba ablate"])
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("command", ["cache-size", "bench"])
def test_preset_error_lists_what_help_offers(command):
    line = fails(command, "--row", "3", "--preset", "huge", names="--preset huge")
    offered = line.rsplit("expected one of ", 1)[1].split(", ")
    help_text = hymba(command, "--help").stdout
    preset_help = help_text[help_text.index("--preset") :]
    assert "{" + ",".join(offered) + "}" in preset_help.split()[1]
    assert "micro" not in line


# ---- item 16 -------------------------------------------------------------------------------------------
def test_every_subcommand_and_flag_is_described_with_its_default():
    import argparse

    from hymba.cli import COMMANDS, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(COMMANDS)
    for name, p in sub.choices.items():
        assert p.description and "\n" not in p.description.strip(), name
        for action in p._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue  # help itself, or a hidden test hook (ablate --cpu-workers)
            flag = action.option_strings[0] if action.option_strings else action.dest
            assert action.help, f"hymba {name} {flag} has no help text"
            shown = p._get_formatter()._expand_help(action)
            if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._AppendAction)):
                continue  # a switch, or a repeatable flag (default: none given)
            if action.default not in (None, [], argparse.SUPPRESS) and action.required is False:
                assert "default" in shown and str(action.default) in shown, f"hymba {name} {flag}: {shown!r}"
            elif action.option_strings and not action.required:
                assert "default" in shown, f"hymba {name} {flag} does not say what happens by default: {shown!r}"


def test_version():
    from hymba import __version__

    r = hymba("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"hymba {__version__}"
