"""Clip filters: motion from Farneback flow, blur from the Laplacian, basic quality checks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from components.ingest.filters import FilterConfig, apply_filters, score_clip
from components.ingest.synthetic import ClipSpec, render_clip


@pytest.fixture(scope="module")
def moving() -> np.ndarray:
    return render_clip(ClipSpec(kind="pure_yaw", speed="slow", num_frames=17, height=64, width=96, seed=4)).frames


def test_moving_clip_is_kept(moving):
    scores = score_clip(moving, fps=8)
    assert scores["motion"] > 0.05 and scores["static_fraction"] == 0.0
    assert (scores["frames"], scores["height"], scores["width"]) == (17, 64, 96)
    assert scores["duration_s"] == pytest.approx(17 / 8)
    assert apply_filters(scores) == (True, None)


def test_static_clip_is_rejected(moving):
    static = np.repeat(moving[:1], 17, axis=0)
    scores = score_clip(static, fps=8)
    assert scores["motion"] < 0.005
    keep, reason = apply_filters(scores)
    assert not keep and reason.startswith("static")


def test_mostly_frozen_clip_is_rejected(moving):
    # moves for the first quarter, then freezes: median motion is ~0 and most pairs are static
    frozen = np.concatenate([moving[:5], np.repeat(moving[5:6], 12, axis=0)])
    keep, reason = apply_filters(score_clip(frozen, fps=8))
    assert not keep and "static" in reason


def test_blurred_clip_is_rejected(moving):
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 2.5) for f in moving])
    sharp, soft = score_clip(moving, 8), score_clip(blurred, 8)
    assert soft["sharpness"] < 0.2 * sharp["sharpness"]
    keep, reason = apply_filters(soft)
    assert not keep and reason.startswith("blurry")


def test_resolution_duration_and_exposure_checks(moving):
    cfg = FilterConfig(min_height=128, min_width=128)
    keep, reason = apply_filters(score_clip(moving, 8), cfg)
    assert not keep and reason.startswith("resolution")
    keep, reason = apply_filters(score_clip(moving, 8), FilterConfig(min_duration_s=5.0))
    assert not keep and reason.startswith("too_short")
    dark = (moving // 20).astype(np.uint8)
    keep, reason = apply_filters(score_clip(dark, 8))
    assert not keep and reason.startswith("too_dark")


def test_bad_input_and_config():
    with pytest.raises(ValueError, match="uint8"):
        score_clip(np.zeros((4, 8, 8, 3), np.float32), 8)
    with pytest.raises(ValueError, match="min_motion"):
        FilterConfig(min_motion=3.0, max_motion=1.0)
