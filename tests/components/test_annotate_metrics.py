"""Trajectory metrics on known transforms (exact answers)."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from components.annotate import metrics as M


def _traj(n=20, seed=0):
    rng = np.random.default_rng(seed)
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, :3, :3] = Rotation.from_rotvec(np.cumsum(rng.normal(0, 0.05, (n, 3)), 0)).as_matrix()
    c2w[:, :3, 3] = np.cumsum(rng.normal(0, 0.2, (n, 3)), 0)
    return c2w


def _apply_sim3(c2w, s, R, t):
    out = c2w.copy()
    out[:, :3, :3] = R @ c2w[:, :3, :3]
    out[:, :3, 3] = s * c2w[:, :3, 3] @ R.T + t
    return out


def test_umeyama_recovers_known_similarity_exactly():
    pts = np.random.default_rng(1).normal(size=(50, 3))
    R = Rotation.from_euler("xyz", [10, -35, 70], degrees=True).as_matrix()
    s, t = 2.7, np.array([0.3, -1.0, 4.0])
    s_hat, R_hat, t_hat = M.umeyama_alignment(pts, s * pts @ R.T + t)
    assert s_hat == pytest.approx(s, rel=1e-10)
    np.testing.assert_allclose(R_hat, R, atol=1e-10)
    np.testing.assert_allclose(t_hat, t, atol=1e-10)
    s_se3, R_se3, _ = M.umeyama_alignment(pts, pts @ R.T + t, with_scale=False)
    assert s_se3 == 1.0
    np.testing.assert_allclose(R_se3, R, atol=1e-10)


def test_ate_zero_for_identical_and_for_similar_under_sim3_only():
    gt = _traj()
    assert M.ate(gt, gt, "sim3")["rmse"] == pytest.approx(0, abs=1e-12)
    assert M.ate(gt, gt, "se3")["rmse"] == pytest.approx(0, abs=1e-12)
    R = Rotation.from_euler("y", 30, degrees=True).as_matrix()
    est = _apply_sim3(gt, 0.5, R, np.array([1.0, 2.0, 3.0]))
    sim = M.ate(est, gt, "sim3")
    assert sim["rmse"] < 1e-9 and sim["scale"] == pytest.approx(2.0, rel=1e-9)
    assert M.ate(est, gt, "se3")["rmse"] > 0.1  # SE(3) keeps the wrong scale, so it must show up
    assert M.scale_error(est, gt) == pytest.approx(1.0, rel=1e-9)


def test_rpe_and_relative_rotation_error_known_perturbation():
    gt = _traj()
    assert M.rpe(gt, gt)["rot_mean_deg"] == pytest.approx(0, abs=1e-6)
    est = gt.copy()
    est[5, :3, :3] = est[5, :3, :3] @ Rotation.from_euler("z", 2.0, degrees=True).as_matrix()
    rre = M.relative_rotation_error(est, gt)
    assert rre.shape == (19,)
    # Perturbing frame 5 only affects the pairs (4,5) and (5,6), each by exactly 2 degrees.
    np.testing.assert_allclose(rre[[4, 5]], 2.0, atol=1e-6)
    assert np.delete(rre, [4, 5]).max() < 1e-6


def test_camera_following_errors_formulas():
    cmd = _traj()
    zero = M.camera_following_errors(cmd, cmd)
    assert zero["rot_err_deg_sum"] < 1e-6 and zero["trans_err_sum"] < 1e-9 and zero["cammc_sum"] < 1e-6
    # Scale-free recovery at half scale: "scale" alignment removes it exactly, "none" does not.
    half = cmd.copy()
    half[:, :3, 3] *= 0.5
    assert M.camera_following_errors(half, cmd, "scale")["trans_err_sum"] < 1e-9
    assert M.camera_following_errors(half, cmd, "none")["trans_err_sum"] > 0.1
    rec = cmd.copy()
    rec[3, :3, 3] += [0.3, 0.0, 0.4]
    e = M.camera_following_errors(rec, cmd)
    assert e["trans_err"][3] == pytest.approx(0.5) and e["cammc"][3] == pytest.approx(0.5)
    assert e["trans_err_sum"] == pytest.approx(0.5) and len(e["cammc"]) == len(cmd)


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        M.ate(_traj(5), _traj(6))
    with pytest.raises(ValueError, match="alignment mode"):
        M.ate(_traj(), _traj(), "affine")
