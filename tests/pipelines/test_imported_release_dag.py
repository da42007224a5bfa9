"""A released SANA-WM (tiny, random, in diffusers' own format) goes through ``model import`` and then the
stack's steps as users run them — distill, quantize, evaluate, register, deploy to a real Triton server —
with no change to any step."""

from __future__ import annotations

import json

import pytest

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("diffusers")


@pytest.mark.slow
def test_imported_diffusers_release_through_the_dag_and_triton(tmp_path, monkeypatch):
    from components.annotate.__main__ import main as annotate_main
    from components.common import tracking
    from components.deploy.__main__ import main as deploy_main
    from components.distill.__main__ import main as distill_main
    from components.evaluate.__main__ import main as evaluate_main
    from components.ingest.__main__ import main as ingest_main
    from components.quantize.__main__ import main as quantize_main
    from components.register.__main__ import main as register_main
    from model.__main__ import main as model_main
    from tests.model.release_fixtures import write_diffusers_pipeline_dir

    for var in ("MLFLOW_TRACKING_URI", "SANA_WM_PARENT_RUN_ID", "RANK"):
        monkeypatch.delenv(var, raising=False)
    release = write_diffusers_pipeline_dir(tmp_path / "release")
    teacher = tmp_path / "models" / "teacher"
    assert model_main(["import", "--diffusers", str(release), "--out", str(teacher), "--size", "64x64",
                       "--fps", "8"]) == 0

    size = ["--height", "64", "--width", "64", "--no-progress"]
    assert ingest_main(["--synthetic", "2", "--seed", "0", "--frames", "17", *size,
                        "--out", str(tmp_path / "raw")]) == 0
    assert annotate_main(["batch", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "shards")]) == 0
    assert ingest_main(["--synthetic", "1", "--seed", "0", "--frames", "17", "--split", "heldout", *size,
                        "--out", str(tmp_path / "heldout_raw")]) == 0
    assert annotate_main(["batch", "--raw", str(tmp_path / "heldout_raw"), "--out", str(tmp_path / "heldout")]) == 0

    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    tracking.init_store(uri)
    common = ["--tracking-uri", uri, "--experiment", "imported"]
    shards = str(tmp_path / "shards")
    assert distill_main(["--teacher", str(teacher), "--shards", shards, "--out", str(tmp_path / "models" / "student"),
                         "--ode-steps", "2", "--dmd-steps", "1", "--teacher-steps", "4", "--max-clips", "2",
                         *common]) == 0
    quantized = tmp_path / "models" / "quantized"
    assert quantize_main(["--model", str(tmp_path / "models" / "student"), "--shards", shards, "--out",
                          str(quantized), "--mode", "qkv", "--max-clips", "2", "--eval-steps", "2", *common]) == 0
    assert evaluate_main(["--model", str(quantized), "--heldout", str(tmp_path / "heldout"), "--out",
                          str(tmp_path / "eval"), "--num-clips", "1", "--max-frames", "9", *common]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["psnr_mean"] == metrics["psnr_mean"]  # finite, produced by the imported network
    assert register_main(["--model", str(quantized), "--metrics", str(tmp_path / "eval" / "metrics.json"),
                          "--name", "imported-wm", "--out", str(tmp_path / "registration.json"), *common]) == 0
    out = tmp_path / "outputs"
    assert deploy_main(["--model-uri", "models:/imported-wm@candidate", "--repo", str(tmp_path / "triton"),
                        "--outputs", str(out), *common]) == 0
    smoke = json.loads((out / "smoke.json").read_text())
    assert (smoke["height"], smoke["width"]) == (64, 64) and smoke["frames"] >= 5
    # what Triton served is the imported network (its config came through the registry untouched)
    served = json.loads((out / "bundle" / "config.json").read_text())
    assert served["vae"]["kind"] == "ltx2" and served["text"]["kind"] == "hf"
