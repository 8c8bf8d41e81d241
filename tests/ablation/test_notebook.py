"""The ablation notebook executes end to end (tiny preset, two rows, short training), so it cannot rot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

nbformat = pytest.importorskip("nbformat")  # the notebook extra; a plain GPU box lacks it
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = REPO / "notebooks" / "hymba_ablation.ipynb"


def test_notebook_runs_on_tiny_preset(tmp_path, hymba_cache, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    out = tmp_path / "nb-ablation"
    overrides = [
        "train.max_steps=3",
        "train.progress=false",
        "data.char_budget=30000",
        "data.vocab_size=300",
        "bench.prompt_len=48",
        "bench.new_tokens=4",
    ]
    params[
        0
    ].source = f'PRESET = "tiny"\nROWS = "1,13"\nOUT = {str(out)!r}\nOVERRIDES = {overrides!r}\nRECALL = False\n'
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HYMBA_CACHE", str(hymba_cache))
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert sorted(rows) == ["1", "13"] and all(r["status"] == "done" for r in rows.values())
    outputs = "".join(
        o.get("text", "") + json.dumps(o.get("data", {})) for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "Mamba heads only" in outputs and "image/png" in outputs and "spearman" in outputs
    assert not any(o.output_type == "error" for c in nb.cells if c.cell_type == "code" for o in c.outputs)
