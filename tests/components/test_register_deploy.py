"""Register a real tiny bundle in a SQLite MLflow registry, then deploy it to a real Triton server."""

from __future__ import annotations

import json

import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from model.config import get_preset
    from model.pipeline import WorldModelPipeline

    d = tmp_path_factory.mktemp("bundle") / "quantized"
    WorldModelPipeline.from_config(get_preset("tiny")).save_pretrained(d, kind="quantized")
    return d


def test_register_rejects_bad_metrics(tmp_path, bundle):
    from components.register.__main__ import read_metrics

    (tmp_path / "m.json").write_text(json.dumps({"psnr": float("nan")}))
    with pytest.raises(ValueError, match="finite numbers"):
        read_metrics(tmp_path / "m.json")
    with pytest.raises(FileNotFoundError, match="run evaluate first"):
        read_metrics(tmp_path / "missing.json")


def test_resolve_version_rejects_bad_uri():
    from components.deploy.__main__ import resolve_version

    with pytest.raises(ValueError, match="must look like models:/NAME@ALIAS"):
        resolve_version(None, "runs:/abc/model")


@pytest.mark.slow
def test_register_then_deploy(tmp_path, bundle, monkeypatch):
    from components.common import tracking
    from components.deploy.__main__ import main as deploy_main
    from components.register.__main__ import main as register_main

    for var in ("MLFLOW_TRACKING_URI", "SANA_WM_PARENT_RUN_ID", "RANK"):
        monkeypatch.delenv(var, raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    tracking.init_store(uri)
    parent = tracking.MLflowLogger.create("pipeline", "t", uri)
    metrics = tmp_path / "eval" / "metrics.json"
    metrics.parent.mkdir()
    metrics.write_text(json.dumps({"rot_err_deg_mean": 3.5, "gen_fps": 2.0}))
    reg_json = tmp_path / "registration.json"
    common = ["--tracking-uri", uri, "--parent-run-id", parent.run_id, "--experiment", "t"]
    assert register_main(["--model", str(bundle), "--metrics", str(metrics), "--name", "wm",
                          "--out", str(reg_json), *common]) == 0
    reg = json.loads(reg_json.read_text())
    client = mlflow.MlflowClient(uri)
    mv = client.get_model_version_by_alias("wm", "candidate")
    assert str(mv.version) == reg["version"] == "1"
    assert mv.tags["bundle_md5"].endswith(".dir")
    mlflow.set_tracking_uri(uri)
    assert mv.tags["logged_model_id"] == reg["logged_model_id"]
    logged = mlflow.get_logged_model(reg["logged_model_id"])  # evaluation metrics live on the LoggedModel
    assert {m.key: m.value for m in logged.metrics}["rot_err_deg_mean"] == 3.5
    model_info = mlflow.models.get_model_info(f"models:/wm/{mv.version}")
    assert [s.name for s in model_info.signature.inputs.inputs] == ["image", "c2w", "intrinsics", "seed"]
    assert client.get_run(reg["run_id"]).data.tags[tracking.PARENT_TAG] == parent.run_id

    out = tmp_path / "outputs"
    assert deploy_main(["--model-uri", "models:/wm@candidate", "--repo", str(tmp_path / "triton"),
                        "--outputs", str(out), *common]) == 0
    assert str(client.get_model_version_by_alias("wm", "production").version) == "1"
    smoke = json.loads((out / "smoke.json").read_text())
    assert (smoke["frames"], smoke["height"], smoke["width"]) == (9, 64, 64)
    assert (out / "video.mp4").stat().st_size > 0 and (out / "contact_sheet.png").stat().st_size > 0
    assert (tmp_path / "triton" / "sana_wm" / "config.pbtxt").is_file()
    from PIL import Image

    sheet = np.asarray(Image.open(out / "contact_sheet.png"))
    assert sheet.ndim == 3 and sheet.std() > 0  # a real image, not a blank
    parent.close()
