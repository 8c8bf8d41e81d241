"""hymba.rundir: the run-directory names and what kind of directory a path is."""

from hymba.rundir import RunDir


def test_a_training_run_and_an_ablation_are_told_apart(tmp_path):
    run = RunDir(tmp_path / "run")
    assert not run.is_train_run() and not run.is_ablation() and run.leftovers() == []
    run.path.mkdir()
    run.config_json.write_text("{}")
    run.lock.write_text("")
    assert run.is_train_run() and not run.is_ablation() and run.leftovers() == ["config.json"]

    abl = RunDir(str(tmp_path / "abl"))
    row = abl.row_run(3)
    row.path.mkdir(parents=True)
    row.config_json.write_text("{}")
    assert abl.is_ablation() and not abl.is_train_run() and not row.is_ablation() and row.is_train_run()
    assert row.path == tmp_path / "abl" / RunDir.row_run_name(3) == tmp_path / "abl" / "rows" / "3" / "train"
    assert abl.row_error(3) == tmp_path / "abl" / "rows" / "3" / "error.txt"


def test_checkpoint_names(tmp_path):
    rd = RunDir(tmp_path)
    assert rd.checkpoint(12) == tmp_path / "checkpoints" / "step_0000012"
    assert rd.checkpoint(12).match(rd.CHECKPOINT_GLOB)
    assert rd.latest == tmp_path / "checkpoints" / "latest" and rd.weights.name == "model.safetensors"
