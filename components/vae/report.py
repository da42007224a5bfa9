"""Pictures of a VAE fit: a before/after reconstruction sheet and the reconstruction curve (PNG files, so
they land in the step's output folder and in MLflow as artifacts)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

__all__ = ["before_after_sheet", "plot_curve"]


def before_after_sheet(target: np.ndarray, before: np.ndarray, after: np.ndarray, path: str | Path,
                       max_frames: int = 5) -> Path:
    """Write a 3-row PNG: ground truth, random-VAE reconstruction, fitted-VAE reconstruction.

    ``target``/``before``/``after`` are uint8 (N,H,W,3); up to ``max_frames`` evenly spaced frames
    (always frame 0, the conditioning image the causal VAE encodes alone) are shown, scaled x2.
    """
    from PIL import Image, ImageDraw

    from model.atomic import write_bytes

    arrays = [np.asarray(a) for a in (target, before, after)]
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 4 or arrays[0].dtype != np.uint8:
        raise ValueError(f"before_after_sheet: need three uint8 (N,H,W,3) arrays of one shape, got "
                         f"{[(a.dtype, a.shape) for a in arrays]}")
    n = arrays[0].shape[0]
    idx = np.unique(np.linspace(0, n - 1, min(n, max_frames)).round().astype(int))
    rows = [np.concatenate([a[i] for i in idx], axis=1) for a in arrays]
    label_w, (h, w) = 56, rows[0].shape[:2]
    sheet = Image.new("RGB", (label_w + w * 2, 3 * h * 2), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (row, name) in enumerate(zip(rows, ("truth", "before", "after"))):
        img = Image.fromarray(row).resize((w * 2, h * 2), Image.NEAREST)
        sheet.paste(img, (label_w, r * h * 2))
        draw.text((4, r * h * 2 + h - 6), name, fill="black")
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return write_bytes(path, buf.getvalue())


def plot_curve(curve: list[list[float]], losses: list[float], path: str | Path) -> Path:
    """Write the reconstruction curve: held-out PSNR (dB) against step, training loss on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from model.atomic import write_bytes

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    steps, psnr = zip(*curve) if curve else ((), ())
    ax.plot(steps, psnr, "o-", color="tab:blue", label="held-out PSNR")
    ax.set_xlabel("step")
    ax.set_ylabel("PSNR (dB)", color="tab:blue")
    if losses:
        ax2 = ax.twinx()
        ax2.plot(range(len(losses)), losses, color="tab:orange", alpha=0.6, lw=0.8)
        ax2.set_ylabel("train loss", color="tab:orange")
        ax2.set_yscale("log")
    ax.set_title("VAE fit: reconstruction")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return write_bytes(path, buf.getvalue())
