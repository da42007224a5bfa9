"""Rotation-only camera model with self-calibrated focal length (pure pans, tripod shots, distant scenes).

Under pure rotation two views are related by the homography H = K R K^-1; with the principal point at the
image centre, only one focal length f makes every pair's point motion a rotation of bearing vectors. We
find it by a 1-D search: for a candidate f, each pair's best rotation (Kabsch on bearings of its
RANSAC-homography inliers, which drops moving objects) leaves a pixel residual; f minimises the sum.
The curvature of that sum at the minimum gives the focal's standard deviation (its confidence), and the
residual left at the optimum is the model-selection statistic: translation with parallax cannot be
explained by any rotation, so a large residual sends the clip to the SfM path instead.

This is the one place we keep our own solver: SfM mappers (COLMAP's included) cannot start from a
rotation-only clip (no triangulation angle), and the issue's measurement of our bearing-vector path on
pure yaw was already better than COLMAP's registration (100 % vs 21 %).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np
from scipy.optimize import minimize_scalar

from components.annotate.geometry import bearings, kabsch_rotation
from components.annotate.tracks import Tracks

if TYPE_CHECKING:
    from components.annotate.poses import PoseEstimatorConfig

__all__ = ["RotationFit", "fit_rotation_model", "focal_sigma_from_profile"]


@dataclass
class RotationFit:
    """Rotation-only poses of frames fidx (M,): w2c_R (M,3,3) relative to the first, registered (M,) bool,
    K (3,3) (OpenCV centres), median_residual_px per pair (P,), focal_sigma_rel, stats."""

    w2c_R: np.ndarray
    registered: np.ndarray
    K: np.ndarray
    median_residual_px: np.ndarray
    focal_sigma_rel: float
    stats: dict = field(default_factory=dict)


def _K(f: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])


def _pair_residuals(pa: np.ndarray, pb: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best rotation R_ba (3,3) of matched pixels pa, pb (M,2) and the pixel residuals (M,) it leaves."""
    ba, bb = bearings(pa, K), bearings(pb, K)
    R = kabsch_rotation(ba, bb)
    x = ba @ R.T
    uv = x[:, :2] / np.maximum(x[:, 2:3], 1e-9) * K[0, 0] + K[:2, 2]
    return R, np.linalg.norm(uv - pb, axis=1)


def focal_sigma_from_profile(cost, f0: float, rel_step: float = 0.02) -> float:
    """Relative standard deviation of f from a chi-square profile cost(f) (sum of squared residuals in
    units of their noise) around its minimum f0: Delta chi2 = (delta f / sigma_f)^2 on each side."""
    c0 = cost(f0)
    dchi = 0.5 * (cost(f0 * (1 + rel_step)) + cost(f0 * (1 - rel_step))) - c0
    return float(rel_step / np.sqrt(dchi)) if dchi > 1e-12 else float("inf")


def fit_rotation_model(tracks: Tracks, fidx: np.ndarray, height: int, width: int, K_given: np.ndarray | None,
                       cfg: PoseEstimatorConfig) -> RotationFit:
    """Rotation-only fit of the frames fidx (M,) of one shot (pixel coordinates in OpenCV centres).

    Each frame is paired with an anchor frame (the previous anchor while they share enough tracks, then
    the frame itself becomes the next anchor), so rotations chain over anchors only. K_given (3,3): use
    it; None: self-calibrate f (principal point at the image centre).
    """
    m = len(fidx)
    cx, cy = width / 2.0 - 0.5, height / 2.0 - 0.5
    anchors = np.zeros(m, int)
    pairs: list[tuple[int, int, np.ndarray, np.ndarray]] = []  # (anchor k, frame j, pa, pb) homography inliers
    a = 0
    for j in range(1, m):
        ids_a, pts_a = tracks.obs[fidx[a]]
        ids_j, pts_j = tracks.obs[fidx[j]]
        _, ia, ib = np.intersect1d(ids_a, ids_j, assume_unique=True, return_indices=True)
        if len(ia) < max(40, 0.3 * len(ids_a)) and j - 1 > a:
            a = j - 1  # re-anchor late: long pairs constrain f (and the model test) best
            ids_a, pts_a = tracks.obs[fidx[a]]
            _, ia, ib = np.intersect1d(ids_a, ids_j, assume_unique=True, return_indices=True)
        anchors[j] = a
        if len(ia) < 8:
            continue
        pa, pb = pts_a[ia].astype(np.float64), pts_j[ib].astype(np.float64)
        _, mask = cv2.findHomography(pa, pb, cv2.RANSAC, 2.0 * cfg.pnp_reproj_px)
        inl = mask.ravel().astype(bool) if mask is not None else np.ones(len(pa), bool)
        if inl.sum() >= cfg.min_pnp_inliers:
            pairs.append((a, j, pa[inl], pb[inl]))
    stats: dict = {"pairs": len(pairs), "anchors": sorted(set(anchors.tolist()))}
    sig = cfg.ba_track_sigma_px

    def cost(f: float) -> float:
        K = _K(f, cx, cy)
        return float(sum(np.sum(np.minimum(_pair_residuals(pa, pb, K)[1], 4 * sig) ** 2) for _, _, pa, pb in pairs)
                     / sig**2)

    if K_given is not None:
        K = np.asarray(K_given, float).copy()
        sigma = 0.0
    elif pairs:
        # Bounded 1-D search over log f: 10..170 degree horizontal FOV covers every real lens.
        lo, hi = np.log(0.5 * width / np.tan(np.radians(85))), np.log(0.5 * width / np.tan(np.radians(5)))
        res = minimize_scalar(lambda lf: cost(np.exp(lf)), bounds=(lo, hi), method="bounded",
                              options={"xatol": 1e-4})
        f = float(np.exp(res.x))
        K = _K(f, cx, cy)
        sigma = focal_sigma_from_profile(cost, f)
    else:
        K = _K(0.5 * width / np.tan(np.radians(cfg.default_hfov_deg) / 2), cx, cy)
        sigma = float("inf")
    R = np.tile(np.eye(3), (m, 1, 1))
    reg = np.zeros(m, bool)
    reg[0] = True
    med = []
    for a, j, pa, pb in pairs:
        R_ja, e = _pair_residuals(pa, pb, K)
        R[j] = R_ja @ R[a]
        reg[j] = reg[a]
        med.append(float(np.median(e)))
    for j in range(1, m):
        if not reg[j]:
            R[j] = R[j - 1]  # held (flagged unregistered by the caller, with the reason)
    return RotationFit(w2c_R=R, registered=reg, K=K, median_residual_px=np.asarray(med), focal_sigma_rel=sigma,
                       stats=stats)
