"""What a person reads at a glance: trajectory transforms for the controls, and the figures.

* ``mirror_trajectory`` (left <-> right: the control run of the camera-following test: a model that
  really follows the camera does much worse against the command when fed the mirrored path);
* ``total_yaw_deg`` (signed yaw of the last pose relative to the first, about the camera's +Y (down)
  axis: OpenCV axes, so positive = turning right) and ``extend_trajectory`` (continue the last relative
  motion: the 4x-length streaming rollout of the drift curves);
* figures: ``contact_sheet`` (GT row over generated row), ``side_by_side`` (GT | generated frames for
  an mp4), ``plot_paths`` (commanded vs recovered camera: top view x-z + per-axis curves),
  ``plot_drift`` (PSNR and rotation error against time), ``variant_table`` (Markdown).
PSNR is scikit-image's ``peak_signal_noise_ratio`` (``frame_psnr``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["contact_sheet", "extend_trajectory", "frame_psnr", "mirror_trajectory", "plot_drift", "plot_paths",
           "side_by_side", "total_yaw_deg", "variant_table", "yaw_curve_deg"]

_MIRROR = np.diag([-1.0, 1.0, 1.0, 1.0])  # x -> -x (camera right <-> left), a reflection of the world


def frame_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB, 8-bit peak) of uint8 frames with scikit-image; identical frames give 100 dB (a cap)."""
    from skimage.metrics import peak_signal_noise_ratio

    if np.array_equal(a, b):
        return 100.0
    return float(min(100.0, peak_signal_noise_ratio(a, b, data_range=255)))


def mirror_trajectory(c2w: np.ndarray) -> np.ndarray:
    """(N,4,4) c2w -> its left-right mirror image M c2w M (M = diag(-1,1,1,1)): strafes and yaws flip
    sign, forward motion and pitch stay; the result is a proper rigid motion again (det +1)."""
    c2w = np.asarray(c2w, np.float64)
    return _MIRROR @ c2w @ _MIRROR


def yaw_curve_deg(c2w: np.ndarray) -> np.ndarray:
    """(N,) signed yaw (deg) of each pose relative to the first, about the first camera's +Y axis.

    Cumulative: unwrapped along the path, so a camera that keeps turning right reads 195 deg, not -165
    (frame-to-frame turns are assumed < 180 deg)."""
    c2w = np.asarray(c2w, np.float64)
    rel = np.linalg.inv(c2w[0]) @ c2w
    fwd = rel[:, :3, 2]  # camera +Z (forward) in the first camera's frame
    return np.degrees(np.unwrap(np.arctan2(fwd[:, 0], fwd[:, 2])))


def total_yaw_deg(c2w: np.ndarray) -> float:
    return float(yaw_curve_deg(c2w)[-1])


def extend_trajectory(c2w: np.ndarray, intrinsics: np.ndarray, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Continue (N,4,4) ``c2w`` to ``num_frames`` poses by repeating its mean per-frame motion (the
    relative transform between the last two poses would amplify noise), intrinsics by repeating the last."""
    c2w = np.asarray(c2w, np.float64)
    K = np.asarray(intrinsics, np.float64)
    n = len(c2w)
    if num_frames <= n:
        return c2w[:num_frames], K[:num_frames]
    from scipy.spatial.transform import Rotation

    # mean per-frame motion in the camera's own frame over the second half of the path
    steps = np.linalg.inv(c2w[:-1]) @ c2w[1:]
    steps = steps[len(steps) // 2:] if len(steps) >= 2 else steps
    step = np.eye(4)
    step[:3, :3] = Rotation.from_rotvec(Rotation.from_matrix(steps[:, :3, :3]).as_rotvec().mean(0)).as_matrix()
    step[:3, 3] = steps[:, :3, 3].mean(0)
    out = [*c2w]
    for _ in range(num_frames - n):
        out.append(out[-1] @ step)
    return np.stack(out), np.concatenate([K, np.repeat(K[-1:], num_frames - n, axis=0)])


def _save_fig(fig, path: str | os.PathLike) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=100)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return path


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    return plt


def contact_sheet(gt: np.ndarray, gen: np.ndarray, path: str | os.PathLike, columns: int = 9,
                  title: str = "") -> Path:
    """PNG with ``columns`` evenly spaced frames: ground truth on top, generation below (frame index on top)."""
    plt = _plt()
    n = min(len(gt), len(gen))
    idx = np.unique(np.linspace(0, n - 1, min(columns, n)).round().astype(int))
    fig, axes = plt.subplots(2, len(idx), figsize=(1.6 * len(idx), 2.6), squeeze=False)
    for j, i in enumerate(idx):
        for r, (frames, label) in enumerate(((gt, "ground truth"), (gen, "generated"))):
            ax = axes[r, j]
            ax.imshow(frames[i])
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(f"t={i}", fontsize=7)
            if j == 0:
                ax.set_ylabel(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return _save_fig(fig, path)


def side_by_side(gt: np.ndarray, gen: np.ndarray) -> np.ndarray:
    """uint8 (N,H,2W+4,3): ground truth | generated, a white 4-pixel gutter between."""
    n = min(len(gt), len(gen))
    gutter = np.full((n, gt.shape[1], 4, 3), 255, np.uint8)
    return np.concatenate([gt[:n], gutter, gen[:n]], axis=2)


def plot_paths(commanded: np.ndarray, recovered: np.ndarray, path: str | os.PathLike, title: str = "",
               mirrored: np.ndarray | None = None) -> Path:
    """Commanded vs recovered camera path: top view (x right, z forward, relative to frame 0, the
    recovered path scaled onto the commanded one), and per-axis curves x, y, z, yaw against frame."""
    plt = _plt()
    cmd = np.linalg.inv(commanded[0]) @ commanded
    rec = np.linalg.inv(recovered[0]) @ recovered
    tc, tr = cmd[:, :3, 3], rec[:, :3, 3]
    den = float(np.sum(tr**2))
    s = float(np.sum(tr * tc) / den) if den > 1e-12 else 1.0
    tr = tr * s
    fig = plt.figure(figsize=(9, 4))
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(tc[:, 0], tc[:, 2], "k-", lw=2, label="commanded")
    ax.plot(tr[:, 0], tr[:, 2], "r--", lw=1.5, label=f"recovered (x{s:.2g})")
    if mirrored is not None:
        mc = (np.linalg.inv(mirrored[0]) @ mirrored)[:, :3, 3]
        ax.plot(mc[:, 0], mc[:, 2], ":", color="grey", lw=1, label="mirrored command")
    ax.set_xlabel("x (right)"), ax.set_ylabel("z (forward)"), ax.set_title("top view", fontsize=9)
    ax.axis("equal"), ax.grid(alpha=0.3), ax.legend(fontsize=7)
    curves = [("x", tc[:, 0], tr[:, 0]), ("y", tc[:, 1], tr[:, 1]), ("z", tc[:, 2], tr[:, 2]),
              ("yaw deg", yaw_curve_deg(commanded), yaw_curve_deg(recovered))]
    for k, (name, a, b) in enumerate(curves):
        axk = fig.add_subplot(4, 2, 2 * k + 2)
        axk.plot(a, "k-", lw=1.5)
        axk.plot(b, "r--", lw=1.2)
        axk.set_ylabel(name, fontsize=7), axk.grid(alpha=0.3), axk.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save_fig(fig, path)


def plot_drift(psnr: list[float], rot_err: list[float], train_frames: int, gt_frames: int,
               path: str | os.PathLike, title: str = "") -> Path:
    """Drift of a long streaming rollout: PSNR vs ground truth (where it exists) and rotation error
    against frame, with the training clip length and the end of the ground truth marked."""
    plt = _plt()
    fig, axes = plt.subplots(2, 1, figsize=(7, 4), sharex=True)
    axes[0].plot(np.arange(len(psnr)), psnr, lw=1.5)
    axes[0].set_ylabel("PSNR vs GT (dB)")
    axes[1].plot(np.arange(len(rot_err)), rot_err, lw=1.5, color="tab:red")
    axes[1].set_ylabel("rotation error (deg)"), axes[1].set_xlabel("frame")
    for ax in axes:
        ax.axvline(train_frames - 1, color="k", ls=":", lw=1)
        ax.axvline(gt_frames - 1, color="grey", ls="--", lw=1)
        ax.grid(alpha=0.3)
    axes[0].set_title(title or f"streaming rollout (dotted: training length {train_frames}, dashed: end of GT)",
                      fontsize=8)
    fig.tight_layout()
    return _save_fig(fig, path)


TABLE_KEYS = ("vae_psnr_db", "frame0_psnr_db", "psnr_mean", "ssim_mean", "rot_err_deg_mean",
              "rot_err_deg_mean_mirrored", "rot_err_deg_mean_yawing", "rot_err_deg_mean_mirrored_yawing",
              "yaw_direction_agreement", "registered_fraction", "gen_seconds")


def variant_table(per_variant: dict[str, dict[str, float]]) -> str:
    """Markdown table: one row per variant (teacher / student / quantized), the headline metrics."""
    head = "| variant | " + " | ".join(TABLE_KEYS) + " |"
    lines = [head, "|" + "---|" * (len(TABLE_KEYS) + 1)]
    for name, m in per_variant.items():
        cells = [f"{m[k]:.3g}" if isinstance(m.get(k), (int, float)) and np.isfinite(m[k]) else "-" for k in TABLE_KEYS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
