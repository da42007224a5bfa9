"""Camera poses (6-DoF, metric when a depth source exists) from raw video: the model's action labels.

Pipeline (a keyframe visual-odometry front end plus a sparse bundle adjustment back end):

1. KLT tracks (``cv2.calcOpticalFlowPyrLK``) with a forward-backward check; corners are re-detected at
   keyframes away from live tracks, so tracks survive low texture and fast motion. Each chained track is
   re-aligned to its patch in the frame it was born in, which removes the drift (and motion lag) that
   frame-to-frame chaining accumulates.
2. Every track gets a 3D landmark once, at a keyframe:
   - metric mode: lifted from depth (sensor depth, or a monocular metric-depth model evaluated at keyframes
     only and scale-aligned to the existing map so successive keyframes agree);
   - scale-free mode: triangulated between the previous keyframe and this one, after a two-view start
     (essential matrix + ``recoverPose``) that waits for enough rotation-compensated parallax.
3. Each frame's pose comes from PnP + RANSAC against the landmarks (``cv2.solvePnPRansac`` then
   ``solvePnPRefineLM``); with sensor depth it is then refined with the frame's own depth at every inlier
   (RGB-D odometry: depth separates a sideways step from a yaw, which reprojection alone confuses).
   Because depth-lifted landmarks do not need parallax, pure rotation and low parallax are handled by the
   same code path. Before a scale-free map exists, or when PnP fails, the rotation is solved from bearing
   vectors (Kabsch on RANSAC-homography inliers) and the position is held or interpolated; those frames
   are flagged unregistered and lower the confidence.
4. A global bundle adjustment (``scipy.optimize.least_squares``, sparse Jacobian, Huber loss, two rounds
   with outlier removal) refines every registered pose and landmark; in metric mode every observation
   with a depth map also has a depth residual weighted by a noise model (relative noise + depth slope x
   track noise, occlusion edges rejected), which keeps the metric scale.

Output poses are camera-to-world, OpenCV axes (+X right, +Y down, +Z forward), relative to frame 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
from scipy.optimize import least_squares
from scipy.sparse import coo_matrix
from scipy.spatial.transform import Rotation

from components.annotate.depth import DepthModel

__all__ = ["PoseEstimatorConfig", "PoseResult", "default_intrinsics", "estimate_poses"]


@dataclass
class PoseEstimatorConfig:
    """Tuning of the estimator; defaults are set for 128-720 px videos at 8-30 fps."""

    max_corners: int = 500  # features per keyframe (new ones fill in around live tracks)
    quality_level: float = 0.005
    min_distance: int = 8  # px between corners: spreads them over the image for better-conditioned PnP
    klt_window: int = 21
    klt_levels: int = 3
    fb_max_px: float = 0.8  # forward-backward KLT error above which a track is dropped
    # Re-align tracks to their birth patch (removes KLT drift). None = on when a depth source anchors the
    # poses; off for scale-free runs, where the re-aligned tracks on small images made rotation drift worse
    # (fast strafe at 96x128: 8.6 deg mean rotation error with it, 2.7 deg without).
    klt_refine_from_birth: bool | None = None
    klt_refine_max_px: float = 2.0  # ... dropping tracks whose refined and chained positions disagree more
    pnp_reproj_px: float = 2.0  # RANSAC inlier threshold
    min_pnp_inliers: int = 12
    keyframe_track_ratio: float = 0.7  # new keyframe when landmark tracks fall below this share
    keyframe_max_gap: int = 8  # ... or after this many frames, to keep the map dense
    default_hfov_deg: float = 60.0  # horizontal FOV assumed when no intrinsics are given (flagged)
    min_depth_m: float = 0.05
    max_depth_m: float = 200.0
    depth_edge_rel: float = 0.05  # reject lifts where the 3x3 depth spread exceeds this share (edges)
    init_min_parallax_deg: float = 1.0  # scale-free two-view start needs this median parallax
    tri_min_angle_deg: float = 0.75  # triangulated landmarks need at least this ray angle
    pnp_depth_refine: bool = True  # with sensor depth, refine each PnP pose with per-point depth residuals
    bundle_adjust: bool = True
    ba_max_nfev: int = 30
    # Relative noise of sensor depth in the depth residuals. Rendered/sensor depth is precise; what is
    # uncertain is WHERE a track samples it, which the slope term (ba_track_sigma_px) models separately.
    ba_depth_sigma_rel: float = 0.001
    ba_model_depth_sigma_rel: float = 0.05  # same for a monocular depth model (keyframes only)
    ba_track_sigma_px: float = 0.5  # KLT track noise: reprojection sigma, and depth slope x this in depth sigma
    ba_huber_sigma: float = 2.0  # residuals (in sigmas) beyond this count linearly (robust to bad tracks)
    ba_outlier_sigma: float = 5.0  # after the first BA round, drop observations beyond this many sigmas
    ba_max_landmarks: int = 4000  # subsample for speed; the poses are what we need

    def __post_init__(self) -> None:
        for name in ("max_corners", "klt_window", "klt_levels", "min_pnp_inliers", "keyframe_max_gap"):
            if getattr(self, name) <= 0:
                raise ValueError(f"PoseEstimatorConfig.{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 < self.keyframe_track_ratio <= 1.0:
            raise ValueError(f"PoseEstimatorConfig.keyframe_track_ratio must be in (0,1], got {self.keyframe_track_ratio}")
        if not 1.0 < self.default_hfov_deg < 179.0:
            raise ValueError(f"PoseEstimatorConfig.default_hfov_deg must be in (1,179), got {self.default_hfov_deg}")


@dataclass
class PoseResult:
    """Estimated trajectory of one clip.

    c2w (N,4,4) float64 camera-to-world relative to frame 0 (OpenCV axes; metres when ``metric``);
    intrinsics (N,3,3) float64; fps; confidence float in [0,1]; registered (N,) bool (False: the pose was
    propagated/interpolated, not solved); intrinsics_source "given" | "default_fov"; diagnostics: counts,
    reprojection RMSE, per-frame inlier ratios and confidence.
    """

    c2w: np.ndarray
    intrinsics: np.ndarray
    fps: float
    confidence: float
    registered: np.ndarray
    metric: bool
    intrinsics_source: str = "given"
    diagnostics: dict[str, Any] = field(default_factory=dict)


def default_intrinsics(height: int, width: int, hfov_deg: float) -> np.ndarray:
    """Pinhole K (3,3) with the given horizontal FOV and the principal point at the image centre.

    Pixel convention (COLMAP's, as in components.ingest): pixel (r, c) has its centre at (c+0.5, r+0.5),
    so the image centre is (W/2, H/2).
    """
    f = 0.5 * width / np.tan(np.radians(hfov_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


# ----------------------------------------------------------------------------------------------------------
# input validation


def _check_inputs(frames, fps, intrinsics, depth):
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be a uint8 array (N,H,W,3), got {getattr(frames, 'shape', type(frames))}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    n, h, w, _ = frames.shape
    if n < 2:
        raise ValueError(f"need at least 2 frames to estimate poses, got {n}")
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps}")
    if intrinsics is not None:
        K = np.asarray(intrinsics, dtype=np.float64)
        if K.shape == (3, 3):
            K = np.broadcast_to(K, (n, 3, 3)).copy()
        if K.shape != (n, 3, 3):
            raise ValueError(f"intrinsics must be (3,3) or (N,3,3) with N={n}, got {K.shape}")
        if not np.isfinite(K).all() or (K[:, 0, 0] <= 0).any() or (K[:, 1, 1] <= 0).any():
            raise ValueError("intrinsics must be finite with positive focal lengths")
        intrinsics = K
    if depth is not None:
        depth = np.asarray(depth, dtype=np.float32)
        if depth.shape != (n, h, w):
            raise ValueError(f"depth must be (N,H,W)=({n},{h},{w}) metres, got {depth.shape}")
    return intrinsics, depth


# ----------------------------------------------------------------------------------------------------------
# small geometry helpers (poses stored world-to-camera: x_cam = R X + t, the form PnP returns)


def _bearings(pts: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Unit rays (M,3) of pixel points (M,2)."""
    h = np.c_[pts, np.ones(len(pts))] @ np.linalg.inv(K).T
    return h / np.linalg.norm(h, axis=1, keepdims=True)


def _kabsch_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation R (3,3) minimising sum ||b_i - R a_i||² for unit vectors a, b (M,3)."""
    u, _, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def _rotation_between(pa, pb, Ka, Kb, thresh_px) -> tuple[np.ndarray | None, int]:
    """Relative rotation R_ba (camera a to b) from matched points, assuming pure rotation between them."""
    if len(pa) < 8:
        return None, 0
    _, mask = cv2.findHomography(pa, pb, cv2.RANSAC, 2.0 * thresh_px)
    inl = mask.ravel().astype(bool) if mask is not None else np.ones(len(pa), bool)
    if inl.sum() < 8:
        return None, 0
    return _kabsch_rotation(_bearings(pa[inl], Ka), _bearings(pb[inl], Kb)), int(inl.sum())


def _project(R, t, K, X):
    xc = X @ R.T + t
    uv = xc[:, :2] / xc[:, 2:3]
    return uv * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]], xc[:, 2]


def _sample_depth(depth_map: np.ndarray, pts: np.ndarray, edge_rel: float) -> np.ndarray:
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


# ----------------------------------------------------------------------------------------------------------
# the estimator


class _VO:
    """Sequential keyframe VO state for one clip (private; `estimate_poses` is the API)."""

    def __init__(self, gray, K, cfg, depth, depth_model, frames, scale_free):
        self.gray, self.K, self.cfg = gray, K, cfg
        self.depth, self.depth_model, self.frames = depth, depth_model, frames
        self.scale_free = scale_free
        n = len(gray)
        self.R = np.tile(np.eye(3), (n, 1, 1))  # world-to-camera rotation
        self.t = np.zeros((n, 3))
        self.registered = np.zeros(n, bool)
        self.inlier_ratio = np.zeros(n)
        self.X = np.zeros((0, 3))  # landmark per track id (NaN until set)
        self.anchor = np.zeros((0, 3))  # (frame, track-level depth, valid) for the BA depth prior
        self.birth_f = np.zeros(0, int)  # per track id: frame it was detected in, and where
        self.birth_pt = np.zeros((0, 2), np.float32)
        self.obs: list[tuple[np.ndarray, np.ndarray]] = []  # per frame: (track ids (M,), pixels (M,2))
        self.keyframes: list[int] = []
        self.depth_scales: list[float] = []
        self.kf_depth: dict[int, np.ndarray] = {}  # depth-model maps of keyframes (scaled to the map)
        self.initialised = not scale_free  # scale-free waits for a two-view start
        self.kf_rot_ref = 0  # pre-init: frame whose rotation later frames are chained from
        self.rot_residuals: list[np.ndarray] = []  # pixel residuals of the rotation-only model

    # --- tracks
    def _detect(self, f, ids, pts):
        mask = np.full(self.gray[f].shape, 255, np.uint8)
        for x, y in pts:
            cv2.circle(mask, (int(x), int(y)), self.cfg.min_distance, 0, -1)
        room = self.cfg.max_corners - len(pts)
        if room <= 10:
            return ids, pts
        new = cv2.goodFeaturesToTrack(
            self.gray[f], room, self.cfg.quality_level, self.cfg.min_distance, mask=mask, blockSize=7
        )
        if new is None:
            return ids, pts
        new = new.reshape(-1, 2).astype(np.float32)
        new_ids = np.arange(len(self.X), len(self.X) + len(new))
        self.X = np.vstack([self.X, np.full((len(new), 3), np.nan)])
        self.anchor = np.vstack([self.anchor, np.full((len(new), 3), np.nan)])
        self.birth_f = np.r_[self.birth_f, np.full(len(new), f)]
        self.birth_pt = np.vstack([self.birth_pt, new])
        return np.r_[ids, new_ids], np.vstack([pts, new])

    def _track(self, f, ids, pts):
        if len(pts) == 0:
            return ids, pts
        kw = {
            "winSize": (self.cfg.klt_window, self.cfg.klt_window),
            "maxLevel": self.cfg.klt_levels,
            "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01),
        }
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(self.gray[f - 1], self.gray[f], pts, None, **kw)
        p0b, st2, _ = cv2.calcOpticalFlowPyrLK(self.gray[f], self.gray[f - 1], p1, None, **kw)
        h, w = self.gray[f].shape
        fb = np.linalg.norm(pts - p0b, axis=1)
        ok = (st1.ravel() == 1) & (st2.ravel() == 1) & (fb < self.cfg.fb_max_px)
        ok &= (p1[:, 0] >= 0) & (p1[:, 0] < w - 1) & (p1[:, 1] >= 0) & (p1[:, 1] < h - 1)
        ids, p1 = ids[ok], p1[ok]
        if self.cfg.klt_refine_from_birth:
            ids, p1 = self._refine_from_birth(f, ids, p1, kw)
        return ids, p1

    def _refine_from_birth(self, f, ids, pts, kw):
        """Re-align each chained track against its patch in the frame it was detected in.

        Frame-to-frame KLT adds a little error every frame and the sum walks away from the true point (and
        lags behind the motion, which shortens the path); aligning to the birth patch, starting from the
        chained guess, removes that accumulated drift. Where the patch no longer matches (scale change,
        occlusion) the refined point disagrees with the chained one and the track is dropped.
        """
        out = pts.copy()
        keep = np.ones(len(ids), bool)
        bf = self.birth_f[ids]
        for b in np.unique(bf):
            if b >= f - 1:
                continue  # born in the previous frame: the chained step already was the birth alignment
            sel = np.flatnonzero(bf == b)
            p0 = self.birth_pt[ids[sel]]
            guess = pts[sel].copy()
            p1, st, _ = cv2.calcOpticalFlowPyrLK(
                self.gray[b], self.gray[f], p0, guess, flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
                **{**kw, "maxLevel": 1},
            )
            good = (st.ravel() == 1) & (np.linalg.norm(p1 - guess, axis=1) < self.cfg.klt_refine_max_px)
            out[sel[good]] = p1[good]
            keep[sel[~good]] = False
        return ids[keep], out[keep]

    # --- landmarks
    def _keyframe_depth(self, f) -> np.ndarray | None:
        if self.depth is not None:
            return self.depth[f]
        if self.depth_model is None:
            return None
        d = np.asarray(self.depth_model(self.frames[f]), dtype=np.float32)
        if d.shape != self.gray[f].shape:
            raise ValueError(f"depth model returned {d.shape}, expected {self.gray[f].shape}")
        return d

    def depth_map(self, f) -> np.ndarray | None:
        """Metric depth map (H,W) of frame f for the BA: sensor depth, or a keyframe's scaled model depth."""
        if self.depth is not None:
            return self.depth[f]
        return self.kf_depth.get(f)

    def _lift(self, f, ids, pts):
        """Give tracks without a landmark one, from depth (metric) or triangulation (scale-free)."""
        need = np.isnan(self.X[ids, 0])
        if self.scale_free:
            self._triangulate(f, ids[need], pts[need])
            return
        dmap = self._keyframe_depth(f)
        d = _sample_depth(dmap, pts, self.cfg.depth_edge_rel)
        if self.depth is None and self.keyframes:
            # Monocular depth has a per-frame scale wobble: align it to depths the map already predicts.
            have = ~need & np.isfinite(d)
            if have.sum() >= 10:
                z_pred = (self.X[ids[have]] @ self.R[f].T + self.t[f])[:, 2]
                s = float(np.median(z_pred / d[have]))
                if np.isfinite(s) and s > 0:
                    d = d * s
                    dmap = dmap * s
                    self.depth_scales.append(s)
        if self.depth is None:
            self.kf_depth[f] = dmap
        use = need & np.isfinite(d) & (d > self.cfg.min_depth_m) & (d < self.cfg.max_depth_m)
        if not use.any():
            return
        xc = np.c_[pts[use], np.ones(use.sum())] @ np.linalg.inv(self.K[f]).T * d[use, None]
        self.X[ids[use]] = (xc - self.t[f]) @ self.R[f]  # R^T (x - t)
        self.anchor[ids[use]] = np.c_[np.full(use.sum(), f), d[use], np.ones(use.sum())]

    def _triangulate(self, f, ids, pts):
        if len(self.keyframes) == 0 or len(ids) == 0:
            return
        kf = self.keyframes[-1]
        kf_ids, kf_pts = self.obs[kf]
        common, ia, ib = np.intersect1d(ids, kf_ids, return_indices=True)
        if len(common) == 0:
            return
        self._triangulate_pair(kf, f, common, kf_pts[ib], pts[ia])

    def _triangulate_pair(self, a, b, ids, pa, pb):
        Pa = self.K[a] @ np.c_[self.R[a], self.t[a]]
        Pb = self.K[b] @ np.c_[self.R[b], self.t[b]]
        Xh = cv2.triangulatePoints(Pa, Pb, pa.T.astype(np.float64), pb.T.astype(np.float64))
        X = (Xh[:3] / Xh[3]).T
        uva, za = _project(self.R[a], self.t[a], self.K[a], X)
        uvb, zb = _project(self.R[b], self.t[b], self.K[b], X)
        ca = -self.R[a].T @ self.t[a]
        cb = -self.R[b].T @ self.t[b]
        ra, rb = X - ca, X - cb
        cosang = np.sum(ra * rb, 1) / (np.linalg.norm(ra, axis=1) * np.linalg.norm(rb, axis=1) + 1e-12)
        ok = (za > 0) & (zb > 0) & (cosang < np.cos(np.radians(self.cfg.tri_min_angle_deg)))
        ok &= np.linalg.norm(uva - pa, axis=1) < 2 * self.cfg.pnp_reproj_px
        ok &= np.linalg.norm(uvb - pb, axis=1) < 2 * self.cfg.pnp_reproj_px
        self.X[ids[ok]] = X[ok]
        return int(ok.sum())

    # --- poses
    def _pnp(self, f, ids, pts, prev):
        has = ~np.isnan(self.X[ids, 0])
        if has.sum() < self.cfg.min_pnp_inliers:
            return False, np.zeros(len(ids), bool)
        obj, img = self.X[ids[has]], pts[has].astype(np.float64)
        rvec0, _ = cv2.Rodrigues(self.R[prev])
        ok, rvec, tvec, inl = cv2.solvePnPRansac(
            obj, img, self.K[f], None, rvec0.copy(), self.t[prev].reshape(3, 1).copy(),
            useExtrinsicGuess=True, iterationsCount=200, reprojectionError=self.cfg.pnp_reproj_px,
            confidence=0.999, flags=cv2.SOLVEPNP_ITERATIVE,
        )
        if not ok or inl is None or len(inl) < self.cfg.min_pnp_inliers:
            return False, np.zeros(len(ids), bool)
        inl = inl.ravel()
        rvec, tvec = cv2.solvePnPRefineLM(obj[inl], img[inl], self.K[f], None, rvec, tvec)
        if self.cfg.pnp_depth_refine and self.depth is not None:
            rvec, tvec = self._refine_with_depth(f, obj[inl], img[inl], rvec, tvec)
        self.R[f] = cv2.Rodrigues(rvec)[0]
        self.t[f] = tvec.ravel()
        self.registered[f] = True
        self.inlier_ratio[f] = len(inl) / len(obj)
        # Drop gross outliers from tracking so they do not poison later keyframes.
        uv, z = _project(self.R[f], self.t[f], self.K[f], obj)
        err = np.linalg.norm(uv - img, axis=1)
        keep = np.ones(len(ids), bool)
        keep[np.flatnonzero(has)] = (err < 3 * self.cfg.pnp_reproj_px) & (z > 0)
        return True, keep

    def _refine_with_depth(self, f, obj, img, rvec, tvec):
        """Motion-only refinement of frame f against landmarks obj (M,3) seen at img (M,2), with the
        frame's own sensor depth as a second residual (RGB-D odometry).

        Reprojection alone confuses a sideways step with a small yaw for distant points (both slide the
        image); the measured depth of each point in THIS frame tells them apart, so the per-frame pose, and
        with it the keyframe that later lifts new landmarks, does not drift in rotation and scale.
        """
        d, sd = _obs_depth(self.depth[f], img, self.cfg, self.cfg.ba_depth_sigma_rel)
        hd = np.isfinite(d)
        if hd.sum() < self.cfg.min_pnp_inliers:
            return rvec, tvec
        K, sig_px = self.K[f], self.cfg.ba_track_sigma_px
        od, osd, Xd = d[hd], sd[hd], obj[hd]

        def residuals(p):
            R = Rotation.from_rotvec(p[:3]).as_matrix()
            xc = obj @ R.T + p[3:]
            z = np.maximum(xc[:, 2], 1e-6)
            uv = xc[:, :2] / z[:, None] * [K[0, 0], K[1, 1]] + K[:2, 2]
            zd = Xd @ R[2] + p[5]
            return np.r_[((uv - img) / sig_px).ravel(), (zd - od) / osd]

        sol = least_squares(residuals, np.r_[rvec.ravel(), tvec.ravel()], method="trf", loss="huber",
                            f_scale=self.cfg.ba_huber_sigma, max_nfev=20)
        return sol.x[:3].reshape(3, 1), sol.x[3:].reshape(3, 1)

    def _rotation_only(self, f, ids, pts, ref):
        """Rotation of frame f from bearings against frame ref; the camera centre is held at ref's.

        Before a scale-free map exists this is the selected (rotation-only) model and counts as solved;
        after, it is only the fallback for a PnP failure and the frame stays unregistered.
        """
        rid, rpts = self.obs[ref]
        common, ia, ib = np.intersect1d(ids, rid, return_indices=True)
        R_fr, n_inl = _rotation_between(rpts[ib], pts[ia], self.K[ref], self.K[f], self.cfg.pnp_reproj_px)
        if R_fr is None:
            R_fr = self.R[f - 1] @ self.R[ref].T  # nothing to solve with: hold the last rotation
        elif not self.initialised and n_inl >= self.cfg.min_pnp_inliers:
            # Model selection said "no parallax yet": the rotation-only model IS the solved pose here.
            self.registered[f] = True
            self.inlier_ratio[f] = n_inl / max(len(common), 1)
            fa = _bearings(rpts[ib], self.K[ref]) @ R_fr.T
            uv = fa[:, :2] / fa[:, 2:3] * [self.K[f, 0, 0], self.K[f, 1, 1]] + self.K[f, :2, 2]
            e = np.linalg.norm(uv - pts[ia], axis=1)
            self.rot_residuals.append(e[e < 2 * self.cfg.pnp_reproj_px])
        c_ref = -self.R[ref].T @ self.t[ref]
        self.R[f] = R_fr @ self.R[ref]
        self.t[f] = -self.R[f] @ c_ref

    def _try_init(self, f, ids, pts):
        """Scale-free two-view start between the current reference keyframe and frame f."""
        ref = self.kf_rot_ref
        rid, rpts = self.obs[ref]
        common, ia, ib = np.intersect1d(ids, rid, return_indices=True)
        if len(common) < 30:
            return False
        pa, pb = rpts[ib].astype(np.float64), pts[ia].astype(np.float64)
        # Normalised coordinates let one call handle per-frame intrinsics.
        na = cv2.undistortPoints(pa.reshape(-1, 1, 2), self.K[ref], None).reshape(-1, 2)
        nb = cv2.undistortPoints(pb.reshape(-1, 1, 2), self.K[f], None).reshape(-1, 2)
        thr = self.cfg.pnp_reproj_px / self.K[f, 0, 0]
        E, m = cv2.findEssentialMat(na, nb, np.eye(3), cv2.RANSAC, 0.999, thr)
        if E is None or E.shape != (3, 3):
            return False
        _, R_ba, t_ba, m2 = cv2.recoverPose(E, na, nb, np.eye(3), mask=m.copy())
        inl = m2.ravel() > 0
        if inl.sum() < 30:
            return False
        # Model selection: parallax left after the best PURE rotation (not recoverPose's R, which is
        # ill-posed when there is no baseline). Pure rotation leaves ~0 and must not start a map.
        fa, fb = _bearings(pa[inl], self.K[ref]), _bearings(pb[inl], self.K[f])
        R_rot = _kabsch_rotation(fa, fb)
        ang = np.degrees(np.arccos(np.clip(np.sum((fa @ R_rot.T) * fb, 1), -1, 1)))
        if np.median(ang) < self.cfg.init_min_parallax_deg:
            return False
        # Unit baseline between the two views fixes the (arbitrary) scale of a scale-free run.
        self.R[f] = R_ba @ self.R[ref]
        self.t[f] = R_ba @ self.t[ref] + t_ba.ravel()
        n_tri = self._triangulate_pair(ref, f, common[inl], pa[inl], pb[inl])
        if n_tri < 20:
            return False
        self.initialised = True
        self.registered[ref] = self.registered[f] = True
        self.inlier_ratio[ref] = self.inlier_ratio[f] = inl.mean()
        self.keyframes = [ref]
        # Frames between ref and f were rotation-only guesses: re-solve them against the new map.
        for g in range(ref + 1, f):
            gi, gp = self.obs[g]
            self._pnp(g, gi, gp, g - 1)
        return True

    def run(self):
        n = len(self.gray)
        ids, pts = self._detect(0, np.zeros(0, int), np.zeros((0, 2), np.float32))
        self.registered[0] = True
        self.inlier_ratio[0] = 1.0
        self.obs.append((ids.copy(), pts.copy()))
        if not self.scale_free:
            self._lift(0, ids, pts)
        self.keyframes.append(0)
        n_kf_landmarks = int((~np.isnan(self.X[ids, 0])).sum())
        for f in range(1, n):
            ids, pts = self._track(f, ids, pts)
            self.obs.append((ids, pts))
            new_kf = False
            if not self.initialised:
                if self._try_init(f, ids, pts):
                    new_kf = True
                else:
                    self._rotation_only(f, ids, pts, self.kf_rot_ref)
                    rid = self.obs[self.kf_rot_ref][0]
                    # Re-anchor late (few shared tracks left): an early re-anchor would reset the
                    # baseline that the two-view start is waiting for.
                    if len(np.intersect1d(ids, rid)) < max(40, 0.3 * len(rid)):
                        # Reference is being lost while rotating: re-anchor rotation at this frame.
                        self.kf_rot_ref = f
                        ids, pts = self._detect(f, ids, pts)
                        self.obs[f] = (ids, pts)
                    continue
            else:
                ok, keep = self._pnp(f, ids, pts, f - 1)
                if not ok:
                    self._rotation_only(f, ids, pts, f - 1)
                    self._constant_velocity(f)
                    new_kf = True
                else:
                    ids, pts = ids[keep], pts[keep]
                    self.obs[f] = (ids, pts)
                n_lm = int((~np.isnan(self.X[ids, 0])).sum())
                if n_lm < self.cfg.keyframe_track_ratio * n_kf_landmarks or f - self.keyframes[-1] >= self.cfg.keyframe_max_gap:
                    new_kf = True
            if new_kf:
                ids, pts = self._detect(f, ids, pts)
                self.obs[f] = (ids, pts)
                self._lift(f, ids, pts)
                self.keyframes.append(f)
                n_kf_landmarks = max(int((~np.isnan(self.X[ids, 0])).sum()), 1)

    def _constant_velocity(self, f):
        """Hold the previous velocity of the camera centre for a frame PnP could not solve."""
        c = [-self.R[g].T @ self.t[g] for g in (f - 2, f - 1)] if f >= 2 else None
        if c is None:
            return
        c_f = c[1] + (c[1] - c[0])
        self.t[f] = -self.R[f] @ c_f


def _obs_depth(dmap: np.ndarray, pts: np.ndarray, cfg: PoseEstimatorConfig, rel_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Depth (M,) and its noise sigma (M,) at tracked points (M,2) of one frame; NaN where unusable.

    The noise model is what makes sensor depth usable at every observation: a track is only known to
    ~``ba_track_sigma_px``, so where depth changes fast (slanted surfaces) the sampled depth is uncertain
    by |grad d| x that, on top of a relative sensor noise. Occlusion edges are rejected outright.
    """
    d = _sample_depth(dmap, pts, cfg.depth_edge_rel)
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


def _bundle_adjust(vo: _VO, metric: bool, cfg: PoseEstimatorConfig) -> dict[str, float]:
    """Global bundle adjustment over every registered frame and every landmark seen at least twice.

    Residuals (all in units of their noise sigma, Huber loss): reprojection of every observation
    (sigma ``ba_track_sigma_px``) and, in metric mode, the depth of every observation that has a depth
    map (every frame with sensor depth, keyframes with a depth model) under the noise model of
    `_obs_depth`. Depth at every observation, not only at the landmark's anchor, is what pins the metric
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
            d, sd = _obs_depth(dmap, pts, cfg, rel)
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
        "ba_observations": int(len(of)),
        "ba_depth_observations": int(np.isfinite(od2[ok]).sum()),
        "ba_outliers_removed": n_out,
    }


def _fill_unregistered(R_w2c, t_w2c, registered):
    """Interpolate camera centres (linear) of unregistered frames between registered neighbours.

    Rotations of unregistered frames already come from bearing-vector Kabsch, which needs no parallax, so
    they are kept; only their positions, which that solver cannot see, are interpolated.
    """
    c = -np.einsum("nji,nj->ni", R_w2c, t_w2c)
    reg = np.flatnonzero(registered)
    if len(reg) >= 2 and not registered.all():
        for k in range(3):
            c[:, k] = np.interp(np.arange(len(c)), reg, c[reg, k])
    return c


def _reproj_rmse(vo: _VO) -> float:
    errs = []
    for f in np.flatnonzero(vo.registered):
        ids, pts = vo.obs[f]
        ok = ~np.isnan(vo.X[ids, 0])
        if ok.sum():
            uv, _ = _project(vo.R[f], vo.t[f], vo.K[f], vo.X[ids[ok]])
            errs.append(np.linalg.norm(uv - pts[ok], axis=1))
    if not errs:
        # No map (a scale-free clip that never had parallax): judge the rotation-only model instead.
        errs = vo.rot_residuals
    if not errs:
        return float("nan")
    e = np.concatenate(errs)
    e = e[e < 10 * 2.0]  # RMSE over inlier-ish residuals: a few dead tracks should not dominate
    return float(np.sqrt(np.mean(e**2))) if len(e) else float("nan")


def estimate_poses(
    frames: np.ndarray,
    fps: float,
    intrinsics: np.ndarray | None = None,
    depth: np.ndarray | None = None,
    depth_model: DepthModel | None = None,
    scale_free: bool = False,
    config: PoseEstimatorConfig | None = None,
) -> PoseResult:
    """Per-frame camera poses of a video.

    frames uint8 (N,H,W,3) RGB; fps > 0; intrinsics None | (3,3) | (N,3,3) pixels; depth None | (N,H,W)
    float32 metres (z-depth; <=0/NaN = invalid); depth_model: a `DepthModel`, run on keyframes only;
    scale_free: no depth source at all, poses up to one global scale (``metric=False``).
    Exactly one scale source must be chosen: depth, depth_model, or scale_free=True.

    Returns a `PoseResult` with c2w (N,4,4) relative to frame 0. Every frame gets a pose; frames that could
    not be solved are flagged in ``registered`` and lower ``confidence``.
    """
    cfg = config or PoseEstimatorConfig()
    K, depth = _check_inputs(frames, fps, intrinsics, depth)
    n_sources = (depth is not None) + (depth_model is not None) + bool(scale_free)
    if n_sources != 1:
        raise ValueError(
            "choose exactly one scale source: depth= (sensor depth, metres), depth_model= (monocular metric "
            f"depth) or scale_free=True; got depth={depth is not None}, depth_model={depth_model is not None}, "
            f"scale_free={scale_free}"
        )
    if cfg.klt_refine_from_birth is None:
        cfg = replace(cfg, klt_refine_from_birth=not scale_free)
    n, h, w, _ = frames.shape
    source = "given"
    if K is None:
        K = np.broadcast_to(default_intrinsics(h, w, cfg.default_hfov_deg), (n, 3, 3)).copy()
        source = "default_fov"
    gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
    # OpenCV puts pixel centres at integers, K uses COLMAP's +0.5 centres: shift K once for the tracker's
    # coordinates instead of shifting every point (0.5 px of principal-point error biases the poses).
    K_cv = K.copy()
    K_cv[:, :2, 2] -= 0.5
    vo = _VO(gray, K_cv, cfg, depth, depth_model, frames, scale_free)
    vo.run()
    metric = not scale_free
    diag: dict[str, Any] = {}
    if cfg.bundle_adjust and vo.initialised:
        diag.update(_bundle_adjust(vo, metric, cfg))
    centres = _fill_unregistered(vo.R, vo.t, vo.registered)
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, :3, :3] = np.transpose(vo.R, (0, 2, 1))
    c2w[:, :3, 3] = centres
    # Relative to frame 0 (already identity unless BA moved it; it is fixed there, this is a guard).
    c2w = np.linalg.inv(c2w[0]) @ c2w
    rmse = _reproj_rmse(vo)
    reg_frac = float(vo.registered.mean())
    inl = float(np.median(vo.inlier_ratio[vo.registered])) if vo.registered.any() else 0.0
    # Confidence: share of solved frames x typical RANSAC inlier share x a reprojection-error falloff
    # (1 px RMSE halves it). Each factor is in [0,1], so the product is too.
    c_rep = 1.0 / (1.0 + rmse**2) if np.isfinite(rmse) else 0.0
    confidence = float(np.clip(reg_frac * inl * c_rep, 0.0, 1.0))
    per_frame = np.where(vo.registered, vo.inlier_ratio * c_rep, 0.0)
    diag.update(
        {
            "num_keyframes": len(vo.keyframes),
            "keyframes": list(map(int, vo.keyframes)),
            "num_landmarks": int(np.isfinite(vo.X[:, 0]).sum()),
            "reprojection_rmse_px": rmse,
            "registered_fraction": reg_frac,
            "median_inlier_ratio": inl,
            "per_frame_confidence": per_frame,
            "initialised": bool(vo.initialised),
            "monocular_depth_scales": list(vo.depth_scales),
        }
    )
    return PoseResult(
        c2w=c2w, intrinsics=K, fps=float(fps), confidence=confidence, registered=vo.registered.copy(),
        metric=metric, intrinsics_source=source, diagnostics=diag,
    )
