"""`hymba train`: TOML configs, --set overrides, one-line errors naming the bad key."""

import json
import subprocess
import sys

import pytest

from hymba.cli import main
from hymba.config import DataConfig, RunConfig, TrainConfig, tiny_model


def _hymba(capsys, *args) -> tuple[int, list[str]]:
    rc = main(list(args))
    return rc, capsys.readouterr().err.strip().splitlines()


def test_train_from_toml_with_overrides(tmp_path, capsys, monkeypatch, data_cache, small_toml):
    monkeypatch.setenv("HYMBA_CACHE", str(data_cache))
    (tmp_path / "run.toml").write_text(small_toml(max_steps=50))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("To be, or not to be, that is the question.\n" * 300)
    out = tmp_path / "out"
    assert (
        main(
            [
                "train",
                "--config",
                str(tmp_path / "run.toml"),
                "--out",
                str(out),
                "--set",
                "train.max_steps=3",
                "--set",
                f"data.source={corpus}",
                "--set",
                "train.lr=1e-3",
            ]
        )
        == 0
    )
    assert "val_loss" in capsys.readouterr().out
    saved = json.loads((out / "config.json").read_text())
    assert saved["train"]["max_steps"] == 3 and saved["train"]["lr"] == 1e-3 and saved["data"]["source"] == str(corpus)
    assert saved["model"]["d_model"] == 32 and saved["model"]["n_meta_tokens"] == 0  # file, not the tiny preset
    # the written config.toml reproduces the run's config
    assert RunConfig.load(out / "config.toml") == RunConfig.from_dict(saved)


@pytest.mark.parametrize(
    "content,message",
    [
        ("[train]\nmax_step = 3\n", "unknown key(s) in [{path}: train]: max_step; valid keys: seed,"),
        ('[train]\nmax_steps = "3"\n', "[{path}: train] max_steps = '3' has the wrong type: expected int"),
        ("[trian]\nmax_steps = 3\n", "{path}: unknown section(s) trian; valid sections: model, data, train"),
        ("[model]\nn_heads = 5\n", "model.n_heads=5 is invalid"),
        ('[data]\nsource = "/no/such/corpus.txt"\n', "corpus not found: /no/such/corpus.txt"),
    ],
    ids=["unknown-key", "wrong-type", "unknown-section", "invalid-value", "missing-corpus"],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path, capsys, content, message):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    rc, lines = _hymba(capsys, "train", "--config", str(path), "--out", str(tmp_path / "out"))
    assert rc == 2 and len(lines) == 1, lines
    assert message.format(path=path) in lines[0]


@pytest.mark.parametrize(
    "item,message",
    [
        ("train.max_step=3", "unknown key 'max_step' in [train]"),
        ("train.max_steps=1.5", "max_steps = 1.5 has the wrong type: expected int"),
        ("max_steps=3", "expected section.field=value"),
        ("optim.lr=1", "unknown section [optim]"),
    ],
)
def test_bad_override_is_one_line(tmp_path, capsys, item, message):
    rc, lines = _hymba(capsys, "train", "--out", str(tmp_path / "out"), "--set", item)
    assert rc == 2 and len(lines) == 1 and message in lines[0], lines


def test_errors_leave_no_traceback_in_a_real_process(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "hymba.cli",
            "train",
            "--out",
            str(tmp_path / "out"),
            "--set",
            f"data.source={tmp_path / 'missing.txt'}",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"hymba train: error: corpus not found: {tmp_path / 'missing.txt'} (no such file or directory)"
    ]


def test_default_run_is_the_tiny_model_on_the_builtin_corpus(monkeypatch, tmp_path):
    monkeypatch.setenv("HYMBA_CACHE", str(tmp_path))
    cfg = RunConfig.load(None, ["data.source=some/dataset", "train.max_steps=7"])
    assert cfg.model == tiny_model() and cfg.train.max_steps == 7 and cfg.data.source == "some/dataset"
    assert RunConfig.load(None).data.source == "builtin"
    assert DataConfig().resolved_cache_dir() == tmp_path
    assert RunConfig.load("configs/train/tiny.toml") == RunConfig.load(None)  # as its comment claims
    assert RunConfig.load(None).train.ckpt_every > 0  # a default run checkpoints mid-run
    assert TrainConfig(lr=1e-3) == RunConfig.load(None, ["train.lr=1e-3"]).train


def test_divergence_exits_1_with_one_line(tmp_path, capsys, data_cache, small_toml):
    (tmp_path / "run.toml").write_text(small_toml(max_steps=50))
    rc, lines = _hymba(
        capsys,
        "train",
        "--config",
        str(tmp_path / "run.toml"),
        "--out",
        str(tmp_path / "out"),
        "--set",
        "model.init_std=1e30",
        "--set",
        f"data.cache_dir={data_cache}",
    )
    assert rc == 1 and lines[-1].startswith("hymba train: error: training diverged at step 1")
