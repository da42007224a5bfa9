"""Pinhole geometry shared by the pose estimator's modules (no state, no tracking).

Poses here are world-to-camera (x_cam = R X + t, the form PnP returns); pixels follow the caller's
convention (the estimator shifts K once to OpenCV's integer pixel centres, see `poses.estimate_poses`).
"""

from __future__ import annotations

import cv2
import numpy as np

from model.trajectory import default_intrinsics  # the one intrinsics builder (re-exported)

__all__ = ["bearings", "default_intrinsics", "kabsch_rotation", "project", "rotation_between", "sample_depth"]


def bearings(pts: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Unit rays (M,3) of pixel points (M,2)."""
    h = np.c_[pts, np.ones(len(pts))] @ np.linalg.inv(K).T
    return h / np.linalg.norm(h, axis=1, keepdims=True)


def kabsch_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation R (3,3) minimising sum ||b_i - R a_i||² for unit vectors a, b (M,3)."""
    u, _, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def rotation_between(pa, pb, Ka, Kb, thresh_px) -> tuple[np.ndarray | None, int]:
    """Relative rotation R_ba (camera a to b) from matched points, assuming pure rotation between them."""
    if len(pa) < 8:
        return None, 0
    _, mask = cv2.findHomography(pa, pb, cv2.RANSAC, 2.0 * thresh_px)
    inl = mask.ravel().astype(bool) if mask is not None else np.ones(len(pa), bool)
    if inl.sum() < 8:
        return None, 0
    return kabsch_rotation(bearings(pa[inl], Ka), bearings(pb[inl], Kb)), int(inl.sum())


def project(R, t, K, X):
    xc = X @ R.T + t
    uv = xc[:, :2] / xc[:, 2:3]
    return uv * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]], xc[:, 2]


def sample_depth(depth_map: np.ndarray, pts: np.ndarray, edge_rel: float) -> np.ndarray:
    """Bilinear depth at sub-pixel points (M,2); NaN at borders, invalid pixels and depth edges."""
    dm = np.where(np.isfinite(depth_map) & (depth_map > 0), depth_map, 0).astype(np.float32)
    mx = pts[:, 0].astype(np.float32).reshape(-1, 1)
    my = pts[:, 1].astype(np.float32).reshape(-1, 1)
    d = cv2.remap(dm, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0).ravel()
    # Occlusion edges mix foreground and background; a lifted point there is wrong by metres.
    k = np.ones((3, 3), np.uint8)
    spread = cv2.dilate(dm, k) - cv2.erode(dm, k)
    sp = cv2.remap(spread, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=np.inf).ravel()
    lo = cv2.remap(cv2.erode(dm, k), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0).ravel()
    good = (d > 0) & (lo > 0) & (sp < edge_rel * np.maximum(d, 1e-6))
    return np.where(good, d, np.nan).astype(np.float64)
