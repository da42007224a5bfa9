"""KLT feature tracks over a whole clip, and what they say about the clip (shot cuts).

The tracks are the measurement every pose path shares: `odometry.KeyframeVO` consumes them frame by
frame, and `colmap_backend` hands them to pycolmap as keypoints + matches in place of SIFT (sub-pixel
KLT on consecutive frames survives blur and low texture better than descriptor matching, and costs a
fraction of SIFT extraction + matching).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from components.annotate.poses import PoseEstimatorConfig

__all__ = ["Tracks", "detect_corners", "klt_step", "track_clip"]


def detect_corners(gray: np.ndarray, pts: np.ndarray, cfg: PoseEstimatorConfig) -> np.ndarray:
    """New Shi-Tomasi corners (M,2) float32 of image gray (H,W), away from the live points pts (K,2)."""
    room = cfg.max_corners - len(pts)
    if room <= 10:
        return np.zeros((0, 2), np.float32)
    mask = np.full(gray.shape, 255, np.uint8)
    for x, y in pts:
        cv2.circle(mask, (int(x), int(y)), cfg.min_distance, 0, -1)
    new = cv2.goodFeaturesToTrack(gray, room, cfg.quality_level, cfg.min_distance, mask=mask, blockSize=7)
    return np.zeros((0, 2), np.float32) if new is None else new.reshape(-1, 2).astype(np.float32)


def klt_kwargs(cfg: PoseEstimatorConfig) -> dict:
    return {"winSize": (cfg.klt_window, cfg.klt_window), "maxLevel": cfg.klt_levels,
            "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)}


def klt_step(g0: np.ndarray, g1: np.ndarray, pts: np.ndarray, cfg: PoseEstimatorConfig) -> tuple[np.ndarray, np.ndarray]:
    """Track points pts (M,2) float32 from image g0 to g1 (H,W). Returns (ok (M,) bool, new points (M,2)).

    A forward-backward check (``fb_max_px``) drops tracks that do not return to where they started:
    occlusions, blur smears and repeated texture.
    """
    if len(pts) == 0:
        return np.zeros(0, bool), pts
    kw = klt_kwargs(cfg)
    p1, st1, _ = cv2.calcOpticalFlowPyrLK(g0, g1, pts, None, **kw)
    p0b, st2, _ = cv2.calcOpticalFlowPyrLK(g1, g0, p1, None, **kw)
    h, w = g1.shape
    fb = np.linalg.norm(pts - p0b, axis=1)
    ok = (st1.ravel() == 1) & (st2.ravel() == 1) & (fb < cfg.fb_max_px)
    ok &= (p1[:, 0] >= 0) & (p1[:, 0] < w - 1) & (p1[:, 1] >= 0) & (p1[:, 1] < h - 1)
    return ok, p1


@dataclass
class Tracks:
    """Feature tracks of one clip.

    obs: per frame (ids (M_f,) int64 track ids, pts (M_f,2) float32 pixels, OpenCV centres);
    num_tracks: ids run over [0, num_tracks); survival (N,) share of frame f-1's tracks alive in f
    (1 at f=0); cuts: frames that start a new shot (tracks and appearance both break there).
    """

    obs: list[tuple[np.ndarray, np.ndarray]]
    num_tracks: int
    survival: np.ndarray
    cuts: list[int]


def _hist(gray: np.ndarray) -> np.ndarray:
    h = cv2.calcHist([gray], [0], None, [32], [0, 256]).ravel()
    return h / max(h.sum(), 1.0)


def track_clip(gray: np.ndarray, cfg: PoseEstimatorConfig) -> Tracks:
    """KLT tracks through gray uint8 (N,H,W); corners are topped up whenever live tracks thin out.

    A shot cut is a frame where almost no track survives AND the grey-level histogram jumps (either alone
    happens inside a shot: fast pans kill tracks, exposure changes move the histogram); tracking restarts
    there, so no track spans a cut.
    """
    n = len(gray)
    pts = detect_corners(gray[0], np.zeros((0, 2), np.float32), cfg)
    ids = np.arange(len(pts))
    next_id = len(pts)
    obs = [(ids.copy(), pts.copy())]
    survival = np.ones(n)
    cuts: list[int] = []
    n_ref = max(len(pts), 1)
    h_prev = _hist(gray[0])
    for f in range(1, n):
        ok, p1 = klt_step(gray[f - 1], gray[f], pts, cfg)
        survival[f] = ok.sum() / max(len(pts), 1)
        h_f = _hist(gray[f])
        # 1 - Bhattacharyya coefficient: measured <= 0.011 inside rendered shots, 0.023 across a cut between
        # two rendered rooms (real cuts differ more); the track collapse is the primary signal.
        jump = 1.0 - np.sum(np.sqrt(h_prev * h_f))
        h_prev = h_f
        if survival[f] < cfg.cut_max_survival and jump > cfg.cut_min_hist_distance:
            cuts.append(f)
            ok[:] = False
        ids, pts = ids[ok], p1[ok]
        if len(pts) < cfg.keyframe_track_ratio * n_ref or f % cfg.keyframe_max_gap == 0 or not ok.any():
            new = detect_corners(gray[f], pts, cfg)
            ids = np.r_[ids, np.arange(next_id, next_id + len(new))]
            pts = np.vstack([pts, new])
            next_id += len(new)
            n_ref = max(len(pts), 1)
        obs.append((ids.copy(), pts.copy()))
    return Tracks(obs=obs, num_tracks=next_id, survival=survival, cuts=cuts)
