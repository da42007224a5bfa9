"""Global sparse bundle adjustment of the VO map (scipy ``least_squares``; depth residuals keep metric scale).

Used for the metric paths (sensor depth, monocular depth model) where our depth residuals make it better
than a reprojection-only BA; scale-free clips without intrinsics go through pycolmap instead
(`components.annotate.colmap_backend`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np
from scipy.optimize import least_squares
from scipy.sparse import coo_matrix
from scipy.spatial.transform import Rotation

from components.annotate.geometry import sample_depth

if TYPE_CHECKING:
    from components.annotate.odometry import KeyframeVO
    from components.annotate.poses import PoseEstimatorConfig

__all__ = ["bundle_adjust", "observation_depth"]


def observation_depth(dmap: np.ndarray, pts: np.ndarray, cfg: PoseEstimatorConfig, rel_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Depth (M,) and its noise sigma (M,) at tracked points (M,2) of one frame; NaN where unusable.

    The noise model is what makes sensor depth usable at every observation: a track is only known to
    ~``ba_track_sigma_px``, so where depth changes fast (slanted surfaces) the sampled depth is uncertain
    by |grad d| x that, on top of a relative sensor noise. Occlusion edges are rejected outright.
    """
    d = sample_depth(dmap, pts, cfg.depth_edge_rel)
    dm = np.where(np.isfinite(dmap) & (dmap > 0), dmap, 0).astype(np.float32)
    gx = cv2.Sobel(dm, cv2.CV_32F, 1, 0, ksize=3, scale=1 / 8)
    gy = cv2.Sobel(dm, cv2.CV_32F, 0, 1, ksize=3, scale=1 / 8)
    grad = np.sqrt(gx * gx + gy * gy)
    mx = pts[:, 0].astype(np.float32).reshape(-1, 1)
    my = pts[:, 1].astype(np.float32).reshape(-1, 1)
    g = cv2.remap(grad, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).ravel().astype(np.float64)
    sigma = rel_sigma * d + cfg.ba_track_sigma_px * g
    ok = np.isfinite(d) & (d > cfg.min_depth_m) & (d < cfg.max_depth_m)
    return np.where(ok, d, np.nan), np.where(ok, sigma, np.nan)


def bundle_adjust(vo: KeyframeVO, metric: bool, cfg: PoseEstimatorConfig) -> dict[str, float]:
    """Global bundle adjustment over every registered frame and every landmark seen at least twice.

    Residuals (all in units of their noise sigma, Huber loss): reprojection of every observation
    (sigma ``ba_track_sigma_px``) and, in metric mode, the depth of every observation that has a depth
    map (every frame with sensor depth, keyframes with a depth model) under the noise model of
    `observation_depth`. Depth at every observation, not only at the landmark's anchor, is what pins the metric
    scale and separates sideways translation from yaw (the two look alike in the image for distant points).
    Frame 0 is fixed (the gauge); scale-free runs also fix the first two keyframes (the scale).
    Two rounds: after the first, observations with residuals above ``ba_outlier_sigma`` are dropped.
    The Jacobian is finite differences over a sparse pattern (scipy groups independent columns, so one
    Jacobian costs ~10 residual evaluations whatever the problem size).
    """
    frames = np.flatnonzero(vo.registered)
    fixed = {0}
    if not metric:
        fixed |= set(vo.keyframes[:2])
    free = np.array([f for f in frames if f not in fixed], int)
    if len(free) == 0:
        return {}
    fidx = -np.ones(len(vo.R), int)
    fidx[free] = np.arange(len(free))
    rows_f, rows_l, rows_uv, rows_d, rows_sd = [], [], [], [], []
    rel = cfg.ba_depth_sigma_rel if vo.depth is not None else cfg.ba_model_depth_sigma_rel
    for f in frames:
        ids, pts = vo.obs[f]
        ok = ~np.isnan(vo.X[ids, 0])
        ids, pts = ids[ok], pts[ok].astype(np.float64)
        rows_f.append(np.full(len(ids), f))
        rows_l.append(ids)
        rows_uv.append(pts)
        dmap = vo.depth_map(f) if metric else None
        if dmap is not None and len(ids):
            d, sd = observation_depth(dmap, pts, cfg, rel)
        else:
            d = sd = np.full(len(ids), np.nan)
        rows_d.append(d)
        rows_sd.append(sd)
    of, ol = np.concatenate(rows_f), np.concatenate(rows_l)
    ouv, od, osd = np.concatenate(rows_uv), np.concatenate(rows_d), np.concatenate(rows_sd)
    lms, counts = np.unique(ol, return_counts=True)
    lms = lms[counts >= 2]
    if len(lms) > cfg.ba_max_landmarks:
        lms = np.random.default_rng(0).choice(lms, cfg.ba_max_landmarks, replace=False)
    lidx = -np.ones(len(vo.X), int)
    lidx[lms] = np.arange(len(lms))
    keep = lidx[ol] >= 0
    of, ol, ouv, od, osd = of[keep], ol[keep], ouv[keep], od[keep], osd[keep]
    if len(of) < 50:
        return {}
    n_p, n_l = len(free), len(lms)
    x_pose0 = np.c_[Rotation.from_matrix(vo.R[free]).as_rotvec(), vo.t[free]].ravel()
    R_all, t_all = vo.R.copy(), vo.t.copy()
    sig_px = cfg.ba_track_sigma_px

    def unpack(x):
        p = x[: 6 * n_p].reshape(n_p, 6)
        R, t = R_all.copy(), t_all.copy()
        R[free] = Rotation.from_rotvec(p[:, :3]).as_matrix()
        t[free] = p[:, 3:]
        return R, t, x[6 * n_p :].reshape(n_l, 3)

    def solve(of, ol, ouv, od, osd, x0, nfev):
        lm_col = lidx[ol]
        pose_col = fidx[of]
        Ks = vo.K[of]
        hd = np.flatnonzero(np.isfinite(od))

        def residuals(x):
            R, t, L = unpack(x)
            xc = np.einsum("nij,nj->ni", R[of], L[lm_col]) + t[of]
            z = np.maximum(xc[:, 2], 1e-6)
            u = Ks[:, 0, 0] * xc[:, 0] / z + Ks[:, 0, 2]
            v = Ks[:, 1, 1] * xc[:, 1] / z + Ks[:, 1, 2]
            r = [np.c_[u - ouv[:, 0], v - ouv[:, 1]].ravel() / sig_px, (xc[hd, 2] - od[hd]) / osd[hd]]
            return np.concatenate(r)

        m_rep, m_d = 2 * len(of), len(hd)
        # Sparsity: a reprojection row touches its frame's 6 pose columns (if free) and its landmark's 3;
        # a depth row the same for its observation.
        res_rows = np.r_[2 * np.arange(len(of)), 2 * np.arange(len(of)) + 1, m_rep + np.arange(m_d)]
        obs_of_row = np.r_[np.arange(len(of)), np.arange(len(of)), hd]
        pc, lc = pose_col[obs_of_row], lm_col[obs_of_row]
        has_p = pc >= 0
        r_idx = [np.repeat(res_rows[has_p], 6), np.repeat(res_rows, 3)]
        c_idx = [(6 * pc[has_p, None] + np.arange(6)).ravel(), (6 * n_p + 3 * lc[:, None] + np.arange(3)).ravel()]
        r_idx, c_idx = np.concatenate(r_idx), np.concatenate(c_idx)
        A = coo_matrix((np.ones(len(r_idx), np.int8), (r_idx, c_idx)), shape=(m_rep + m_d, len(x0))).tocsr()
        sol = least_squares(residuals, x0, jac_sparsity=A, method="trf", tr_solver="lsmr", loss="huber",
                            f_scale=cfg.ba_huber_sigma, x_scale="jac", max_nfev=nfev)
        return sol, residuals(x0), m_rep, hd

    x0 = np.concatenate([x_pose0, vo.X[lms].ravel()])
    sol, r0, m_rep, hd = solve(of, ol, ouv, od, osd, x0, cfg.ba_max_nfev)
    # Drop observations whose reprojection or depth disagrees by more than ba_outlier_sigma (drifted
    # tracks, occlusion junctions) and polish.
    e_rep = np.linalg.norm(sol.fun[:m_rep].reshape(-1, 2), axis=1)
    bad = e_rep > cfg.ba_outlier_sigma
    bad_d = np.zeros(len(of), bool)
    bad_d[hd] = np.abs(sol.fun[m_rep:]) > cfg.ba_outlier_sigma
    od2 = np.where(bad_d, np.nan, od)
    ok = ~bad
    n_out = int(bad.sum() + bad_d.sum())
    if n_out:
        sol, _, m_rep, _ = solve(of[ok], ol[ok], ouv[ok], od2[ok], osd[ok], sol.x, cfg.ba_max_nfev)
    R, t, L = unpack(sol.x)
    vo.R, vo.t = R, t
    vo.X[lms] = L
    return {
        "ba_rmse_px_before": float(np.sqrt(np.mean(r0[:m_rep] ** 2)) * sig_px) if len(r0) else float("nan"),
        "ba_rmse_px_after": float(np.sqrt(np.mean(sol.fun[:m_rep] ** 2)) * sig_px),
        "ba_landmarks": int(n_l),
        "ba_observations": len(of),
        "ba_depth_observations": int(np.isfinite(od2[ok]).sum()),
        "ba_outliers_removed": n_out,
    }
