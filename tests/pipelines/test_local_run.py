"""The whole DAG through the real KFP local runner on the tiny preset, in a throw-away project root:
MLflow nesting/lineage/aliases queried back, DVC outputs committed, `dvc repro` a no-op, status clean."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
STEPS = ("ingest", "annotate", "vae", "train", "distill", "quantize", "evaluate", "register", "deploy")
TINY_PARAMS = {"preset": "tiny", "ingest": {"num_clips": 3, "seed": 0, "height": 64, "width": 64, "frames": 17},
               "heldout": {"num_clips": 1, "frames": 37, "holdout_kinds": "turn"}, "vae": {"steps": 3, "lr": 0.0005},
               "train": {"steps": 2, "lr": 0.0, "init": ""}, "distill": {"ode_steps": 4, "dmd_steps": 1, "teacher_steps": 4}, "evaluate": {"num_clips": 1}, "register": {"model_name": "sana-wm-tiny"},
               "deploy": {"device": "auto", "instance_count": 1, "max_sessions_per_instance": 3}}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "dvc.yaml", root / "dvc.yaml")
    shutil.copy(ROOT / ".gitignore", root / ".gitignore")
    shutil.copy(ROOT / ".dvcignore", root / ".dvcignore")
    for pkg in ("model", "components", "serving", "pipelines", "assets"):  # DVC stages depend on code + base
        shutil.copytree(ROOT / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS))
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for var in ("MLFLOW_TRACKING_URI", "SANA_WM_PARENT_RUN_ID", "RANK"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, "-m", "pipelines", "run", "--local", "--root", str(root)], cwd=root,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return root, env, proc.stdout


@pytest.mark.slow
def test_outputs_and_summary(project):
    root, _, out = project
    for step in STEPS:
        assert any(line.startswith(step) and "SUCCESS" in line for line in out.splitlines()), step
    assert "mlflow ui --backend-store-uri sqlite:///" in out
    assert (root / "data/outputs/video.mp4").stat().st_size > 0
    assert (root / "data/outputs/contact_sheet.png").stat().st_size > 0
    metrics = json.loads((root / "data/eval/metrics.json").read_text())
    assert metrics["num_clips"] == 1 and metrics["vae_psnr_db"] > 0
    assert metrics["num_frames"] == 37  # evaluate reads the (longer) held-out clips, not training shards
    assert json.loads((root / "data/models/vae/fit.json").read_text())["steps"] == 3
    assert list((root / "data/heldout").glob("*.tar"))
    assert list((root / "data/cache/vae").iterdir())  # the fit is cached for the next run
    assert (root / "data/triton/sana_wm/config.pbtxt").read_text().count(str(root / "data/outputs/bundle")) == 1
    # deploy.* reaches the served repository, through the KFP task and the re-pointed published copy alike
    from serving.triton_repo import read_model_config

    session = read_model_config(root / "data/triton/sana_wm_session")
    assert session.parameters["max_sessions"].string_value == "3"


@pytest.mark.slow
def test_mlflow_nesting_lineage_and_aliases(project):
    import mlflow

    root, _, _ = project
    client = mlflow.MlflowClient(f"sqlite:///{root / 'data/mlflow/mlflow.db'}")
    exp = client.get_experiment_by_name("sana-wm")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("sana_wm.runner") == "kfp-local"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    pid = parents[0].info.run_id
    children = {r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == pid}
    assert {"register", "deploy", "evaluate"} <= children
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    shards_md5 = lock["stages"]["annotate"]["outs"][0]["md5"]
    digests = {d.dataset.name: d.dataset.digest for d in parents[0].inputs.dataset_inputs}
    assert digests["shards"] == shards_md5  # MLflow lineage == the DVC revision of the data
    name = TINY_PARAMS["register"]["model_name"]
    cand = client.get_model_version_by_alias(name, "candidate")
    prod = client.get_model_version_by_alias(name, "production")
    assert cand.version == prod.version
    assert cand.tags["bundle_md5"] == lock["stages"]["quantize"]["outs"][0]["md5"]


@pytest.mark.slow
def test_dvc_status_clean_after_repro(project):
    root, env, _ = project
    dvc = [sys.executable, "-m", "dvc"]
    repro = subprocess.run([*dvc, "repro"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert repro.returncode == 0, repro.stderr
    assert "Running stage" not in repro.stdout  # the KFP run already produced and committed everything
    status = subprocess.run([*dvc, "status", "--json"], cwd=root, env=env, capture_output=True, text=True)
    assert status.returncode == 0 and json.loads(status.stdout or "{}") == {}
    remote = subprocess.run([*dvc, "remote", "list"], cwd=root, env=env, capture_output=True, text=True)
    assert "dvc-remote" in remote.stdout and "data/dvc-remote" not in remote.stdout
