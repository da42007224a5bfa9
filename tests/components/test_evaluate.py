"""Evaluate a tiny bundle on real ingest+annotate shards: metrics.json, plots, samples, smoke input."""

from __future__ import annotations

import json

import numpy as np
import pytest


def test_bad_num_clips_is_a_clear_error(capsys):
    from components.evaluate.__main__ import main

    with pytest.raises(SystemExit):
        main(["--model", "x", "--heldout", "y", "--out", "z", "--num-clips", "0"])
    assert "--num-clips must be >= 1" in capsys.readouterr().err


def test_bad_camera_guidance_is_a_clear_error(capsys):
    from components.evaluate.__main__ import main

    with pytest.raises(SystemExit):
        main(["--model", "x", "--heldout", "y", "--out", "z", "--camera-guidance", "-1"])
    assert "--camera-guidance must be finite and >= 0" in capsys.readouterr().err


def test_missing_shards_is_a_clear_error(tmp_path):
    from components.evaluate.__main__ import load_held_out

    with pytest.raises(ValueError, match="no shard-"):
        load_held_out(tmp_path, 1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_held_out(tmp_path / "missing", 1)


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
    pipe = WorldModelPipeline.from_config(get_preset("tiny"))
    pipe.save_pretrained(tmp_path / "model", kind="quantized")
    pipe.save_pretrained(tmp_path / "teacher", kind="teacher")
    assert evaluate_main(["--model", str(tmp_path / "model"), "--heldout", str(tmp_path / "shards"),
                          "--out", str(tmp_path / "eval"), "--num-clips", "1", "--max-frames", "9",
                          "--teacher", str(tmp_path / "teacher"), "--drift-factor", "0.5",
                          "--camera-guidance", "2.5"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_clips"] == 1 and metrics["num_frames"] == 9
    # the still-image floor: the held-out clip's first frame against each of its first 9 frames
    from components.evaluate.__main__ import fit_to_model, load_held_out
    from components.evaluate.report import frame_psnr

    clip = fit_to_model(load_held_out(tmp_path / "shards", 1)[0], (64, 64), 4, 9)
    still = float(np.mean([frame_psnr(clip.frames[0], f) for f in clip.frames]))
    assert metrics["baseline_still_psnr_mean"] == pytest.approx(still, rel=1e-9)
    keys = ("vae_psnr_db", "frame0_psnr_db", "psnr_mean", "rot_err_deg_mean", "rot_err_deg_mean_mirrored",
            "yaw_direction_agreement", "registered_fraction", "trans_err_mean", "cammc_mean", "gen_fps", "latent_fps")
    for k in keys:
        assert isinstance(metrics[k], float), k
        assert metrics[f"quantized.{k}"] == metrics[k], k  # the headline model is also its own variant
        assert isinstance(metrics[f"teacher.{k}"], float), k
    assert metrics["gen_fps"] > 0 and 0 <= metrics["registered_fraction"] <= 1
    assert metrics["yaw_direction_agreement"] in (0.0, 1.0)  # one "turn" clip
    # that clip turns, so the control over the turning clips is the control over all clips
    assert metrics["rot_err_deg_mean_yawing"] == metrics["rot_err_deg_mean"]
    assert metrics["rot_err_deg_mean_mirrored_yawing"] == metrics["rot_err_deg_mean_mirrored"]
    assert metrics["drift.num_frames"] == 13.0  # 0.5 x the default 33-frame training clip, cut to 1 + 4k
    plots = {p.name for p in (tmp_path / "eval" / "plots").glob("*.png")}
    assert plots == {"heldout1-00000.png", "heldout1-00000_path.png", "heldout1-00000_contact_sheet.png", "drift.png"}
    samples = {p.name for p in (tmp_path / "eval" / "samples").glob("*.mp4")}
    assert samples == {"heldout1-00000.mp4", "heldout1-00000_gt_vs_gen.mp4", "heldout1-00000_drift.mp4"}
    assert (tmp_path / "eval" / "contact_sheet.png").is_file()
    table = (tmp_path / "eval" / "table.md").read_text()
    assert "| quantized |" in table and "| teacher |" in table and "rot_err_deg_mean_mirrored" in table

    smoke = np.load(tmp_path / "eval" / "smoke_input" / "trajectory.npz")
    assert len(smoke["c2w"]) <= 33  # a request the server accepts (its limit is 65 frames)
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    # the first held-out clip by key, which is the held-out trajectory class ("turn" starts the split)
    assert list(report["variants"]["quantized"]) == ["heldout1-00000"]
    assert report["mode"] == {"quantized": "few_step", "teacher": "streaming"}  # each as it is served
    # --camera-guidance reaches the sampler that uses it; the few-step bundle keeps its distilled value
    assert report["camera_guidance"] == {"quantized": 1.0, "teacher": 2.5}


def test_mirror_and_yaw_helpers():
    import numpy as np

    from components.evaluate.report import extend_trajectory, mirror_trajectory, total_yaw_deg
    from model.trajectory import trajectory_from_actions

    K = np.array([[50.0, 0, 32], [0, 50.0, 32], [0, 0, 1]])
    right = trajectory_from_actions("yaw_right 30 2s", fps=8, K=K)
    assert total_yaw_deg(right.c2w) > 20
    m = mirror_trajectory(right.c2w)
    assert abs(total_yaw_deg(m) + total_yaw_deg(right.c2w)) < 1e-6  # yaw flips sign
    np.testing.assert_allclose(np.linalg.det(m[:, :3, :3]), 1.0, atol=1e-9)  # still rotations
    long_c2w, long_K = extend_trajectory(right.c2w, right.intrinsics, 4 * len(right.c2w))
    assert len(long_c2w) == len(long_K) == 4 * len(right.c2w)
    np.testing.assert_allclose(long_c2w[: len(right.c2w)], right.c2w)
    assert total_yaw_deg(long_c2w[: 2 * len(right.c2w)]) > total_yaw_deg(right.c2w)  # keeps turning
    # past 180 deg the total keeps counting (a right turn of 195 deg is not a left turn of 165)
    half_plus = trajectory_from_actions("yaw_right 97.5 2s", fps=8, K=K)
    np.testing.assert_allclose(total_yaw_deg(half_plus.c2w), 195.0, atol=1.0)
    np.testing.assert_allclose(total_yaw_deg(mirror_trajectory(half_plus.c2w)), -195.0, atol=1.0)


def test_held_out_loader_takes_the_first_clips_and_the_whole_clip(tmp_path):
    from components.evaluate.__main__ import fit_to_model, load_held_out
    from components.train.data import write_synthetic_shards

    shards = write_synthetic_shards(tmp_path / "h", 3, 13, 32, 32, seed=2)
    clips = load_held_out(shards, 2)
    keys = sorted(c.key for c in load_held_out(shards, 3))
    assert [c.key for c in clips] == keys[:2]
    fitted = fit_to_model(clips[0], (32, 32), 4, max_frames=len(clips[0].frames))
    assert len(fitted.frames) == 13  # the whole held-out clip, not a short training-length window
