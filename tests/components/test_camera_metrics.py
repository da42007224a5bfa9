"""Camera-following report on a rendered clip standing in for a generated video."""

import numpy as np
import pytest

from components.evaluate.camera_metrics import (
    camera_following_report,
    frame_psnr,
    frame_ssim,
    plot_camera_report,
)
from components.ingest.synthetic import ClipSpec, render_clip


@pytest.fixture(scope="module")
def clip():
    return render_clip(ClipSpec(kind="strafe", speed="fast", num_frames=16, fps=12.0, height=96, width=128, seed=5))


def test_report_follows_true_command_and_flags_wrong_one(clip, tmp_path):
    good = camera_following_report(clip.frames, clip.c2w, clip.intrinsics, clip.fps, gt_frames=clip.frames)
    assert not good["metric"] and len(good["rot_err_deg"]) == 16 and len(good["cammc"]) == 16
    # Scale-free recovery on a 96x128 fast strafe drifts ~0.4 deg/frame (strafe-yaw ambiguity): loose bounds.
    assert good["rot_err_deg_mean"] < 4.0 and good["trans_err_mean"] < 0.1
    assert good["psnr_mean"] == 100.0 and good["ssim_mean"] == pytest.approx(1.0)
    wrong = clip.c2w.copy()
    wrong[:, :3, 3] = wrong[:, :3, 3][:, [2, 1, 0]]  # commanded sideways motion swapped for forward
    bad = camera_following_report(clip.frames, wrong, clip.intrinsics, clip.fps)
    assert bad["trans_err_mean"] > 5 * good["trans_err_mean"] and bad["cammc_sum"] > good["cammc_sum"]
    png = plot_camera_report(good, tmp_path / "report.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_psnr_ssim_values():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.normal(0, 60, a.shape), 0, 255).astype(np.uint8)
    mse = np.mean((a.astype(float) - b) ** 2)
    assert frame_psnr(a, b) == pytest.approx(10 * np.log10(255**2 / mse))
    assert 0.0 < frame_ssim(a, b) < 0.99 and frame_ssim(a, a) == pytest.approx(1.0)
    c = np.clip(a.astype(int) + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    assert frame_ssim(a, b) < frame_ssim(a, c) < 1.0  # less noise, more structure kept
    # SSIM's luminance term alone: two constant images of means m1, m2 give (2 m1 m2 + C1) / (m1² + m2² + C1)
    m1, m2, c1 = 100.0, 140.0, (0.01 * 255) ** 2
    flat1, flat2 = np.full((32, 32, 3), 100, np.uint8), np.full((32, 32, 3), 140, np.uint8)
    assert frame_ssim(flat1, flat2) == pytest.approx((2 * m1 * m2 + c1) / (m1**2 + m2**2 + c1), rel=1e-6)
