"""Presets, row ids and overrides are validated before any work: one clear line, exit code 2."""

from __future__ import annotations

import pytest

from hymba.ablation.settings import AblationSettings, parse_rows, resolve_preset
from hymba.cli import main
from hymba.presets import ROW_NAMES


def test_parse_rows():
    assert parse_rows(None) == list(range(1, len(ROW_NAMES) + 1))  # every row of roadmap.toml, ids 1..N
    assert parse_rows("13,1, 5") == [13, 1, 5]  # run order as given: priorities first
    assert parse_rows("1-3,13,2") == [1, 2, 3, 13]
    for bad in ("0", str(len(ROW_NAMES) + 1), "x", "1,,2", ""):
        with pytest.raises(ValueError, match="--rows"):
            parse_rows(bad)


def test_resolve_preset():
    assert resolve_preset("auto", cuda=True) == "seed"
    assert resolve_preset("auto", cuda=False) == "tiny"
    with pytest.raises(ValueError, match="unknown preset 'huge'.*auto, tiny, seed, seed-capacity, paper"):
        resolve_preset("huge")


def test_scales_load_and_share_run_settings():
    for preset in ("micro", "tiny", "seed", "paper"):
        s = AblationSettings.load(preset)
        models = {row: s.row_model(row) for row in ROW_NAMES}
        assert models[1].n_heads == 0 and not models[6].ssm and models[13].n_meta_tokens > 0
        assert models[12].n_meta_tokens == models[13].n_meta_tokens and models[9].n_meta_tokens == 0
    seed = AblationSettings.load("seed")
    assert (seed.model["d_model"], seed.model["n_layers"]) == (512, 12)
    assert (seed.train.seq_len, seed.train.batch_size, seed.train.max_steps) == (512, 16, 150)


def test_overrides():
    s = AblationSettings.load(
        "micro",
        [
            "train.max_steps=7",
            "model.n_meta_tokens=2",
            "bench.batch=1",
            "recall.train_steps=5",
            "data.char_budget=1000",
        ],
    )
    assert s.train.max_steps == 7 and s.bench.batch == 1 and s.recall.train_steps == 5
    assert s.row_model(13).n_meta_tokens == 2 and s.row_model(9).n_meta_tokens == 0
    assert s.fingerprint() != AblationSettings.load("micro").fingerprint()
    # cosmetic settings do not change what a result means
    assert (
        AblationSettings.load("micro", ["train.progress=true"]).fingerprint()
        == AblationSettings.load("micro").fingerprint()
    )


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--rows", "1,99"], "no row 99"),
        (["--rows", "one"], "'one' is not a row id"),
        (["--set", "train.max_step=3"], "unknown key 'max_step' in [train]"),
        (["--set", "nope.x=1"], "unknown section [nope]"),
        (["--set", "train.max_steps=abc"], "max_steps = 'abc' has the wrong type"),
        (["--set", "train.max_steps=0"], "train.max_steps=0 is invalid"),
        (["--set", "model.n_heads=2"], "model.n_heads cannot be overridden"),
        (["--set", "model.vocab_size=99"], "set data.vocab_size instead"),
        (["--set", "model.d_model=30"], "row 3 (Mamba + 8 attn heads) at preset micro"),
        (["--set", "bench.dtype=fp8"], "bench.dtype='fp8' is invalid"),
        (["--set", "trainmax_steps"], "expected section.field=value"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, message, capsys, tmp_path):
    code = main(["ablate", "--preset", "micro", "--out", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err, err
    assert err.startswith("hymba ablate: error:") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # nothing was started


def test_report_on_missing_dir_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "results.json missing" in capsys.readouterr().err
