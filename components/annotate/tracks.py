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

__all__ = ["Tracks", "detect_corners", "drop_tracks", "inconsistent_tracks", "klt_step", "track_clip"]


def detect_corners(gray: np.ndarray, pts: np.ndarray, cfg: PoseEstimatorConfig) -> np.ndarray:
    """New Shi-Tomasi corners (M,2) float32 of image gray (H,W), away from the live points pts (K,2).

    With ``cfg.corner_grid`` (cols, rows), corners are bucketed: no grid cell holds more than its share
    (max_corners / cells, live points included), strongest first. Without it the strongest corners of
    the whole image win, and on footage with one high-contrast region (a textured object moving through
    a low-contrast scene) that region takes most tracks: measured 31 % of all observations on two moving
    blocks covering 7 % of the image, which then outvote the static scene in two-view RANSAC.
    """
    room = cfg.max_corners - len(pts)
    if room <= 10:
        return np.zeros((0, 2), np.float32)
    mask = np.full(gray.shape, 255, np.uint8)
    for x, y in pts:
        cv2.circle(mask, (int(x), int(y)), cfg.min_distance, 0, -1)
    grid = cfg.corner_grid
    # maxCorners=0: every candidate, strongest first, so the buckets below keep the strongest of each cell.
    new = cv2.goodFeaturesToTrack(gray, 0 if grid else room, cfg.quality_level, cfg.min_distance, mask=mask,
                                  blockSize=7)
    if new is None:
        return np.zeros((0, 2), np.float32)
    new = new.reshape(-1, 2).astype(np.float32)
    if not grid:
        return new
    cols, rows = grid
    h, w = gray.shape

    def cell(p: np.ndarray) -> np.ndarray:
        cx = np.clip((p[:, 0] * cols / w).astype(int), 0, cols - 1)
        cy = np.clip((p[:, 1] * rows / h).astype(int), 0, rows - 1)
        return cy * cols + cx

    cap = int(np.ceil(cfg.max_corners / (cols * rows)))
    count = np.bincount(cell(pts), minlength=cols * rows) if len(pts) else np.zeros(cols * rows, int)
    keep = np.zeros(len(new), bool)
    for i, c in enumerate(cell(new)):
        if count[c] < cap:
            count[c] += 1
            keep[i] = True
            if keep.sum() >= room:
                break
    return new[keep]


def normalize_gray(gray: np.ndarray, cfg: PoseEstimatorConfig) -> np.ndarray:
    """Photometric normalisation of gray uint8 (N,H,W) for tracking: exposure flicker removed, after an
    optional Gaussian pre-smoothing (``cfg.track_presmooth_sigma`` px).

    Why: KLT assumes brightness constancy, and the shot-cut test compares grey histograms; real video breaks
    both with exposure changes (auto-exposure, flicker). Measured on the bench's hard clips without moving
    objects: exposure flicker + flattened contrast + noise broke the tracks into spurious shot cuts (6
    "shots" in a 48-frame walk, 13 in a mixed clip). Each frame's gain is its mean grey over the running
    median of the means (``cfg.gain_window`` frames either side), applied where it is off by more than
    ``cfg.gain_min``: flicker is fast, while the mean also moves slowly with what the camera sees, which must
    not be "corrected" (a per-frame standardisation did that and doubled ATE on a clean turn, 0.021 -> 0.045).
    No contrast stretch: stretching a clean 96x128 pure-yaw clip's grey spread from 30 to 48 levels tipped
    its model selection from rotation to SfM.
    """
    from scipy.ndimage import median_filter

    x = gray.astype(np.float32)
    if cfg.track_presmooth_sigma > 0:
        x = np.stack([cv2.GaussianBlur(f, (0, 0), cfg.track_presmooth_sigma) for f in x])
    mean = x.mean(axis=(1, 2))
    slow = median_filter(mean, size=2 * cfg.gain_window + 1, mode="nearest")
    gain = mean / np.maximum(slow, 1.0)
    # Frames within gain_min of their trend are left as they are: a panning camera changes the mean too
    # (new walls come into view), and "correcting" that moved a clean pure-rotation clip to the SfM model.
    gain = np.where(np.abs(gain - 1.0) > cfg.gain_min, gain, 1.0)
    x /= np.maximum(gain, 1e-3)[:, None, None]
    return np.clip(x, 0, 255).astype(np.uint8)


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


def _balanced_subset(pts: np.ndarray, height: int, width: int, grid: tuple[int, int], per_cell: int) -> np.ndarray:
    """Indices of at most per_cell points (M,2) per grid cell (cols, rows): every image region gets the
    same say in a model fit, however many tracks a high-contrast region holds."""
    cols, rows = grid
    cx = np.clip((pts[:, 0] * cols / width).astype(int), 0, cols - 1)
    cy = np.clip((pts[:, 1] * rows / height).astype(int), 0, rows - 1)
    cell = cy * cols + cx
    order = np.argsort(cell, kind="stable")
    sc = cell[order]
    first = np.searchsorted(sc, sc)  # position of each point's cell block in the sorted order
    rank = np.arange(len(sc)) - first
    return np.sort(order[rank < per_cell])


def _sampson(F: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """First-order epipolar distance (px) of matches x -> y (M,2) under F (3,3)."""
    xh, yh = np.c_[x, np.ones(len(x))], np.c_[y, np.ones(len(y))]
    Fx, Fty = xh @ F.T, yh @ F
    num = np.sum(yh * Fx, axis=1) ** 2
    return np.sqrt(num / np.maximum(Fx[:, 0] ** 2 + Fx[:, 1] ** 2 + Fty[:, 0] ** 2 + Fty[:, 1] ** 2, 1e-18))


def _transfer(H: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pixel distance (M,) between y (M,2) and x (M,2) mapped by H (3,3)."""
    xh = np.c_[x, np.ones(len(x))] @ H.T
    return np.linalg.norm(xh[:, :2] / np.where(np.abs(xh[:, 2:]) > 1e-12, xh[:, 2:], 1e-12) - y, axis=1)


def inconsistent_tracks(tracks: Tracks, fidx: np.ndarray, height: int, width: int,
                        cfg: PoseEstimatorConfig) -> tuple[np.ndarray, dict]:
    """Tracks of the frames fidx (M,) of one shot that disagree with the dominant two-view geometry.

    Windows (frame a, frame a+d), d in ``cfg.dynamic_offsets``, every ``cfg.dynamic_anchor_step`` frames.
    Per window, the fundamental matrix and the homography (OpenCV USAC) are fitted to a spatially
    balanced subset of the shared tracks (``dynamic_per_cell`` per ``corner_grid`` cell): moving objects
    are compact, so they hold a few cells' worth of say however many tracks they carry (measured: two
    textured blocks on 7 % of the image held 25-50 % of all track observations; unbalanced, RANSAC kept
    them). Where the homography explains at least ``dynamic_h_f_ratio`` of F's subset inliers the window
    is rotation-dominant: F is then degenerate (F = [e]x H with a free epipole, which absorbs a moving
    object whose motion points at some epipole), so the homography judges (transfer error <= 2x
    ``dynamic_epipolar_px``); else F does (Sampson distance <= ``dynamic_epipolar_px``). Every shared
    track is judged, not only the subset. A track is rejected when it is an outlier in more than half of
    the (at least two) windows it appears in. When that would drop more than ``dynamic_max_reject`` of
    the shot's tracks there is no dominant geometry to trust and nothing is dropped.

    Returns (rejected (num_tracks,) bool, stats).
    """
    thr = cfg.dynamic_epipolar_px
    grid = cfg.corner_grid or (8, 5)
    seen = np.zeros(tracks.num_tracks, np.int32)
    out = np.zeros(tracks.num_tracks, np.int32)
    n_pairs = n_rot = 0
    m = len(fidx)
    for a in range(0, m, cfg.dynamic_anchor_step):
        for d in cfg.dynamic_offsets:
            if a + d >= m:
                break
            ids_a, pa = tracks.obs[fidx[a]]
            ids_b, pb = tracks.obs[fidx[a + d]]
            common, ia, ib = np.intersect1d(ids_a, ids_b, assume_unique=True, return_indices=True)
            if len(common) < cfg.dynamic_min_shared:
                continue
            x, y = pa[ia].astype(np.float64), pb[ib].astype(np.float64)
            sub = _balanced_subset(x, height, width, grid, cfg.dynamic_per_cell)
            if len(sub) < 15:
                continue
            try:
                F, mF = cv2.findFundamentalMat(x[sub], y[sub], cv2.USAC_ACCURATE, thr, 0.999, 2000)
                H, mH = cv2.findHomography(x[sub], y[sub], cv2.USAC_ACCURATE, 2.0 * thr, maxIters=2000,
                                           confidence=0.999)
            except cv2.error:  # degenerate sample sets (e.g. all points on a line): this window says nothing
                continue
            if F is None or H is None or F.shape != (3, 3):
                continue
            rot = mH.sum() >= cfg.dynamic_h_f_ratio * mF.sum()
            inl = _transfer(H, x, y) <= 2.0 * thr if rot else _sampson(F, x, y) <= thr
            seen[common] += 1
            out[common[~inl]] += 1
            n_pairs += 1
            n_rot += int(rot)
    in_shot = np.unique(np.concatenate([tracks.obs[f][0] for f in fidx]))
    rejected = (seen >= 2) & (2 * out > seen)
    share = float(rejected[in_shot].mean()) if len(in_shot) else 0.0
    stats = {"windows": n_pairs, "rotation_dominant_windows": n_rot, "tracks": len(in_shot),
             "rejected": int(rejected.sum()), "rejected_share": share, "applied": True}
    if share > cfg.dynamic_max_reject:
        stats["applied"] = False
        rejected[:] = False
    return rejected, stats


def drop_tracks(tracks: Tracks, rejected: np.ndarray) -> Tracks:
    """A copy of tracks without the track ids flagged in rejected (num_tracks,) bool (ids keep their values)."""
    obs = []
    for ids, pts in tracks.obs:
        keep = ~rejected[ids]
        obs.append((ids[keep], pts[keep]))
    return Tracks(obs=obs, num_tracks=tracks.num_tracks, survival=tracks.survival, cuts=tracks.cuts)
