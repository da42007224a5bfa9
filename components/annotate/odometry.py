"""Keyframe visual odometry front end: KLT tracks, landmarks (depth-lifted or triangulated), PnP poses.

See `components.annotate.poses` for the whole pipeline; this module holds the sequential state machine
(`KeyframeVO`) that tracks features, lifts or triangulates landmarks at keyframes, solves each frame by
PnP + RANSAC (RGB-D refined with sensor depth) and falls back to the rotation-only model before a
scale-free map exists. The global refinement afterwards is `components.annotate.bundle_adjust`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from components.annotate.bundle_adjust import observation_depth
from components.annotate.geometry import bearings, kabsch_rotation, project, rotation_between, sample_depth
from components.annotate.tracks import detect_corners, klt_kwargs, klt_step

if TYPE_CHECKING:  # the config lives with the public API; importing it at runtime would be circular
    from components.annotate.poses import PoseEstimatorConfig

__all__ = ["KeyframeVO"]


class KeyframeVO:
    """Sequential keyframe VO state for one clip (`estimate_poses` is the public API)."""

    def __init__(self, gray: np.ndarray, K: np.ndarray, cfg: PoseEstimatorConfig, depth: np.ndarray | None,
                 depth_model, frames: np.ndarray, scale_free: bool):
        """gray uint8 (N,H,W); K (N,3,3) in OpenCV pixel centres; depth None | (N,H,W) metres."""
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
        new = detect_corners(self.gray[f], pts, self.cfg)
        if len(new) == 0:
            return ids, pts
        new_ids = np.arange(len(self.X), len(self.X) + len(new))
        self.X = np.vstack([self.X, np.full((len(new), 3), np.nan)])
        self.anchor = np.vstack([self.anchor, np.full((len(new), 3), np.nan)])
        self.birth_f = np.r_[self.birth_f, np.full(len(new), f)]
        self.birth_pt = np.vstack([self.birth_pt, new])
        return np.r_[ids, new_ids], np.vstack([pts, new])

    def _track(self, f, ids, pts):
        if len(pts) == 0:
            return ids, pts
        ok, p1 = klt_step(self.gray[f - 1], self.gray[f], pts, self.cfg)
        ids, p1 = ids[ok], p1[ok]
        if self.cfg.klt_refine_from_birth:
            ids, p1 = self._refine_from_birth(f, ids, p1, klt_kwargs(self.cfg))
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
        d = sample_depth(dmap, pts, self.cfg.depth_edge_rel)
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
        uva, za = project(self.R[a], self.t[a], self.K[a], X)
        uvb, zb = project(self.R[b], self.t[b], self.K[b], X)
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
        uv, z = project(self.R[f], self.t[f], self.K[f], obj)
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
        d, sd = observation_depth(self.depth[f], img, self.cfg, self.cfg.ba_depth_sigma_rel)
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
        R_fr, n_inl = rotation_between(rpts[ib], pts[ia], self.K[ref], self.K[f], self.cfg.pnp_reproj_px)
        if R_fr is None:
            R_fr = self.R[f - 1] @ self.R[ref].T  # nothing to solve with: hold the last rotation
        elif not self.initialised and n_inl >= self.cfg.min_pnp_inliers:
            # Model selection said "no parallax yet": the rotation-only model IS the solved pose here.
            self.registered[f] = True
            self.inlier_ratio[f] = n_inl / max(len(common), 1)
            fa = bearings(rpts[ib], self.K[ref]) @ R_fr.T
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
        fa, fb = bearings(pa[inl], self.K[ref]), bearings(pb[inl], self.K[f])
        R_rot = kabsch_rotation(fa, fb)
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
