"""Camera following of a generated video: run the annotation estimator on it, compare with the command.

The same estimator that labels training data judges the model (SANA-WM's protocol), so a model is scored
on the motion a labeller would read back from its video. Metric formulas (RotErr, TransErr, CamMC, per
frame and aggregated) are in `components.annotate.metrics`. Generated videos carry no sensor depth, so
the recovered trajectory is metric only with a monocular ``depth_model``; otherwise it is scale-free and
the recovered translations are scaled onto the command by one least-squares factor (reported as
``scale``) before TransErr and CamMC.

Frame quality against ground truth (when given): PSNR (dB, capped at 100 for identical frames) and SSIM
(Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1=0.01, K2=0.03, mean over RGB channels) from
scikit-image when installed, else the same formula on OpenCV Gaussian filtering.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from components.annotate.metrics import camera_following_errors
from components.annotate.poses import PoseEstimatorConfig, estimate_poses
from components.evaluate.report import frame_psnr  # the one PSNR (scikit-image)

__all__ = ["camera_following_report", "frame_psnr", "frame_ssim", "plot_camera_report"]

_PSNR_CAP_DB = 100.0


def frame_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM between uint8 frames (H,W,3), scikit-image's Gaussian-window form (Wang et al. 2004 settings)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, data_range=255))


def camera_following_report(
    generated_frames: np.ndarray,
    commanded_c2w: np.ndarray,
    intrinsics: np.ndarray,
    fps: float,
    gt_frames: np.ndarray | None = None,
    depth_model=None,
    config: PoseEstimatorConfig | None = None,
) -> dict:
    """Camera-following metrics of a generated video against the commanded trajectory.

    generated_frames uint8 (N,H,W,3); commanded_c2w (N,4,4); intrinsics (3,3) or (N,3,3) of the generated
    video; fps; gt_frames uint8 (N,H,W,3) or None; depth_model: optional `DepthModel` for metric recovery.
    Returns a JSON-friendly dict: per-frame curves ``rot_err_deg``, ``trans_err``, ``cammc`` (lists of N),
    aggregates ``*_sum``/``*_mean``, ``scale``, ``metric``, ``confidence``, ``registered_fraction``,
    ``recovered_c2w`` (N,4,4 list); with gt_frames also ``psnr``/``ssim`` curves and means.
    """
    frames = np.asarray(generated_frames)
    cmd = np.asarray(commanded_c2w, np.float64)
    if cmd.ndim != 3 or cmd.shape[1:] != (4, 4) or len(cmd) != len(frames):
        raise ValueError(f"commanded_c2w must be (N,4,4) with N={len(frames)} frames, got {cmd.shape}")
    res = estimate_poses(frames, fps, intrinsics=intrinsics, depth_model=depth_model,
                         scale_free=depth_model is None, config=config)
    err = camera_following_errors(res.c2w, cmd, scale_align="none" if res.metric else "scale")
    report: dict = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in err.items()}
    report.update(metric=res.metric, confidence=res.confidence, registered_fraction=float(res.registered.mean()),
                  recovered_c2w=res.c2w.tolist(), num_frames=len(frames), fps=float(fps))
    if gt_frames is not None:
        gt = np.asarray(gt_frames)
        if gt.shape != frames.shape:
            raise ValueError(f"gt_frames shape {gt.shape} differs from generated_frames {frames.shape}")
        report["psnr"] = [frame_psnr(a, b) for a, b in zip(frames, gt)]
        report["ssim"] = [frame_ssim(a, b) for a, b in zip(frames, gt)]
        report["psnr_mean"] = float(np.mean(report["psnr"]))
        report["ssim_mean"] = float(np.mean(report["ssim"]))
    return report


def plot_camera_report(report: dict, path_png: str | os.PathLike) -> Path:
    """Plot the per-frame curves of a `camera_following_report` into a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: CI and pipeline pods have no display
    import matplotlib.pyplot as plt

    panels = [("rot_err_deg", "rotation error (deg)"), ("trans_err", "translation error"), ("cammc", "CamMC")]
    if "psnr" in report:
        panels += [("psnr", "PSNR (dB)"), ("ssim", "SSIM")]
    fig, axes = plt.subplots(len(panels), 1, figsize=(6, 1.8 * len(panels)), sharex=True)
    for ax, (key, label) in zip(np.atleast_1d(axes), panels):
        ax.plot(np.arange(len(report[key])), report[key], lw=1.5)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[-1].set_xlabel("frame")
    fig.suptitle(f"camera following (metric={report.get('metric')}, conf={report.get('confidence', 0):.2f})", fontsize=9)
    fig.tight_layout()
    from model.atomic import atomic_path

    path = Path(path_png)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
    return path
