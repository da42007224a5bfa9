"""Client-side outputs without a server: the mp4 decodes to the frames written, the sheet is a grid."""

from __future__ import annotations

import numpy as np
from PIL import Image

from serving.client import contact_sheet


def _video(n=5, h=32, w=48):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(1, h // 8, w // 8, 3), dtype=np.uint8)
    # Smooth 8x8 blocks that change per frame: content H.264 keeps close at default quality.
    frames = np.repeat(np.repeat(base, 8, axis=1), 8, axis=2).repeat(n, axis=0)
    return (frames + (np.arange(n) * 20)[:, None, None, None]).astype(np.uint8)


def test_contact_sheet_grid(tmp_path):
    video = _video(n=5)
    path = contact_sheet(video, tmp_path / "s.png", columns=3, pad=2)
    with Image.open(path) as im:
        sheet = np.asarray(im.convert("RGB"))
    assert sheet.shape == (2 * (32 + 2) + 2, 3 * (48 + 2) + 2, 3)  # 2 rows x 3 columns
    np.testing.assert_array_equal(sheet[2:34, 2 + 50:50 + 50], video[1])  # frame 1: row 0, column 1
