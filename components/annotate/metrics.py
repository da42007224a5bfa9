"""Trajectory accuracy (against ground truth) and camera-following metrics (against a command).

Conventions: trajectories are camera-to-world (N,4,4) arrays; camera centres are ``c2w[:, :3, 3]``.

Accuracy (annotation quality, TUM/KITTI-style):
- ``ate``: absolute trajectory error, RMSE of camera centres after Umeyama alignment of the estimate to the
  ground truth: Sim(3) (``mode="sim3"``, any scale: shape only), SE(3) (``"se3"``, scale kept: tests metric
  scale too) or none.
- ``rpe``: relative pose error over a frame gap ``delta``: E_i = (G_i⁻¹ G_{i+δ})⁻¹ (P_i⁻¹ P_{i+δ});
  rotation error = angle(E_i) in degrees, translation error = ‖trans(E_i)‖ (estimate scaled by ``scale``).
- ``relative_rotation_error``: per-frame RPE rotation at δ=1 (deg), the drift-free rotation accuracy.
- ``scale_error``: |s − 1| with s the Umeyama Sim(3) scale mapping the estimate onto the ground truth.

Camera following (SANA-WM / CameraCtrl protocol; recovered = poses estimated on the generated video,
commanded = the trajectory the model was asked to follow). Both are first made relative to their frame 0.
Per frame j:
- RotErr_j   = arccos((tr(R_rec,j · R_cmd,jᵀ) − 1) / 2)            (degrees)
- TransErr_j = ‖ s·t_rec,j − t_cmd,j ‖₂                               (metres if metric)
- CamMC_j    = ‖ [R_rec,j | s·t_rec,j] − [R_cmd,j | t_cmd,j] ‖_F      (3×4 Frobenius)
s = 1 when the recovered poses are metric (``scale_align="none"``), otherwise the least-squares scale
s = Σ⟨t_rec,t_cmd⟩ / Σ‖t_rec‖² (``"scale"``). Aggregates: the sum over frames (the papers' number) and the
per-frame mean; the per-frame curves show drift over time.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "align_trajectory",
    "ate",
    "camera_following_errors",
    "path_length",
    "relative_rotation_error",
    "rotation_angle_deg",
    "rpe",
    "scale_error",
    "umeyama_alignment",
]


def _check_pair(est: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    est, gt = np.asarray(est, np.float64), np.asarray(gt, np.float64)
    for name, a in (("estimate", est), ("reference", gt)):
        if a.ndim != 3 or a.shape[1:] != (4, 4):
            raise ValueError(f"{name} trajectory must be (N,4,4) c2w, got {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{name} trajectory has NaN/inf entries")
    if len(est) != len(gt):
        raise ValueError(f"trajectories differ in length: estimate {len(est)} vs reference {len(gt)}")
    return est, gt


def rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """Rotation angle in degrees of rotation matrices (..., 3, 3)."""
    tr = np.trace(R, axis1=-2, axis2=-1)
    # atan2(sin, cos) instead of arccos(cos): arccos loses half the digits near 0, where errors live.
    v = np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    return np.degrees(np.arctan2(0.5 * np.linalg.norm(v, axis=-1), (tr - 1.0) / 2.0))


def umeyama_alignment(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (Umeyama 1991) mapping points src (N,3) onto dst (N,3).

    Returns (s, R (3,3), t (3,)) minimising Σ‖dst_i − (s R src_i + t)‖²; s = 1 when ``with_scale`` is False.
    Degenerate inputs (N < 2 or all src points equal) get s = 1 and the centroid translation.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3:
        raise ValueError(f"umeyama_alignment needs two (N,3) arrays, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    var_s = np.mean(np.sum(xs**2, 1))
    if len(src) < 2 or var_s < 1e-18:
        return 1.0, np.eye(3), mu_d - mu_s
    cov = xd.T @ xs / len(src)
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1.0
    R = U @ S @ Vt
    s = float(np.trace(np.diag(D) @ S) / var_s) if with_scale else 1.0
    t = mu_d - s * R @ mu_s
    return s, R, t


def align_trajectory(est: np.ndarray, gt: np.ndarray, mode: str = "sim3") -> tuple[np.ndarray, float]:
    """Apply the Umeyama alignment of est's centres onto gt's to the whole est trajectory.

    est, gt (N,4,4) c2w; mode "sim3" | "se3" | "none". Returns (aligned est (N,4,4), scale).
    """
    est, gt = _check_pair(est, gt)
    if mode == "none":
        return est.copy(), 1.0
    if mode not in ("sim3", "se3"):
        raise ValueError(f"alignment mode must be 'sim3', 'se3' or 'none', got {mode!r}")
    s, R, t = umeyama_alignment(est[:, :3, 3], gt[:, :3, 3], with_scale=(mode == "sim3"))
    out = est.copy()
    out[:, :3, :3] = R @ est[:, :3, :3]
    out[:, :3, 3] = s * est[:, :3, 3] @ R.T + t
    return out, s


def ate(est: np.ndarray, gt: np.ndarray, mode: str = "sim3") -> dict:
    """Absolute trajectory error of camera centres after alignment.

    est, gt (N,4,4). Returns dict(rmse, mean, max, per_frame (N,), scale) in gt units.
    """
    aligned, s = align_trajectory(est, gt, mode)
    err = np.linalg.norm(aligned[:, :3, 3] - np.asarray(gt)[:, :3, 3], axis=1)
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mean": float(err.mean()), "max": float(err.max()),
            "per_frame": err, "scale": float(s)}


def rpe(est: np.ndarray, gt: np.ndarray, delta: int = 1, scale: float = 1.0) -> dict:
    """Relative pose error over a frame gap ``delta``.

    est, gt (N,4,4); the estimate's translations are multiplied by ``scale`` first (use the Sim(3) scale
    for scale-free estimates). Returns dict(rot_deg (N−δ,), trans (N−δ,), rot_mean_deg, trans_rmse).
    """
    est, gt = _check_pair(est, gt)
    if not 1 <= delta < len(est):
        raise ValueError(f"rpe delta must be in [1, N-1] = [1, {len(est) - 1}], got {delta}")
    est = est.copy()
    est[:, :3, 3] *= scale
    d_est = np.linalg.inv(est[:-delta]) @ est[delta:]
    d_gt = np.linalg.inv(gt[:-delta]) @ gt[delta:]
    E = np.linalg.inv(d_gt) @ d_est
    rot = rotation_angle_deg(E[:, :3, :3])
    trans = np.linalg.norm(E[:, :3, 3], axis=1)
    return {"rot_deg": rot, "trans": trans, "rot_mean_deg": float(rot.mean()),
            "trans_rmse": float(np.sqrt(np.mean(trans**2)))}


def relative_rotation_error(est: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-frame relative rotation error (N−1,) in degrees: angle of (ΔR_gt)ᵀ ΔR_est between frames i, i+1."""
    return rpe(est, gt, delta=1)["rot_deg"]


def scale_error(est: np.ndarray, gt: np.ndarray) -> float:
    """|s − 1| where s is the Sim(3) scale mapping est onto gt (0 = metric scale exactly right).

    NaN when the ground truth barely moves (scale is unobservable, e.g. pure rotation).
    """
    est, gt = _check_pair(est, gt)
    if path_length(gt) < 1e-6:
        return float("nan")
    s, _, _ = umeyama_alignment(est[:, :3, 3], gt[:, :3, 3], with_scale=True)
    return float(abs(s - 1.0))


def path_length(c2w: np.ndarray) -> float:
    """Length of the camera-centre polyline of c2w (N,4,4)."""
    c = np.asarray(c2w)[:, :3, 3]
    return float(np.linalg.norm(np.diff(c, axis=0), axis=1).sum())


def camera_following_errors(recovered: np.ndarray, commanded: np.ndarray, scale_align: str = "none") -> dict:
    """SANA-WM camera-following metrics (formulas in the module docstring).

    recovered, commanded (N,4,4) c2w; scale_align "none" (metric recovery) | "scale" (scale-free).
    Returns dict with per-frame curves ``rot_err_deg``, ``trans_err``, ``cammc`` (N,) and aggregates
    ``*_sum`` / ``*_mean``, plus the ``scale`` applied.
    """
    rec, cmd = _check_pair(recovered, commanded)
    rec = np.linalg.inv(rec[0]) @ rec
    cmd = np.linalg.inv(cmd[0]) @ cmd
    t_rec, t_cmd = rec[:, :3, 3], cmd[:, :3, 3]
    if scale_align == "none":
        s = 1.0
    elif scale_align == "scale":
        den = float(np.sum(t_rec**2))
        s = float(np.sum(t_rec * t_cmd) / den) if den > 1e-12 else 1.0
    else:
        raise ValueError(f"scale_align must be 'none' or 'scale', got {scale_align!r}")
    rot = rotation_angle_deg(rec[:, :3, :3] @ np.transpose(cmd[:, :3, :3], (0, 2, 1)))
    trans = np.linalg.norm(s * t_rec - t_cmd, axis=1)
    d = np.concatenate([rec[:, :3, :3] - cmd[:, :3, :3], (s * t_rec - t_cmd)[:, :, None]], axis=2)
    cammc = np.linalg.norm(d.reshape(len(d), -1), axis=1)
    out = {"rot_err_deg": rot, "trans_err": trans, "cammc": cammc, "scale": s}
    for k in ("rot_err_deg", "trans_err", "cammc"):
        out[f"{k}_sum"] = float(out[k].sum())
        out[f"{k}_mean"] = float(out[k].mean())
    return out
