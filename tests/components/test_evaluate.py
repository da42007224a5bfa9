"""Evaluate a tiny bundle on real ingest+annotate shards: metrics.json, plots, samples, smoke input."""

from __future__ import annotations

import json

import pytest


def test_bad_num_clips_is_a_clear_error(capsys):
    from components.evaluate.__main__ import main

    with pytest.raises(SystemExit):
        main(["--model", "x", "--heldout", "y", "--out", "z", "--num-clips", "0"])
    assert "--num-clips must be >= 1" in capsys.readouterr().err


def test_missing_shards_is_a_clear_error(tmp_path):
    from components.evaluate.__main__ import load_held_out

    with pytest.raises(FileNotFoundError, match="no webdataset shards"):
        load_held_out(tmp_path, 1)


@pytest.mark.slow
def test_evaluate_end_to_end(tmp_path, monkeypatch):
    from components.annotate.__main__ import main as annotate_main
    from components.evaluate.__main__ import main as evaluate_main
    from components.ingest.__main__ import main as ingest_main
    from model.config import get_preset
    from model.pipeline import WorldModelPipeline

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert ingest_main(["--synthetic", "2", "--seed", "1", "--height", "64", "--width", "64", "--frames", "17",
                        "--split", "heldout", "--holdout-kinds", "turn", "--no-progress",
                        "--out", str(tmp_path / "raw")]) == 0
    assert annotate_main(["batch", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "shards")]) == 0
    WorldModelPipeline.from_config(get_preset("tiny")).save_pretrained(tmp_path / "model", kind="quantized")
    assert evaluate_main(["--model", str(tmp_path / "model"), "--heldout", str(tmp_path / "shards"),
                          "--out", str(tmp_path / "eval"), "--num-clips", "1", "--max-frames", "9"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_clips"] == 1 and metrics["num_frames"] == 9
    for k in ("rot_err_deg_mean", "trans_err_mean", "cammc_mean", "psnr_mean", "gen_fps", "latent_fps",
              "vae_psnr_db"):
        assert isinstance(metrics[k], float), k
    assert metrics["gen_fps"] > 0 and 0 <= metrics["registered_fraction"] <= 1
    assert len(list((tmp_path / "eval" / "plots").glob("*.png"))) == 1
    assert len(list((tmp_path / "eval" / "samples").glob("*.mp4"))) == 1
    assert (tmp_path / "eval" / "smoke_input" / "trajectory.npz").is_file()
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    # the first held-out clip by key, which is the held-out trajectory class ("turn" starts the split)
    assert list(report["clips"]) == ["heldout1-00000"]
    assert report["mode"] == "few_step"  # a quantized bundle is evaluated the way it is served


def test_held_out_loader_takes_the_first_clips_and_the_whole_clip(tmp_path):
    from components.evaluate.__main__ import fit_to_model, load_held_out
    from components.train.data import write_synthetic_shards

    shards = write_synthetic_shards(tmp_path / "h", 3, 13, 32, 32, seed=2)
    clips = load_held_out(shards, 2)
    keys = sorted(c.key for c in load_held_out(shards, 3))
    assert [c.key for c in clips] == keys[:2]
    fitted = fit_to_model(clips[0], (32, 32), 4, max_frames=len(clips[0].frames))
    assert len(fitted.frames) == 13  # the whole held-out clip, not a short training-length window
