"""Client-side outputs without a server: the mp4 decodes to the frames written, the sheet is a grid."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from serving.client import contact_sheet, write_mp4


def _video(n=5, h=32, w=48):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(1, h // 8, w // 8, 3), dtype=np.uint8)
    # Smooth 8x8 blocks that change per frame: content H.264 keeps close at default quality.
    frames = np.repeat(np.repeat(base, 8, axis=1), 8, axis=2).repeat(n, axis=0)
    return (frames + (np.arange(n) * 20)[:, None, None, None]).astype(np.uint8)


def test_write_mp4_is_h264_with_all_frames_at_fps(tmp_path):
    video = _video()
    path = write_mp4(video, tmp_path / "v.mp4", fps=8.0)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        assert stream.codec_context.name == "h264" and float(stream.average_rate) == 8.0
    assert decoded.shape == video.shape
    assert np.abs(decoded.astype(int) - video).mean() < 8  # lossy, but the same pictures
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]  # no temp file left behind


def test_write_mp4_rejects_odd_size_and_wrong_dtype(tmp_path):
    with pytest.raises(ValueError, match="even height and width"):
        write_mp4(np.zeros((2, 33, 48, 3), np.uint8), tmp_path / "v.mp4", fps=8)
    with pytest.raises(ValueError, match=r"uint8 \(N, H, W, 3\)"):
        write_mp4(np.zeros((2, 32, 48, 3), np.float32), tmp_path / "v.mp4", fps=8)
    assert not any(tmp_path.iterdir())


def test_contact_sheet_grid(tmp_path):
    video = _video(n=5)
    path = contact_sheet(video, tmp_path / "s.png", columns=3, pad=2)
    with Image.open(path) as im:
        sheet = np.asarray(im.convert("RGB"))
    assert sheet.shape == (2 * (32 + 2) + 2, 3 * (48 + 2) + 2, 3)  # 2 rows x 3 columns
    np.testing.assert_array_equal(sheet[2:34, 2 + 50:50 + 50], video[1])  # frame 1: row 0, column 1
