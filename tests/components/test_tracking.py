"""Tracking against a real SQLite MLflow store in tmp_path: nesting, lineage digests, rank gating."""

from __future__ import annotations

import pytest

from components.common import tracking
from components.common.lineage import dvc_md5, log_dataset

mlflow = pytest.importorskip("mlflow")


@pytest.fixture()
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    for var in ("MLFLOW_TRACKING_URI", "SANA_WM_PARENT_RUN_ID", "RANK", "SANA_WM_MLFLOW_ARTIFACTS"):
        monkeypatch.delenv(var, raising=False)
    tracking.init_store(uri)
    return uri


def test_noop_by_default_and_off_rank(monkeypatch, store):
    assert type(tracking.get_logger("x")) is tracking.Logger
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("RANK", "3")
    log = tracking.get_logger("x")
    assert type(log) is tracking.Logger and log.run_id is None
    with log.start_child("c") as child:  # the whole API is callable on the no-op logger
        child.log_metrics({"a": 1.0}, step=1)


def test_parent_child_params_metrics_artifacts_and_lineage(tmp_path, monkeypatch, store):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    parent = tracking.get_logger("pipeline", experiment="t")
    assert isinstance(parent, tracking.MLflowLogger)
    monkeypatch.setenv("SANA_WM_PARENT_RUN_ID", parent.run_id)
    data = tmp_path / "shards"
    data.mkdir()
    (data / "a.txt").write_text("a")
    (tmp_path / "note.txt").write_text("hello")
    with tracking.get_logger("train", experiment="t") as step:
        step.log_params({"net": {"hidden": 64}, "preset": "tiny"})
        for s in range(3):
            step.log_metrics({"loss": 1.0 / (s + 1)}, step=s)
        step.log_artifact(tmp_path / "note.txt", "notes")
        digest = log_dataset(step, data, name="shards")
        with step.start_child("sub") as sub:
            sub.set_tags({"k": "v"})
    parent.close()

    client = mlflow.MlflowClient(store)
    run = client.get_run(step.run_id)
    assert run.data.tags[tracking.PARENT_TAG] == parent.run_id
    assert run.data.params == {"net.hidden": "64", "preset": "tiny"}
    assert [m.value for m in client.get_metric_history(step.run_id, "loss")] == [1.0, 0.5, 1 / 3]
    assert run.info.status == "FINISHED"
    ds = run.inputs.dataset_inputs[0].dataset
    assert (ds.name, ds.digest, ds.source_type) == ("shards", digest, "dvc")
    assert digest == dvc_md5(data) and digest.endswith(".dir")
    assert [a.path for a in client.list_artifacts(step.run_id, "notes")] == ["notes/note.txt"]
    # Artifacts land beside the SQLite file, not in ./mlruns of the current folder.
    assert (tmp_path / "mlflow" / "artifacts").is_dir()
    sub = client.get_run(client.search_runs([run.info.experiment_id], "tags.k = 'v'")[0].info.run_id)
    assert sub.data.tags[tracking.PARENT_TAG] == step.run_id


def test_failed_step_marks_run_failed(monkeypatch, store):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    with pytest.raises(RuntimeError), tracking.get_logger("boom", experiment="t") as log:
        raise RuntimeError("x")
    assert mlflow.MlflowClient(store).get_run(log.run_id).info.status == "FAILED"


def test_missing_parent_is_a_clear_error(monkeypatch, store):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    with pytest.raises(ValueError, match="parent run 'nope' not found"):
        tracking.get_logger("x", parent_run_id="nope")


def test_dvc_md5_matches_dvc_add_format(tmp_path):
    (tmp_path / "f").write_text("hi\n")
    # md5("hi\n") — what `dvc add` records for a single file.
    assert dvc_md5(tmp_path / "f") == "764efa883dda1e11db47671c4a3bbd9e"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dvc_md5(tmp_path / "missing")


def test_long_steps_log_system_metrics(monkeypatch, store):
    import time

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    with tracking.get_logger("train", experiment="t") as log:
        log.start_system_metrics(interval_s=0.5)
        time.sleep(2.5)
    keys = set(mlflow.MlflowClient(store).get_run(log.run_id).data.metrics)
    assert any(k.startswith("system/cpu") for k in keys), keys
    assert any(k.startswith("system/system_memory") for k in keys), keys
    assert "train" in tracking.LONG_STEPS and "register" not in tracking.LONG_STEPS
