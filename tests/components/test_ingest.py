"""Real-video ingest: shot splitting, resampling, overlapping clips, failures recorded per input, CLI."""

from __future__ import annotations

import importlib.util
import json

import fsspec
import numpy as np
import pytest

from components.ingest.__main__ import main
from components.ingest.filters import FilterConfig
from components.ingest.sources import IngestConfig, ingest_videos, read_manifest, resolve_sources
from components.ingest.synthetic import ClipSpec, render_clip
from model.video_io import read_video, write_video


def _err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


CFG = IngestConfig(fps=8, clip_frames=8, overlap=3, min_shot_frames=4, progress=False)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """A folder with a 24-frame single-shot video, a 40-frame video with a hard cut at frame 20, a
    text file named .mp4 and a truncated mp4."""
    d = tmp_path_factory.mktemp("videos")
    size = {"height": 48, "width": 64, "fps": 8.0}
    a = render_clip(ClipSpec(kind="pure_yaw", num_frames=24, seed=1, **size)).frames
    b = render_clip(ClipSpec(kind="walk_forward", speed="fast", num_frames=20, seed=2, **size)).frames
    c = render_clip(ClipSpec(kind="orbit", num_frames=20, seed=5, **size)).frames
    write_video(a, d / "single.mp4", fps=8)
    write_video(np.concatenate([b, c]), d / "cut.mp4", fps=8)
    (d / "corrupt.mp4").write_text("not a video at all")
    data = (d / "single.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])
    return d, {"single": a, "cut": np.concatenate([b, c])}


def test_folder_ingest_splits_shots_and_cuts_overlapping_clips(videos, tmp_path):
    d, originals = videos
    rows = ingest_videos(d, tmp_path, CFG)
    assert rows == read_manifest(tmp_path / "manifest.jsonl", status=None)

    failed = {r["source"].rsplit("/", 1)[-1]: r["reason"] for r in rows if r["status"] == "failed"}
    assert set(failed) == {"corrupt.mp4", "truncated.mp4"}
    assert "corrupt.mp4" in failed["corrupt.mp4"] and "VideoDecodeError" in failed["corrupt.mp4"]
    assert "truncated" in failed["truncated.mp4"]

    ok = [r for r in rows if r["status"] == "ok"]
    cut = [r for r in ok if r["source"].endswith("cut.mp4")]
    single = [r for r in ok if r["source"].endswith("single.mp4")]
    # the cut video has two shots of 20 frames; stride 5 gives windows at 0, 5, 10 in each shot
    assert sorted({r["shot"] for r in cut}) == [0, 1]
    assert [r["start_frame"] for r in cut if r["shot"] == 0] == [0, 5, 10]
    assert [r["start_frame"] for r in cut if r["shot"] == 1] == [0, 5, 10]
    assert min(r["start_time"] for r in cut if r["shot"] == 1) == pytest.approx(2.5)  # cut at frame 20
    assert [r["start_frame"] for r in single] == [0, 5, 10, 15]
    assert {r["shot"] for r in single} == {0}
    # only inputs that decoded fully leave clips; every ok row points at a readable 8-frame clip
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == sorted(r["path"] for r in ok)

    c0, _ = read_video(tmp_path / cut[0]["path"])
    c1, fps = read_video(tmp_path / cut[1]["path"])
    assert c0.shape == (8, 48, 64, 3) and fps == 8.0
    # overlap: the last 3 frames of clip 0 are the first 3 of clip 1 (up to re-encoding noise)
    assert np.abs(c0[5:].astype(int) - c1[:3].astype(int)).mean() < 4
    assert np.abs(c0[:3].astype(int) - c1[:3].astype(int)).mean() > 8
    # and they are source frames 5..7 (encoded twice): closer to those than to any shifted window
    src = originals["cut"].astype(int)
    right = _err(c1[:3], src[5:8])
    assert right < min(_err(c1[:3], src[4:7]), _err(c1[:3], src[6:9])) and right < 0.6 * _err(c1[:3], src[8:11])
    # shot 1 starts exactly at the cut (source frame 20), not on a frame of the walk before it
    s1 = read_video(tmp_path / next(r for r in cut if r["shot"] == 1)["path"])[0]
    assert _err(s1[:1], src[20:21]) < 0.3 * _err(s1[:1], src[19:20])


def test_resampling_and_short_tails(videos, tmp_path):
    d, _ = videos
    cfg = IngestConfig(fps=4, clip_frames=5, overlap=1, min_clip_frames=2, split_shots=False, progress=False)
    rows = ingest_videos([d / "single.mp4"], tmp_path, cfg)
    # 24 frames at 8 fps = 3 s -> 12 frames at 4 fps: windows at 0, 4, 8 (the last one 4 frames long)
    assert [(r["start_frame"], r["frames"]) for r in rows] == [(0, 5), (4, 5), (8, 4)]
    assert all(r["fps"] == 4.0 for r in rows)
    frames, fps = read_video(tmp_path / rows[0]["path"])
    assert fps == 4.0 and frames.shape[0] == 5


def test_filters_drop_static_video(tmp_path):
    src = tmp_path / "src"
    moving = render_clip(ClipSpec(kind="pure_yaw", num_frames=16, height=48, width=64, seed=8)).frames
    write_video(moving, src / "moving.mp4", fps=8)
    write_video(np.repeat(moving[:1], 16, axis=0), src / "static.mp4", fps=8)
    cfg = IngestConfig(fps=8, clip_frames=16, overlap=0, split_shots=False, filters=FilterConfig(), progress=False)
    rows = {r["source"].rsplit("/", 1)[-1]: r for r in ingest_videos(src, tmp_path / "out", cfg)}
    assert rows["moving.mp4"]["status"] == "ok" and rows["moving.mp4"]["scores"]["motion"] > 0.02
    assert rows["static.mp4"]["status"] == "dropped" and rows["static.mp4"]["reason"].startswith("static")
    assert not (tmp_path / "out" / f"{rows['static.mp4']['id']}.mp4").exists()
    assert [r["id"] for r in read_manifest(tmp_path / "out" / "manifest.jsonl")] == [rows["moving.mp4"]["id"]]


def test_remote_urls_via_fsspec(videos, tmp_path):
    d, _ = videos
    fs = fsspec.filesystem("memory")
    fs.pipe("/ingest-test/remote.mp4", (d / "single.mp4").read_bytes())
    sources = ["memory://ingest-test/remote.mp4"]
    if importlib.util.find_spec("s3fs") is None:
        sources.append("s3://some-bucket/video.mp4")
    try:
        rows = ingest_videos(sources, tmp_path, CFG)
    finally:
        fs.rm("/ingest-test", recursive=True)
    assert [r["status"] for r in rows if r["source"].startswith("memory://")] == ["ok"] * 4
    if len(sources) == 2:
        (s3,) = [r for r in rows if r["source"].startswith("s3://")]
        assert s3["status"] == "failed" and "s3fs" in s3["reason"]
    assert not list(tmp_path.glob(".fetch-*"))  # downloaded copies are cleaned up


def test_resolve_sources_manifest_and_list(videos, tmp_path):
    d, _ = videos
    (tmp_path / "m.jsonl").write_text(json.dumps({"path": str(d / "single.mp4")}) + "\n"
                                      + json.dumps({"path": "x.mp4", "status": "failed"}) + "\n")
    (tmp_path / "l.txt").write_text("# videos\nrel.mp4\nhttps://example.com/v.mp4\n")
    assert resolve_sources(tmp_path / "m.jsonl") == [str(d / "single.mp4")]
    assert resolve_sources(tmp_path / "l.txt") == [str(tmp_path / "rel.mp4"), "https://example.com/v.mp4"]
    assert len(resolve_sources(d)) == 4  # every video-suffixed file, the broken ones included


def test_config_validation():
    with pytest.raises(ValueError, match="overlap"):
        IngestConfig(clip_frames=8, overlap=8)
    with pytest.raises(ValueError, match="resize"):
        IngestConfig(resize=(47, 64))


def test_cli_synthetic_and_source(videos, tmp_path, capsys):
    assert main(["--synthetic", "2", "--seed", "1", "--out", str(tmp_path / "syn"), "--height", "32",
                 "--width", "48", "--frames", "5", "--fps", "4", "--no-progress"]) == 0
    rows = read_manifest(tmp_path / "syn" / "manifest.jsonl")
    assert len(rows) == 2 and all((tmp_path / "syn" / r["path"]).exists() for r in rows)
    assert "wrote 2 synthetic train clips" in capsys.readouterr().out

    d, _ = videos
    assert main(["--source", str(d / "single.mp4"), str(d / "corrupt.mp4"), "--out", str(tmp_path / "real"),
                 "--fps", "8", "--clip-frames", "8", "--overlap", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "4 clips kept" in out and "1 inputs failed" in out and "corrupt.mp4" in out
    # nothing usable -> non-zero exit
    assert main(["--source", str(d / "corrupt.mp4"), "--out", str(tmp_path / "none"), "--no-progress"]) == 1
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path)])  # a mode is required


def test_renderer_axis_parallel_rays_stay_finite():
    """A ray component of exactly +0.0 or -0.0 (the centre row/column of a frame under an identity
    rotation) must hit the far wall, not give t = -inf and a NaN pixel."""
    from components.ingest.synthetic import _build_scene, _render_frame

    rng = np.random.default_rng(0)
    pos, fwd = np.zeros((1, 3)), np.array([[0.0, 0.0, 1.0]])
    scene = _build_scene(pos, fwd, None, rng)
    dirs = np.array([[0.0, -0.0, 0.3, 0.0, -0.2],
                     [0.0, 0.0, 0.0, -0.0, 0.4],
                     [1.0, 1.0, 1.0, 1.0, 1.0]], dtype=np.float32)
    rgb, depth = _render_frame(scene, dirs, 50.0, np.eye(3), np.zeros(3))
    assert np.isfinite(depth).all() and np.isfinite(rgb).all()
    assert (depth > 0).all()
