"""Per-clip quality scores and the keep/drop decision (DESIGN.md section 6: motion, flow, quality).

A world model learns camera control only from clips whose camera moves, and learns nothing useful
from blurred or tiny ones. :func:`score_clip` measures, with OpenCV:

* ``motion``: median over sampled frame pairs of the mean Farneback optical-flow magnitude, expressed
  in image widths per second, so one threshold works at any resolution and frame rate;
  ``flow_px``: the same per pair in pixels at the analysis width (``FilterConfig.flow_width``);
* ``static_fraction``: share of sampled pairs whose motion is below ``static_motion``;
* ``sharpness``: median variance of the Laplacian of grey frames (low = blurred), measured at the
  analysis width so it does not grow with resolution;
* ``brightness`` / ``contrast``: mean and standard deviation of grey levels (0..255);
* ``height``, ``width``, ``frames``, ``fps``, ``duration_s``.

:func:`apply_filters` turns scores into ``(keep, reason)`` with thresholds from :class:`FilterConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["FilterConfig", "apply_filters", "score_clip"]


@dataclass(frozen=True)
class FilterConfig:
    """Thresholds for :func:`apply_filters` and analysis settings for :func:`score_clip`.

    Motion values are image widths per second (0.02 = the scene slides 2 % of the frame per second).
    """

    min_motion: float = 0.02  # below: near-static clip, no camera signal
    max_motion: float = 2.0  # above: whip pans / chaotic motion Farneback cannot follow
    static_motion: float = 0.01  # a frame pair below this counts as static
    max_static_fraction: float = 0.5  # clips frozen more than half of the time are dropped
    min_sharpness: float = 30.0  # variance of Laplacian at flow_width; blurred clips fall below
    min_brightness: float = 15.0
    max_brightness: float = 240.0
    min_contrast: float = 8.0
    min_height: int = 32
    min_width: int = 32
    min_frames: int = 2
    min_duration_s: float = 0.0
    flow_width: int = 128  # analysis width (pixels) for flow and sharpness
    num_pairs: int = 8  # frame pairs sampled for flow
    num_sharpness_frames: int = 8

    def __post_init__(self) -> None:
        for name in ("flow_width", "num_pairs", "num_sharpness_frames", "min_height", "min_width", "min_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"FilterConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.min_motion > self.max_motion:
            raise ValueError(f"FilterConfig.min_motion ({self.min_motion}) > max_motion ({self.max_motion})")
        if not 0.0 <= self.max_static_fraction <= 1.0:
            raise ValueError(f"FilterConfig.max_static_fraction must be in [0, 1], got {self.max_static_fraction}")


def _grey_small(frame: np.ndarray, width: int) -> np.ndarray:
    """uint8 (H,W,3) RGB -> uint8 grey (h, width) keeping the aspect ratio (INTER_AREA: no aliasing)."""
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    if w == width:
        return grey
    nh = max(8, round(h * width / w))
    return cv2.resize(grey, (width, nh), interpolation=cv2.INTER_AREA)


def score_clip(frames: np.ndarray, fps: float, cfg: FilterConfig | None = None) -> dict:
    """Quality scores of a clip ``frames`` uint8 (N,H,W,3) at ``fps`` -> dict of floats/ints (see module doc)."""
    cfg = cfg or FilterConfig()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (N,H,W,3), got {frames.dtype} {frames.shape}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    n, h, w, _ = frames.shape
    scores: dict = {"frames": int(n), "fps": float(fps), "height": int(h), "width": int(w),
                    "duration_s": float(n / fps)}
    width = min(cfg.flow_width, w)

    # flow on pairs spread over the clip; the step keeps pairs ~1/8 s apart so slow pans still register
    step = max(1, min(n - 1, round(fps / 8))) if n > 1 else 0
    pair_motion: list[float] = []
    pair_px: list[float] = []
    if n > 1:
        starts = np.unique(np.linspace(0, n - 1 - step, min(cfg.num_pairs, n - step)).round().astype(int))
        for i in starts:
            a, b = _grey_small(frames[i], width), _grey_small(frames[i + step], width)
            # Farneback defaults from OpenCV's sample: 3 levels, window 15, poly_n 5 / sigma 1.2
            flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
            mag = float(np.linalg.norm(flow, axis=-1).mean())
            pair_px.append(mag / step)
            pair_motion.append(mag / width * fps / step)
    scores["flow_px"] = float(np.median(pair_px)) if pair_px else 0.0
    scores["motion"] = float(np.median(pair_motion)) if pair_motion else 0.0
    scores["static_fraction"] = (float(np.mean(np.array(pair_motion) < cfg.static_motion))
                                 if pair_motion else 1.0)

    idx = np.unique(np.linspace(0, n - 1, min(cfg.num_sharpness_frames, n)).round().astype(int))
    greys = [_grey_small(frames[i], width) for i in idx]
    scores["sharpness"] = float(np.median([cv2.Laplacian(g, cv2.CV_64F).var() for g in greys]))
    scores["brightness"] = float(np.mean([g.mean() for g in greys]))
    scores["contrast"] = float(np.median([g.std() for g in greys]))
    return scores


def apply_filters(scores: dict, cfg: FilterConfig | None = None) -> tuple[bool, str | None]:
    """Decide from :func:`score_clip` output: ``(True, None)`` to keep, or ``(False, reason)``.

    The reason names the failed check, the measured value and the threshold, e.g.
    ``"static: motion 0.003 < min_motion 0.02"``. Checks run cheapest-to-explain first.
    """
    cfg = cfg or FilterConfig()
    checks = [
        ("resolution", scores["height"] < cfg.min_height or scores["width"] < cfg.min_width,
         f"{scores['height']}x{scores['width']} below {cfg.min_height}x{cfg.min_width}"),
        ("too_short", scores["frames"] < cfg.min_frames, f"frames {scores['frames']} < min_frames {cfg.min_frames}"),
        ("too_short", scores["duration_s"] < cfg.min_duration_s,
         f"duration {scores['duration_s']:.2f}s < min_duration_s {cfg.min_duration_s}"),
        ("too_dark", scores["brightness"] < cfg.min_brightness,
         f"brightness {scores['brightness']:.1f} < min_brightness {cfg.min_brightness}"),
        ("too_bright", scores["brightness"] > cfg.max_brightness,
         f"brightness {scores['brightness']:.1f} > max_brightness {cfg.max_brightness}"),
        ("low_contrast", scores["contrast"] < cfg.min_contrast,
         f"contrast {scores['contrast']:.1f} < min_contrast {cfg.min_contrast}"),
        ("blurry", scores["sharpness"] < cfg.min_sharpness,
         f"sharpness {scores['sharpness']:.1f} < min_sharpness {cfg.min_sharpness}"),
        ("static", scores["motion"] < cfg.min_motion,
         f"motion {scores['motion']:.4f} < min_motion {cfg.min_motion}"),
        ("static", scores["static_fraction"] > cfg.max_static_fraction,
         f"static_fraction {scores['static_fraction']:.2f} > max_static_fraction {cfg.max_static_fraction}"),
        ("too_fast", scores["motion"] > cfg.max_motion,
         f"motion {scores['motion']:.3f} > max_motion {cfg.max_motion}"),
    ]
    for name, failed, detail in checks:
        if failed:
            return False, f"{name}: {detail}"
    return True, None
