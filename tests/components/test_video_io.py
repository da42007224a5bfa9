"""PyAV video I/O: round trip, metadata, atomic writes, and clear errors on bad files."""

from __future__ import annotations

import av
import numpy as np
import pytest

from model.video_io import (
    VideoDecodeError,
    iter_frames,
    iter_timed_frames,
    probe_video,
    read_video,
    write_video,
)


def _smooth_frames(n: int = 12, h: int = 48, w: int = 64) -> np.ndarray:
    """(n,h,w,3) uint8: colour gradients drifting right, compressible and easy to compare."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(n):
        r = 127 + 100 * np.sin((xx + 2 * i) / 9.0)
        g = 127 + 100 * np.cos(yy / 7.0)
        b = 60 + 3 * i + 0 * xx
        out.append(np.stack([r, g, b], -1))
    return np.clip(out, 0, 255).astype(np.uint8)


def test_round_trip_frames_and_fps(tmp_path):
    frames = _smooth_frames()
    path = write_video(frames, tmp_path / "a.mp4", fps=12)
    got, fps = read_video(path)
    assert got.shape == frames.shape and got.dtype == np.uint8
    assert fps == pytest.approx(12.0)
    # crf 18 + 4:2:0 chroma: a few levels of error (a wrong frame or colour order would give ~50)
    assert np.abs(got.astype(int) - frames.astype(int)).mean() < 5.0
    info = probe_video(path)
    assert (info.frames, info.height, info.width, info.codec) == (12, 48, 64, "h264")
    assert info.duration == pytest.approx(1.0, abs=0.1)
    assert sum(1 for _ in iter_frames(path)) == 12
    times = [t for t, _ in iter_timed_frames(path)]
    assert np.allclose(np.diff(times), 1 / 12, atol=1e-3)
    assert read_video(path, max_frames=5)[0].shape[0] == 5


def test_fractional_fps_and_atomic_overwrite(tmp_path):
    path = tmp_path / "ntsc.mp4"
    write_video(_smooth_frames(6), path, fps=29.97)
    write_video(_smooth_frames(8), path, fps=29.97)  # overwrite in place
    assert probe_video(path).fps == pytest.approx(29.97, abs=1e-3)
    assert probe_video(path).frames == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ntsc.mp4"]  # no temp file left behind


def test_write_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_video(np.zeros((2, 31, 64, 3), np.uint8), tmp_path / "odd.mp4", fps=8)
    with pytest.raises(ValueError, match="uint8"):
        write_video(np.zeros((2, 32, 64, 3), np.float32), tmp_path / "f.mp4", fps=8)
    with pytest.raises(ValueError, match="fps"):
        write_video(np.zeros((2, 32, 64, 3), np.uint8), tmp_path / "z.mp4", fps=0)
    assert list(tmp_path.iterdir()) == []


def test_truncated_mp4_raises_naming_file(tmp_path):
    good = write_video(_smooth_frames(24), tmp_path / "good.mp4", fps=8)
    data = good.read_bytes()
    bad = tmp_path / "truncated_clip.mp4"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError, match="truncated_clip.mp4") as e:
        read_video(bad)
    assert isinstance(e.value, ValueError)
    assert "truncated" in str(e.value) or "decod" in str(e.value)


def test_text_file_named_mp4_raises(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n")
    for fn in (probe_video, read_video):
        with pytest.raises(VideoDecodeError, match="notes.mp4"):
            fn(fake)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        probe_video(tmp_path / "missing.mp4")


def test_mkv_without_frame_count_is_probed_by_packets(tmp_path):
    # matroska stores no frame count, so probe_video has to count packets
    path = tmp_path / "clip.mkv"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for f in _smooth_frames(7):
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode(None))
    info = probe_video(path)
    assert info.frames == 7 and info.fps == pytest.approx(10.0)
    assert read_video(path)[0].shape == (7, 48, 64, 3)


def test_in_memory_mp4_round_trip_and_bad_bytes():
    from model.video_io import VideoDecodeError, decode_mp4, encode_mp4

    frames = np.zeros((3, 16, 24, 3), np.uint8)
    frames[:, :, :12] = 200
    got = decode_mp4(encode_mp4(frames, fps=8, crf=10))
    assert got.shape == frames.shape and np.abs(got.astype(int) - frames).mean() < 4
    with pytest.raises(VideoDecodeError, match="clip-7"):
        decode_mp4(b"not an mp4", "clip-7")


def test_the_same_frames_encode_to_the_same_bytes():
    # x264's AVX-512 path gave a different bitstream on every encode of this clip (decoded frames up to 50
    # grey levels apart); DVC hashes and repeatable annotation need the bytes to be a function of the frames.
    from components.ingest.synthetic import ClipSpec, render_clip
    from model.video_io import decode_mp4, encode_mp4

    frames = render_clip(ClipSpec(kind="pure_yaw", speed="slow", num_frames=40, fps=16.0, height=192, width=320,
                                  seed=9020)).frames
    first = encode_mp4(frames, 16.0)
    assert all(encode_mp4(frames, 16.0) == first for _ in range(3))
    assert np.array_equal(decode_mp4(first), decode_mp4(encode_mp4(frames, 16.0)))
