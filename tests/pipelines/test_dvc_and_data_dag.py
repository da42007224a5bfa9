"""DVC helpers in a throw-away git repo, and the `data` DAG (ingest -> annotate fan-out: plan ->
ParallelFor(group) -> merge) through the real KFP local runner with MLflow nesting (the part of the DAG
whose steps exist independently of training)."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from components.common import dvc_utils


def test_ensure_dvc_repo_is_idempotent_with_default_remote(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    dvc_utils.ensure_dvc_repo(tmp_path)
    dvc_utils.ensure_dvc_repo(tmp_path)  # second call: no error, no change
    conf = (tmp_path / ".dvc" / "config").read_text().lower()
    assert "analytics = false" in conf and "remote = local" in conf
    assert "url = ../dvc-remote" in conf  # relative to .dvc/: the committed config works in any clone


def test_ensure_dvc_repo_subdir_and_existing_remote(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    sub = tmp_path / "proj"
    sub.mkdir()
    dvc_utils.ensure_dvc_repo(sub, remote_url="s3://bucket/x")
    assert (sub / ".dvc").is_dir() and not (tmp_path / ".dvc").exists()
    dvc_utils.ensure_dvc_repo(sub, remote_url="/elsewhere")  # an existing default remote is respected
    assert "s3://bucket/x" in (sub / ".dvc" / "config").read_text()


def test_ensure_dvc_repo_rejects_missing_folder(tmp_path):
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        dvc_utils.ensure_dvc_repo(tmp_path / "nope")


@pytest.mark.slow
def test_data_dag_through_kfp_local(tmp_path, monkeypatch):
    import mlflow
    from kfp import local

    from components.common import tracking
    from components.common.lineage import dvc_md5
    from pipelines.dags import build_pipeline

    for var in ("MLFLOW_TRACKING_URI", "SANA_WM_PARENT_RUN_ID", "RANK"):
        monkeypatch.delenv(var, raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.init_store(uri)
    parent = tracking.MLflowLogger.create("data-dag", "t", uri)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    build_pipeline("data")(num_clips=2, seed=3, clip_height=64, clip_width=64, clip_frames=17,
                           tracking_uri=uri, parent_run_id=parent.run_id, experiment="t")
    parent.close()
    (run,) = list((tmp_path / "kfp").glob("sana-wm-data-*"))
    shards = run / "annotate-merge" / "shards"  # the fan-out's merge task holds the one shards artifact
    manifest = [yaml.safe_load(line) for line in (shards / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == 2 and list(shards.glob("*.tar"))
    # annotate_groups defaults to 2: two annotate-group tasks, one clip each, merged into the manifest above.
    parts = sorted(run.glob("for-loop-*-iteration-*/annotate-group/shards/manifest.jsonl"))
    part_ids = [yaml.safe_load(line)["id"] for p in parts for line in p.read_text().splitlines()]
    assert len(parts) == 2 and sorted(part_ids) == sorted(m["id"] for m in manifest)
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("t")
    children = [r for r in client.search_runs([exp.experiment_id])
                if r.data.tags.get(tracking.PARENT_TAG) == parent.run_id]
    # Steps that log through components.common.tracking nest under the pipeline's parent run.
    for r in children:
        for d in r.inputs.dataset_inputs:
            assert d.dataset.digest.endswith(".dir")
    assert dvc_md5(shards).endswith(".dir")


def test_every_stage_depends_on_its_code_and_plots_are_declared():
    """Editing a step's code (or the network) leaves `dvc status` dirty for the stages it feeds."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = yaml.safe_load((root / "dvc.yaml").read_text())
    for name, stage in spec["stages"].items():
        step = re.search(r"python -m components\.(\w+)", stage["cmd"]).group(1)
        assert f"components/{step}" in stage["deps"], f"stage {name} does not depend on components/{step}"
        if step in ("vae", "train", "distill", "quantize", "evaluate"):
            assert "model" in stage["deps"], f"stage {name} runs the network but does not depend on model/"
        if step in ("vae", "train"):  # train.init: a regenerated base checkpoint must re-run them
            assert "assets/base" in stage["deps"], f"stage {name} does not depend on assets/base"
    plots = [next(iter(p)) if isinstance(p, dict) else p for p in spec["plots"]]
    assert "data/eval/plots/drift.json" in plots
    assert "__pycache__/" in (root / ".dvcignore").read_text()  # bytecode must not dirty the code deps
