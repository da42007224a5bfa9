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

from components.annotate.bundle_adjust import bundle_adjust
from components.annotate.depth import DepthModel
from components.annotate.geometry import default_intrinsics, project
from components.annotate.odometry import KeyframeVO
from components.annotate.scale_free import scale_free_poses
from components.annotate.tracks import normalize_gray

__all__ = ["PoseEstimatorConfig", "PoseResult", "default_intrinsics", "estimate_poses"]


@dataclass
class PoseEstimatorConfig:
    """Tuning of the estimator; defaults are set for 128-720 px videos at 8-30 fps."""

    max_corners: int = 500  # features per keyframe (new ones fill in around live tracks)
    quality_level: float = 0.005
    min_distance: int = 8  # px between corners: spreads them over the image for better-conditioned PnP
    # Corner buckets (cols, rows), each capped at max_corners / cells: no one high-contrast region (a moving
    # object) may take most of new corners (see tracks.detect_corners). None (default): strongest corners
    # anywhere. Off because (8, 5) tipped a clean pure-yaw clip's model selection to SfM (its better-spread
    # tracks lower SfM's RMSE below the rotation test's bar) and did not lower the moving objects' share of
    # observations (their tracks outlive the background's). inconsistent_tracks balances its fits anyway.
    corner_grid: tuple[int, int] | None = None
    klt_window: int = 21
    # Tracking input (tracks.normalize_gray): exposure flicker removed (gain vs the running median of frame
    # means over +- gain_window frames), and a Gaussian pre-smoothing sigma (px; 0 = off).
    normalize_gray: bool = True
    gain_window: int = 4
    gain_min: float = 0.05  # |gain - 1| below this is not flicker (clean clips drift up to 3.3 % on a fast pan)
    track_presmooth_sigma: float = 0.0
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
    # Shot cuts inside a clip: almost no KLT track survives AND the grey histogram jumps.
    cut_max_survival: float = 0.2
    cut_min_hist_distance: float = 0.015  # 1 - Bhattacharyya coefficient of 32-bin histograms (in-shot: < 0.012)
    # Scale-free clips (no depth) are mapped by pycolmap from our KLT tracks (components.annotate.colmap_backend).
    colmap_mapper: str = "incremental"  # "incremental" | "global" (GLOMAP-style, view-graph focal calibration)
    colmap_camera_model: str = "SIMPLE_PINHOLE"  # one focal + principal point; SIMPLE_RADIAL adds k1
    colmap_max_pair_offset: int = 24  # match frame pairs up to this far apart (offsets ~x1.5 apart)
    colmap_ransac_px: float = 2.0  # two-view RANSAC threshold (KLT tracks are sub-pixel; SIFT default is 4)
    colmap_init_min_tri_angle_deg: float = 4.0
    # One thread: COLMAP's worker threads race (a hard clip registered 0 or 45 of 48 frames on two runs in one
    # process with 2); with one, a clip's poses repeat exactly, and the batch step already runs clips in parallel.
    colmap_threads: int = 1
    # Ceres' stop on the relative change of the cost in the focal profile's bundle adjustments (COLMAP's 0 runs
    # every allowed iteration after convergence: colmap_backend._ba_options).
    colmap_ba_function_tolerance: float = 1e-6
    random_seed: int = 0  # OpenCV's RANSAC and every pycolmap generator, seeded per clip (repeatable poses)
    colmap_keyframe_step: int = 3  # map every k-th frame with SfM, register the rest by absolute pose
    # ... beside a registered keyframe, turning from it by at most this per frame (a fast 180 deg/s pan at
    # 16 fps turns 11 deg a frame; a bad PnP pose measured 53-83 deg off).
    pnp_max_turn_deg_per_frame: float = 20.0
    # The keyframes and the frames registered beside them are then bundle-adjusted together
    # (colmap_backend._joint_bundle_adjustment) under a Cauchy loss of this scale (px; 0 = squared error, which
    # measured orbit RotErr 0.034 deg against 0.023 with the loss, 0.025 without the joint BA), the focal held at
    # the profile's estimate unless
    # colmap_joint_ba_refine_focal (then the split check's groups get the joint BA too, so its bias term compares
    # one estimator with itself).
    colmap_joint_ba: bool = True
    colmap_joint_ba_loss_px: float = 1.0
    colmap_joint_ba_refine_focal: bool = False
    colmap_joint_ba_iters: int = 10  # Ceres iterations of that BA
    # Incremental mapper: models started per shot (COLMAP's default 50). Only the largest is kept, and one
    # covering less than min_registered_fraction sends the shot to the global mapper, so more models are
    # spent effort; on a pure pan every model fails slowly (no triangulation angle): see colmap_backend.
    colmap_max_models: int = 2
    # Model selection: a shot whose 90th-percentile per-pair median residual under the best pure rotation
    # is below this (px) is posed as rotation (translation there is not observable from the images).
    rotation_max_residual_px: float = 0.3
    rotation_fallback_max_residual_px: float = 3.0  # ... and, when SfM cannot map the shot, below this
    rotation_vs_sfm_ratio: float = 1.5  # ... or when its median residual is within this factor of SfM's RMSE
    # A shot the rotation model explains below this (p90, px) but not below rotation_max_residual_px is mapped
    # by the global mapper first: the incremental one fails on a pan (no triangulation angle) after trying its
    # initial pairs (measured on 48-frame pure yaws: 2.9 s at 50 deg, 11-13 s at 60 deg) and the global one was
    # then run anyway. 0 = incremental first always.
    sfm_global_first_max_residual_px: float = 1.0
    min_registered_fraction: float = 0.5  # SfM must register this share of a shot, else rotation fallback
    # "sfm": scale-free clips go through scale_free.scale_free_poses (pycolmap on our tracks); "vo": the
    # older sequential VO (kept for comparison; the issue measured it 2-100x worse than COLMAP scale-free).
    scale_free_backend: str = "sfm"
    refine_principal_point: bool = False  # only where the data supports it: off unless asked
    # Moving objects (tracks.inconsistent_tracks): drop tracks that disagree with the dominant two-view
    # geometry before self-calibration and mapping (scale-free path).
    reject_dynamic_tracks: bool = True
    dynamic_offsets: tuple[int, ...] = (4, 8, 16)  # window lengths (frames): long ones give parallax
    dynamic_anchor_step: int = 2
    dynamic_min_shared: int = 30
    dynamic_per_cell: int = 3  # tracks per corner_grid cell in each window's model fit (spatial balance)
    dynamic_epipolar_px: float = 1.0
    dynamic_h_f_ratio: float = 0.8  # COLMAP's max_H_inlier_ratio: above it a pair is rotation/planar-dominant
    dynamic_max_reject: float = 0.5
    # Self-calibrated SfM focal is trusted only with a relative sigma below this and a field of view in
    # [10, 170] degrees; otherwise the shot is re-mapped with the default FOV held fixed (flagged default_fov).
    focal_max_sigma_rel: float = 0.03  # focal_confidence < 0.1; clean clips measured at sigma 0.3-2.7 %
    # ... and, for a focal whose profile passed, the sigma that also counts the split test's spread (below).
    # Wider: the split test catches the confidently wrong (hard clips measured at 42 % and inf), and half the
    # default FOV's typical error on real footage (15-20 %) is still the better guess; the confidence says so.
    focal_max_split_sigma_rel: float = 0.10
    # A shot whose focal failed only the split test is re-mapped with the default FOV; the untrusted map keeps
    # the poses when the default-FOV map registers fewer than this share of its frames (scale_free_poses).
    focal_fallback_min_kept: float = 0.8
    # SfM focal profile (colmap_backend.focal_profile): log-f steps, range x/÷ span around the mapper's focal,
    # BA iterations per step (each step starts from its neighbour's solution, so few are needed).
    focal_profile_step: float = 0.04
    focal_profile_span: float = 2.0
    focal_profile_ba_iters: int = 20
    focal_profile_stop_chi2: float = 100.0  # a side of the scan stops once this far above the optimum, rising
    focal_profile_rival_chi2: float = 25.0  # another local minimum within this counts as an equal candidate
    # Points with a mean reprojection error above this x the median are dropped before the profile (sliding
    # corners at occlusion edges bias the focal: clean mixed clip +3.0 % -> +1.6 %); 0 = keep every point.
    focal_profile_outlier_ratio: float = 2.0
    # Model test of a trusted SfM focal (colmap_backend.split_focal_check): the shot's tracks split at random into
    # this many disjoint groups (repeats times), each mapped on its own; their spread is a sigma that needs no
    # noise model, and the larger of it and the profile's is the one trusted. 0 = off (the profile's sigma alone:
    # measured +5.9 % at 0.997 confidence on a clean turn). Costs G x repeats mappings of 1/G of the tracks.
    focal_split_groups: int = 2
    focal_split_repeats: int = 2
    # The groups' focal profiles step twice as coarsely: a group's map only has to name its basin, not an
    # honest sigma (the split's spread is the sigma). Measured on the bench's clean walk and turn: the same
    # group focals as at focal_profile_step, half the bundle adjustments. The all-track map keeps the fine step
    # (at 0.08 a clean strafe's profile no longer pinned its focal and the shot fell back to the default FOV).
    focal_split_profile_step: float = 0.08
    # ... and map every 6th frame rather than every colmap_keyframe_step-th (0: the same step as the shot's
    # map). Measured on the real-footage bench (320x192, 48 frames), clean clips at 50 and 60 deg HFOV: the same
    # trust decisions, group focals within a few % of the step-3 ones (split sigma 0.013-0.074 vs 0.011-0.071;
    # the turn's +4.5-5.0 % focal still flagged at confidence 0.02-0.08), clean clips 25-35 % faster. Only the
    # groups: the shot's own map at step 6 lost the hard turn (0/48 frames) and step 4 trusted a +3620 % focal.
    focal_split_keyframe_step: int = 6
    # ... but never below this many group keyframes (a 30-frame, 192x120 shot with a moving block mapped on 6 of
    # them lost its focal and ATE 0.009 -> 0.056; there the groups keep colmap_keyframe_step).
    focal_split_min_keyframes: int = 8
    # Processes that map those groups side by side, the caller's included (W - 1 forkserver workers, started
    # before the all-track map so they use the core it leaves idle: colmap_backend.SplitFocalCheck; the result
    # does not depend on the count). 1 here, because worker processes need the caller's
    # `if __name__ == "__main__":` guard (as any process pool does); the CLIs and the bench have it and pass
    # their cores (--workers). The batch step, which already runs clips in parallel, uses 1 in its workers.
    focal_split_workers: int = 1

    def __post_init__(self) -> None:
        for name in ("max_corners", "klt_window", "klt_levels", "min_pnp_inliers", "keyframe_max_gap"):
            if getattr(self, name) <= 0:
                raise ValueError(f"PoseEstimatorConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.corner_grid is not None and (len(self.corner_grid) != 2 or min(self.corner_grid) < 1):
            raise ValueError(f"PoseEstimatorConfig.corner_grid must be None or (cols, rows) >= 1, got {self.corner_grid}")
        if not 0.0 < self.keyframe_track_ratio <= 1.0:
            raise ValueError(f"PoseEstimatorConfig.keyframe_track_ratio must be in (0,1], got {self.keyframe_track_ratio}")
        if self.scale_free_backend not in ("sfm", "vo"):
            raise ValueError(f"PoseEstimatorConfig.scale_free_backend must be 'sfm' or 'vo', got {self.scale_free_backend!r}")
        if self.sfm_global_first_max_residual_px < 0:
            raise ValueError("PoseEstimatorConfig.sfm_global_first_max_residual_px must be >= 0 (px; 0 = off), got "
                             f"{self.sfm_global_first_max_residual_px}")
        if self.colmap_joint_ba_iters < 1:
            raise ValueError(f"PoseEstimatorConfig.colmap_joint_ba_iters must be >= 1, got {self.colmap_joint_ba_iters}")
        if self.colmap_joint_ba_loss_px < 0:
            raise ValueError("PoseEstimatorConfig.colmap_joint_ba_loss_px must be >= 0 (px; 0 = squared error), got "
                             f"{self.colmap_joint_ba_loss_px}")
        if self.colmap_max_models < 1:
            raise ValueError(f"PoseEstimatorConfig.colmap_max_models must be >= 1, got {self.colmap_max_models}")
        if self.colmap_mapper not in ("incremental", "global"):
            raise ValueError(f"PoseEstimatorConfig.colmap_mapper must be 'incremental' or 'global', got {self.colmap_mapper!r}")
        if self.focal_split_groups < 0 or self.focal_split_groups == 1:
            raise ValueError(f"PoseEstimatorConfig.focal_split_groups must be 0 (off) or >= 2, got {self.focal_split_groups}")
        if self.focal_max_split_sigma_rel < self.focal_max_sigma_rel:
            raise ValueError("PoseEstimatorConfig.focal_max_split_sigma_rel must be >= focal_max_sigma_rel "
                             f"({self.focal_max_sigma_rel}), got {self.focal_max_split_sigma_rel}")
        if self.focal_profile_outlier_ratio != 0 and self.focal_profile_outlier_ratio < 1:
            raise ValueError("PoseEstimatorConfig.focal_profile_outlier_ratio must be 0 (off) or >= 1 (x the median "
                             f"reprojection error), got {self.focal_profile_outlier_ratio}")
        if self.pnp_max_turn_deg_per_frame <= 0:
            raise ValueError(f"PoseEstimatorConfig.pnp_max_turn_deg_per_frame must be > 0, got {self.pnp_max_turn_deg_per_frame}")
        if not 0.0 <= self.focal_fallback_min_kept <= 1.0:
            raise ValueError(f"PoseEstimatorConfig.focal_fallback_min_kept must be in [0,1], got {self.focal_fallback_min_kept}")
        if not 0.0 <= self.colmap_ba_function_tolerance < 1.0:
            raise ValueError("PoseEstimatorConfig.colmap_ba_function_tolerance must be in [0,1) (a relative change of "
                             f"the cost; 0 = COLMAP's, every iteration), got {self.colmap_ba_function_tolerance}")
        if self.focal_split_workers < 1:
            raise ValueError(f"PoseEstimatorConfig.focal_split_workers must be >= 1, got {self.focal_split_workers}")
        for name in ("focal_profile_step", "focal_split_profile_step"):
            if getattr(self, name) <= 0:
                raise ValueError(f"PoseEstimatorConfig.{name} must be > 0 (a relative step in focal), got {getattr(self, name)}")
        if self.focal_split_min_keyframes < 2:
            raise ValueError(f"PoseEstimatorConfig.focal_split_min_keyframes must be >= 2, got {self.focal_split_min_keyframes}")
        if self.focal_split_keyframe_step < 0:
            raise ValueError("PoseEstimatorConfig.focal_split_keyframe_step must be 0 (colmap_keyframe_step) or >= 1, "
                             f"got {self.focal_split_keyframe_step}")
        if self.focal_split_repeats < 1:
            raise ValueError(f"PoseEstimatorConfig.focal_split_repeats must be >= 1, got {self.focal_split_repeats}")
        if not 1.0 < self.default_hfov_deg < 179.0:
            raise ValueError(f"PoseEstimatorConfig.default_hfov_deg must be in (1,179), got {self.default_hfov_deg}")


@dataclass
class PoseResult:
    """Estimated trajectory of one clip.

    c2w (N,4,4) float64 camera-to-world relative to frame 0 (OpenCV axes; metres when ``metric``);
    intrinsics (N,3,3) float64; fps; confidence float in [0,1]; registered (N,) bool (False: the pose was
    propagated/interpolated, not solved, and unregistered_reason says why; "" where registered);
    intrinsics_source "given" | "self_calibrated_sfm" | "self_calibrated_rotation" | "default_fov";
    focal_confidence in [0,1] (1 when given, 0 for the default FOV); scale_source "sensor_depth" |
    "monocular_depth" (a `DepthModel`) | "none" (scale-free, ``metric`` False); shot_starts: frames that start a shot
    (poses of each shot are relative to its first frame); diagnostics: counts, reprojection RMSE,
    per-frame inlier ratios and confidence, per-shot model and focal sigma.
    """

    c2w: np.ndarray
    intrinsics: np.ndarray
    fps: float
    confidence: float
    registered: np.ndarray
    metric: bool
    intrinsics_source: str = "given"
    focal_confidence: float = 1.0
    scale_source: str = "none"
    unregistered_reason: list[str] = field(default_factory=list)
    shot_starts: list[int] = field(default_factory=lambda: [0])
    diagnostics: dict[str, Any] = field(default_factory=dict)


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


def _reproj_rmse(vo: KeyframeVO) -> float:
    errs = []
    for f in np.flatnonzero(vo.registered):
        ids, pts = vo.obs[f]
        ok = ~np.isnan(vo.X[ids, 0])
        if ok.sum():
            uv, _ = project(vo.R[f], vo.t[f], vo.K[f], vo.X[ids[ok]])
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
    # OpenCV's RANSAC (moving-track rejection, homographies, PnP) and COLMAP's draw from process-wide
    # generators: seeded per clip, a clip's poses do not depend on what ran before it (measured: the same
    # clip's focal 2 % right in one run, 27 % off with confidence in the next).
    cv2.setRNGSeed(cfg.random_seed)
    n, h, w, _ = frames.shape
    gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
    if cfg.normalize_gray:
        gray = normalize_gray(gray, cfg)
    if scale_free and cfg.scale_free_backend == "sfm":
        return _scale_free_result(gray, fps, K, cfg)
    source, f_conf, calib = "given", 1.0, {}
    if K is None:
        # Metric path without intrinsics: self-calibrate with the scale-free machinery first, then run the
        # depth-anchored VO with that K (depth fixes scale, not focal).
        sf = scale_free_poses(gray, None, cfg)
        best = max(sf.shots, key=lambda sh: sh["frames"])
        K = sf.K[best["start"]].copy()
        K[:2, 2] += 0.5
        K = np.broadcast_to(K, (n, 3, 3)).copy()
        source, f_conf = best["focal_source"], float(best["focal_confidence"])
        calib = {"calibration_shot": best, "focal_fallback": best.get("focal_fallback", "")}
        if source == "default_fov" or not best.get("focal_trusted", True):
            # The VO re-solves every pose with this K: an untrusted focal buys nothing here, the flagged
            # default FOV bounds the error.
            K = np.broadcast_to(default_intrinsics(h, w, cfg.default_hfov_deg), (n, 3, 3)).copy()
            source, f_conf = "default_fov", 0.0
    # OpenCV puts pixel centres at integers, K uses COLMAP's +0.5 centres: shift K once for the tracker's
    # coordinates instead of shifting every point (0.5 px of principal-point error biases the poses).
    K_cv = K.copy()
    K_cv[:, :2, 2] -= 0.5
    vo = KeyframeVO(gray, K_cv, cfg, depth, depth_model, frames, scale_free)
    vo.run()
    metric = not scale_free
    diag: dict[str, Any] = {}
    if cfg.bundle_adjust and vo.initialised:
        diag.update(bundle_adjust(vo, metric, cfg))
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
            **calib,
        }
    )
    reasons = ["" if r else "PnP failed: pose from the rotation fallback and a constant-velocity position"
               for r in vo.registered]
    return PoseResult(
        c2w=c2w, intrinsics=K, fps=float(fps), confidence=confidence, registered=vo.registered.copy(),
        metric=metric, intrinsics_source=source, focal_confidence=f_conf,
        scale_source="sensor_depth" if depth is not None else "monocular_depth" if depth_model is not None else "none",
        unregistered_reason=reasons,
        diagnostics=diag,
    )


def _scale_free_result(gray: np.ndarray, fps: float, K: np.ndarray | None, cfg: PoseEstimatorConfig) -> PoseResult:
    """`scale_free.scale_free_poses` wrapped as a PoseResult (K given in COLMAP centres, like the API)."""
    K_cv = None
    if K is not None:
        K_cv = K.copy()
        K_cv[:, :2, 2] -= 0.5
    sf = scale_free_poses(gray, K_cv, cfg)
    Kout = sf.K.copy()
    Kout[:, :2, 2] += 0.5
    main = max(sf.shots, key=lambda sh: sh["frames"])  # the longest shot speaks for the clip's camera
    rmse = sf.reprojection_rmse_px
    c_rep = 1.0 / (1.0 + rmse**2) if np.isfinite(rmse) else 0.0
    reg_frac = float(sf.registered.mean())
    diag = {
        "shots": sf.shots,
        "reprojection_rmse_px": rmse,
        "registered_fraction": reg_frac,
        "initialised": any(sh.get("model") == "sfm" for sh in sf.shots),
        "per_frame_confidence": np.where(sf.registered, c_rep, 0.0),
        # Why the clip's focal is the default although the camera moved ("" when it is not a fallback).
        "focal_fallback": main.get("focal_fallback", ""),
    }
    return PoseResult(
        c2w=sf.c2w, intrinsics=Kout, fps=float(fps), confidence=float(np.clip(reg_frac * c_rep, 0, 1)),
        registered=sf.registered, metric=False, intrinsics_source=main["focal_source"],
        focal_confidence=float(main["focal_confidence"]), scale_source="none", unregistered_reason=sf.reasons,
        shot_starts=sf.shot_starts, diagnostics=diag,
    )
