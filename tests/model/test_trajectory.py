"""Trajectory DSL, the SANA-WM-Bench .npz format and the CLI."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from model.camera import rotation_angle
from model.trajectory import (
    Action,
    Trajectory,
    default_intrinsics,
    load_trajectory,
    main,
    parse_actions,
    save_trajectory,
    trajectory_from_actions,
)

K = default_intrinsics(64, 64)


def test_default_intrinsics_fov():
    k = default_intrinsics(48, 64, fov_deg=90.0)
    np.testing.assert_allclose(k, [[32.0, 0, 32.0], [0, 32.0, 24.0], [0, 0, 1]])
    with pytest.raises(ValueError, match="fov_deg"):
        default_intrinsics(48, 64, fov_deg=180)


# --- parsing ---------------------------------------------------------------------------------------

def test_parse_actions_full_kinds_and_keys():
    acts = parse_actions("forward 1.0 2s; yaw_left 30 1.5s; w 2s; a 1s\nhold 0.5s; e 45 1s; pitch_up 10 2s")
    assert acts == [
        Action("forward", 1.0, 2.0), Action("yaw_left", 30.0, 1.5), Action("forward", 1.0, 2.0),
        Action("left", 1.0, 1.0), Action("hold", 0.0, 0.5), Action("yaw_right", 45.0, 1.0),
        Action("pitch_up", 10.0, 2.0),
    ]
    assert parse_actions("q 1s; s 2s; d 0.25s") == [
        Action("yaw_left", 30.0, 1.0), Action("back", 1.0, 2.0), Action("right", 1.0, 0.25)]


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("forward 1 2s; jump 2s", r"command 2 'jump 2s': unknown action 'jump'"),
        ("forward 1 2", r"bad duration '2'"),
        ("forward fast 2s", r"bad speed 'fast'"),
        ("forward 1 2s 3s", r"expected 'KIND \[SPEED\] DURATION'"),
        ("w", r"expected 'KIND \[SPEED\] DURATION'"),
        ("hold 1 2s", r"'hold' takes no speed"),
        ("forward -1 2s", r"speed must be finite and >= 0"),
        ("forward 1 0s", r"duration_s must be finite and > 0"),
        (" ; ", r"no actions"),
    ],
)
def test_parse_actions_errors_name_bad_token(text, pattern):
    with pytest.raises(ValueError, match=pattern):
        parse_actions(text)


# --- integration -----------------------------------------------------------------------------------

def test_forward_2s_at_10fps_ends_at_2m():
    traj = trajectory_from_actions("forward 1 2s", fps=10, K=K)
    assert traj.num_frames == 21 and traj.fps == 10.0
    np.testing.assert_allclose(traj.c2w[0], np.eye(4))
    np.testing.assert_allclose(traj.c2w[-1, :3, 3], [0.0, 0.0, 2.0], atol=1e-12)
    np.testing.assert_allclose(traj.c2w[:, 2, 3], np.linspace(0, 2, 21), atol=1e-12)
    np.testing.assert_allclose(traj.c2w[:, :3, :3], np.broadcast_to(np.eye(3), (21, 3, 3)), atol=1e-12)
    assert traj.intrinsics.shape == (21, 3, 3)


def test_yaw_90_for_1s_rotates_90_deg_about_camera_y():
    traj = trajectory_from_actions([Action("yaw_right", 90.0, 1.0)], fps=16, K=K)
    assert traj.num_frames == 17
    assert math.isclose(float(rotation_angle(traj.c2w[-1])), math.pi / 2, abs_tol=1e-9)
    # yaw right turns the forward axis (+Z) toward +X; position unchanged
    np.testing.assert_allclose(traj.c2w[-1, :3, 2], [1.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(traj.c2w[:, :3, 3], 0.0, atol=1e-12)
    left = trajectory_from_actions("yaw_left 90 1s", fps=16, K=K)
    np.testing.assert_allclose(left.c2w[-1, :3, 2], [-1.0, 0.0, 0.0], atol=1e-9)
    up = trajectory_from_actions("pitch_up 90 1s", fps=16, K=K)
    np.testing.assert_allclose(up.c2w[-1, :3, 2], [0.0, -1.0, 0.0], atol=1e-9)  # -Y is up in OpenCV axes


def test_moves_happen_in_current_camera_frame():
    # Turn right 90 deg, then "forward" moves along world +X; strafing left afterwards moves along +Z.
    traj = trajectory_from_actions("yaw_right 90 1s; forward 2 1s; a 1s", fps=8, K=K)
    np.testing.assert_allclose(traj.c2w[-1, :3, 3], [2.0, 0.0, 1.0], atol=1e-9)
    down = trajectory_from_actions("down 0.5 2s", fps=4, K=K)
    np.testing.assert_allclose(down.c2w[-1, :3, 3], [0.0, 1.0, 0.0], atol=1e-12)


def test_boundaries_inside_frame_intervals_are_exact():
    # 0.25 s segments at 2 fps straddle frame boundaries; the total must still be exact.
    traj = trajectory_from_actions("forward 1 0.25s; back 1 0.25s; forward 2 0.25s", fps=2, K=K)
    assert traj.num_frames == 3  # 1 + ceil(0.75 * 2)
    np.testing.assert_allclose(traj.c2w[1, :3, 3], [0.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(traj.c2w[2, :3, 3], [0.0, 0.0, 0.5], atol=1e-12)


def test_num_frames_truncates_and_pads_with_hold():
    short = trajectory_from_actions("forward 1 2s", fps=10, K=K, num_frames=6)
    assert short.num_frames == 6
    np.testing.assert_allclose(short.c2w[-1, 2, 3], 0.5, atol=1e-12)
    long = trajectory_from_actions("forward 1 2s", fps=10, K=K, num_frames=30)
    assert long.num_frames == 30
    np.testing.assert_allclose(long.c2w[20:, 2, 3], 2.0, atol=1e-12)
    with pytest.raises(ValueError, match=r"K must be one \(3, 3\)"):
        trajectory_from_actions("w 1s", 10, 30)  # num_frames passed where K belongs


def test_long_rollout_stays_valid_and_deterministic():
    text = "w 20s; q 30 10s; d 0.5 10s; pitch_up 5 5s; e 60 15s"  # 60 s at 16 fps = 961 frames
    a = trajectory_from_actions(text, fps=16, K=K)
    b = trajectory_from_actions(text, fps=16, K=K)
    assert a.num_frames == 961
    np.testing.assert_array_equal(a.c2w, b.c2w)
    R = a.c2w[:, :3, :3]
    np.testing.assert_allclose(np.swapaxes(R, 1, 2) @ R, np.broadcast_to(np.eye(3), R.shape), atol=1e-12)


def test_trajectory_dataclass_validates_and_relative():
    traj = trajectory_from_actions("w 1s; q 1s", fps=4, K=K)
    shifted = traj.c2w.copy()
    shifted[:, :3, 3] += [5.0, -2.0, 1.0]
    t2 = Trajectory(shifted, K, 4)  # a single K broadcasts
    assert t2.intrinsics.shape == (t2.num_frames, 3, 3)
    np.testing.assert_allclose(t2.relative().c2w, traj.c2w, atol=1e-12)
    assert not np.shares_memory(t2.c2w, shifted)  # a private copy: later edits by the caller do not leak in
    with pytest.raises(ValueError, match="fps"):
        Trajectory(traj.c2w, traj.intrinsics, 0.0)
    bad = traj.c2w.copy()
    bad[2, 0, 0] = 3.0
    with pytest.raises(ValueError, match=r"Trajectory: frame 2: c2w rotation is not orthonormal"):
        Trajectory(bad, K, 4)


# --- npz I/O ---------------------------------------------------------------------------------------

def test_npz_round_trip(tmp_path):
    traj = trajectory_from_actions("forward 1 1s; yaw_left 30 1s", fps=8, K=K)
    path = save_trajectory(traj, tmp_path / "sub" / "traj.npz")
    assert sorted(os.listdir(path.parent)) == ["traj.npz"]  # no temp file left behind
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == ["c2w", "fps", "intrinsics"] and z["c2w"].dtype == np.float64
    back = load_trajectory(path)
    np.testing.assert_array_equal(back.c2w, traj.c2w)
    np.testing.assert_array_equal(back.intrinsics, traj.intrinsics)
    assert back.fps == traj.fps


def _write(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def test_load_rejects_bad_files(tmp_path):
    good = trajectory_from_actions("w 1s", fps=4, K=K)
    c2w = good.c2w.copy()
    c2w[3, 1, 3] = np.nan
    nan_file = _write(tmp_path / "nan.npz", c2w=c2w, intrinsics=good.intrinsics, fps=4.0)
    with pytest.raises(ValueError, match=r"nan\.npz.*frame 3: c2w contains NaN"):
        load_trajectory(nan_file)
    with pytest.raises(ValueError, match=r"missing\.npz.*missing key\(s\) \['fps'\]"):
        load_trajectory(_write(tmp_path / "missing.npz", c2w=good.c2w, intrinsics=good.intrinsics))
    with pytest.raises(ValueError, match=r"shape\.npz.*'c2w' must have shape \(N, 4, 4\), got \(5, 3, 4\)"):
        load_trajectory(_write(tmp_path / "shape.npz", c2w=good.c2w[:, :3], intrinsics=good.intrinsics, fps=4.0))
    with pytest.raises(ValueError, match=r"count\.npz.*5 frames but intrinsics has 2"):
        load_trajectory(_write(tmp_path / "count.npz", c2w=good.c2w, intrinsics=good.intrinsics[:2], fps=4.0))
    with pytest.raises(ValueError, match=r"dtype\.npz.*'fps' must be a real number array"):
        load_trajectory(_write(tmp_path / "dtype.npz", c2w=good.c2w, intrinsics=good.intrinsics, fps="16"))
    obj = np.empty(1, dtype=object)
    obj[0] = {"x": 1}
    with pytest.raises(ValueError, match=r"pickle\.npz.*without pickles"):
        load_trajectory(_write(tmp_path / "pickle.npz", c2w=obj, intrinsics=good.intrinsics, fps=4.0))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"junk\.npz"):
        load_trajectory(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match=r"no such file"):
        load_trajectory(tmp_path / "absent.npz")


# --- CLI -------------------------------------------------------------------------------------------

def test_cli_writes_file_and_prints_summary(tmp_path, capsys):
    out = tmp_path / "traj.npz"
    assert main(["--actions", "w 2s; q 1s", "--fps", "16", "--size", "64x64", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "frames: 49 at 16 fps" in printed and "[0.000, 0.000, 2.000]" in printed and "30.00 deg" in printed
    traj = load_trajectory(out)
    assert traj.num_frames == 49
    np.testing.assert_allclose(traj.intrinsics[0], default_intrinsics(64, 64))
    from model.cli import EXIT_INPUT_ERROR, run

    assert run(main, ["--actions", "w 2s; fly 1s", "-o", str(tmp_path / "bad.npz")]) == EXIT_INPUT_ERROR
    assert "unknown action 'fly'" in capsys.readouterr().err
    assert not (tmp_path / "bad.npz").exists()
