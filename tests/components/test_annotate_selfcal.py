"""Self-calibration, scale-free SfM, rotation model selection and shot cuts, on rendered clips with exact
ground truth (no intrinsics and no depth given to the estimator; bounds that can fail)."""

import numpy as np
import pytest

from components.annotate import metrics as M
from components.annotate.poses import PoseEstimatorConfig, estimate_poses
from components.ingest.synthetic import ClipSpec, render_clip


def _focal_err(res, clip):
    return abs(res.intrinsics[0, 0, 0] / clip.intrinsics[0, 0, 0] - 1)


@pytest.fixture(scope="module")
def yaw_clip():
    return render_clip(ClipSpec(kind="pure_yaw", speed="fast", num_frames=24, fps=12.0, height=192, width=320, seed=5))


@pytest.fixture(scope="module")
def mixed_clip():
    return render_clip(ClipSpec(kind="mixed", speed="slow", num_frames=30, fps=12.0, height=120, width=192, seed=7))


def test_pure_rotation_is_posed_as_rotation_with_self_calibrated_focal(yaw_clip):
    c = yaw_clip
    res = estimate_poses(c.frames, c.fps, None, scale_free=True)
    assert res.intrinsics_source == "self_calibrated_rotation" and not res.metric
    assert res.registered.all() and all(r == "" for r in res.unregistered_reason)
    assert np.abs(res.c2w[:, :3, 3]).max() == 0.0  # no spurious translation
    assert M.relative_rotation_error(res.c2w, c.c2w).mean() < 0.5
    assert _focal_err(res, c) < 0.02 and res.focal_confidence > 0.5


def test_a_near_pan_goes_to_the_global_mapper_first_and_is_still_posed_as_rotation(yaw_clip):
    """Below sfm_global_first_max_residual_px the incremental mapper (which fails on a pan, slowly) is skipped;
    the answer is the rotation model's either way. rotation_max_residual_px=0 sends the pan through SfM."""
    c = yaw_clip
    base = {"rotation_max_residual_px": 0.0, "focal_split_workers": 1}
    fast = estimate_poses(c.frames, c.fps, None, scale_free=True, config=PoseEstimatorConfig(**base))
    sh = fast.diagnostics["shots"][0]
    assert sh["model"] == "rotation" and sh["sfm"]["mapper"] == "global" and "global mapper first" in sh["sfm_global_first"]
    slow = estimate_poses(c.frames, c.fps, None, scale_free=True,
                          config=PoseEstimatorConfig(**base, sfm_global_first_max_residual_px=0.0))
    assert "sfm_global_first" not in slow.diagnostics["shots"][0] and slow.diagnostics["shots"][0]["model"] == "rotation"
    np.testing.assert_allclose(fast.c2w, slow.c2w)
    assert M.relative_rotation_error(fast.c2w, c.c2w).mean() < 0.5


def test_translating_clip_self_calibrates_through_sfm(mixed_clip):
    c = mixed_clip
    res = estimate_poses(c.frames, c.fps, None, scale_free=True)
    assert res.diagnostics["shots"][0]["model"] == "sfm"
    assert res.registered.mean() > 0.9
    reg = res.registered
    e, g = res.c2w[reg], c.c2w[reg]
    assert M.ate(e, g, "sim3")["rmse"] < 0.01 * M.path_length(g)
    assert M.relative_rotation_error(e, g).mean() < 0.3
    # 192x120 px, slow: measured 1.7-2.6 % (the 2 % target is met at 320x192, see bench/annotate.py real-footage).
    # Its track halves are thin (~140 tracks each): one maps to +4 %, or in some runs +42 % with a profile
    # spanning 130-430 px, and then split_focal_check flags the shot. Either outcome is honest; the 320x192
    # orbit test below pins self-calibration itself.
    fallback = res.diagnostics["focal_fallback"]
    if res.intrinsics_source == "default_fov":
        assert res.focal_confidence == 0.0 and "track groups mapped" in fallback
    elif fallback:  # the untrusted map kept (the default-FOV one registered fewer frames): with its own focal
        assert "poses and focal are from the untrusted map" in fallback and res.focal_confidence < 0.1
        np.testing.assert_allclose(res.intrinsics[0, 0, 0], res.diagnostics["shots"][0]["sfm_untrusted"]["focal_px"])
    else:
        assert res.intrinsics_source == "self_calibrated_sfm"
        assert _focal_err(res, c) < 0.035 and 0.0 < res.focal_confidence <= 1.0
    # Scale-free unit: the median scene depth from frame 0 (the synthetic room is a few metres deep).
    assert 0.05 < M.path_length(res.c2w) / M.path_length(c.c2w) < 5.0


def test_given_intrinsics_are_kept_fixed(mixed_clip):
    c = mixed_clip
    res = estimate_poses(c.frames, c.fps, c.intrinsics, scale_free=True)
    assert res.intrinsics_source == "given" and res.focal_confidence == 1.0
    np.testing.assert_allclose(res.intrinsics, c.intrinsics, atol=1e-9)
    assert M.ate(res.c2w[res.registered], c.c2w[res.registered], "sim3")["rmse"] < 0.01 * M.path_length(c.c2w)


def test_shot_cut_inside_a_clip_splits_it(yaw_clip, mixed_clip):
    a = yaw_clip.frames[:12]
    b = np.pad(mixed_clip.frames[:12], ((0, 0), (0, 72), (0, 128), (0, 0)), mode="reflect")  # another scene
    frames = np.ascontiguousarray(np.concatenate([a, b]))
    res = estimate_poses(frames, 12.0, None, scale_free=True)
    assert res.shot_starts == [0, 12]
    # Each shot is relative to its own first frame; all poses finite and orthonormal.
    np.testing.assert_allclose(res.c2w[12], np.eye(4), atol=1e-6)
    R = res.c2w[:, :3, :3]
    assert np.isfinite(res.c2w).all()
    np.testing.assert_allclose(R @ np.transpose(R, (0, 2, 1)), np.broadcast_to(np.eye(3), R.shape), atol=1e-6)


def test_moving_object_tracks_do_not_break_the_poses(mixed_clip):
    # A textured block sweeping across the frame (independent of the camera) covers ~8 % of the image.
    # Before tracks.inconsistent_tracks (window F/H RANSAC on spatially balanced subsets) this was a known
    # gap: the block passed two-view RANSAC and dragged the self-calibrated focal (measured +113 %).
    c = mixed_clip
    frames = c.frames.copy()
    rng = np.random.default_rng(0)
    tex = np.kron(rng.integers(0, 255, (8, 10, 3)), np.ones((4, 4, 1))).astype(np.uint8)
    for i in range(len(frames)):
        x = int(5 + i * 4)
        frames[i, 40:72, x:x + 40] = tex
    res = estimate_poses(frames, c.fps, None, scale_free=True)
    reg = res.registered
    assert reg.mean() > 0.9
    assert M.ate(res.c2w[reg], c.c2w[reg], "sim3")["rmse"] < 0.02 * M.path_length(c.c2w)
    assert _focal_err(res, c) < 0.04


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="colmap_mapper"):
        PoseEstimatorConfig(colmap_mapper="sequential")
    with pytest.raises(ValueError, match="scale_free_backend"):
        PoseEstimatorConfig(scale_free_backend="orb")
    with pytest.raises(ValueError, match="colmap_max_models"):
        PoseEstimatorConfig(colmap_max_models=0)
    with pytest.raises(ValueError, match="focal_profile_outlier_ratio"):
        PoseEstimatorConfig(focal_profile_outlier_ratio=0.5)
    with pytest.raises(ValueError, match="focal_max_split_sigma_rel"):
        PoseEstimatorConfig(focal_max_split_sigma_rel=0.01)
    with pytest.raises(ValueError, match="pnp_max_turn_deg_per_frame"):
        PoseEstimatorConfig(pnp_max_turn_deg_per_frame=0.0)
    with pytest.raises(ValueError, match="focal_fallback_min_kept"):
        PoseEstimatorConfig(focal_fallback_min_kept=1.5)
    with pytest.raises(ValueError, match="sfm_global_first_max_residual_px"):
        PoseEstimatorConfig(sfm_global_first_max_residual_px=-1.0)
    with pytest.raises(ValueError, match="colmap_joint_ba_iters"):
        PoseEstimatorConfig(colmap_joint_ba_iters=0)
    with pytest.raises(ValueError, match="colmap_joint_ba_loss_px"):
        PoseEstimatorConfig(colmap_joint_ba_loss_px=-1.0)
    with pytest.raises(ValueError, match="colmap_ba_function_tolerance"):
        PoseEstimatorConfig(colmap_ba_function_tolerance=-1e-6)


def _degrade(frames, seed=0):
    """Hard footage (as bench/annotate.py degrade): flat contrast, 7 px motion blur, flicker, sensor noise."""
    import cv2

    rng = np.random.default_rng(seed)
    x = 128.0 + 0.45 * (frames.astype(np.float32) - 128.0)
    k = np.zeros((7, 7), np.float32)
    k[3, :] = 1.0 / 7.0
    x = np.stack([cv2.filter2D(f, -1, k) for f in x])
    x *= (1.0 + rng.uniform(-0.15, 0.15, len(x)))[:, None, None, None].astype(np.float32)
    return np.clip(x + rng.normal(0.0, 4.0, x.shape), 0, 255).astype(np.uint8)


def _honest(res, clip):
    """A self-calibrated focal is within 3 sigma (+1 % floor) of the truth, or flagged as the default."""
    if res.intrinsics_source == "default_fov":
        return res.focal_confidence == 0.0 and "not trusted" in res.diagnostics["focal_fallback"]
    sig = res.diagnostics["shots"][0]["focal_sigma_rel"]
    return sig is not None and _focal_err(res, clip) <= 3 * sig + 0.01


def test_focal_away_from_the_default_fov_is_self_calibrated():
    # 50 deg HFOV: the 60 deg default is 19 % off, so a fallback cannot pass for a measurement here.
    # The bench's orbit clip (320x192, 48 frames): measured +1.2 / +1.3 % in two runs (sigma 0.18 %).
    # Known gap: a 36-frame mixed clip (seed 9) measured +4.3 % with sigma 0.15 %, so sigma is not yet honest
    # on every clean clip; this test pins the 2 % target where it is met.
    c = render_clip(ClipSpec(kind="orbit", speed="slow", num_frames=48, fps=16.0, height=192, width=320, seed=9010,
                             fov_deg=50.0))
    res = estimate_poses(c.frames, c.fps, None, scale_free=True)
    assert res.intrinsics_source == "self_calibrated_sfm", res.diagnostics["focal_fallback"]
    assert _focal_err(res, c) < 0.02 and res.focal_confidence > 0.1
    assert _honest(res, c)


def test_focal_that_cannot_be_calibrated_is_flagged_not_confidently_wrong_and_repeats():
    # Hard walk-forward footage: forward motion barely constrains f (measured up to +433 % before the
    # profile and the rotation-path trust test). Either honest or the flagged default, never confident and wrong.
    # And the same frames give the same answer: every pycolmap options struct's own generator was clock-seeded
    # and the mapper's worker threads raced (one hard clip mapped to a focal of 289, 506, 336 or 504 px on four
    # runs; this one flagged the default in one run and claimed +27 % at confidence 0.6 in another). Seeded
    # generators and one COLMAP thread make a clip's poses a function of its frames.
    c = render_clip(ClipSpec(kind="walk_forward", speed="slow", num_frames=36, fps=12.0, height=192, width=320,
                             seed=9, fov_deg=50.0))
    frames = _degrade(c.frames)
    res, again = (estimate_poses(frames, c.fps, None, scale_free=True) for _ in range(2))
    assert _honest(res, c), (res.intrinsics_source, _focal_err(res, c), res.diagnostics["shots"][0])
    assert not (_focal_err(res, c) > 0.1 and res.focal_confidence > 0.1)
    assert np.array_equal(res.registered, again.registered)
    assert np.array_equal(res.c2w, again.c2w) and np.array_equal(res.intrinsics, again.intrinsics)


def test_turn_focal_in_the_wrong_basin_is_not_trusted(tmp_path):
    # The bench's clean turn (bench/annotate.py --mode real-footage --fov 50: 320x192, 48 frames, H.264 round
    # trip). A forward-moving, yawing camera trades focal against scene depth: the all-track SfM map sits at
    # +5.4-6.0 % (SIFT-based pycolmap +5.5 %) with a profile that is erratic (sigma 0.05 %, confidence 0.997, in
    # one run; a rival basin, sigma 13 %, in the next), so before split_focal_check this clip was confidently
    # wrong in about every other run. Random track halves map 5-17 % apart, each with a sharp profile.
    from model.video_io import read_video, write_video

    c = render_clip(ClipSpec(kind="turn", speed="slow", num_frames=48, fps=16.0, height=192, width=320, seed=9040,
                             fov_deg=50.0))
    write_video(c.frames, tmp_path / "clip.mp4", c.fps)
    frames, fps = read_video(tmp_path / "clip.mp4")
    res = estimate_poses(frames, fps, None, scale_free=True)
    sh = res.diagnostics["shots"][0]
    assert sh["model"] == "sfm" and res.registered.mean() > 0.9
    assert _honest(res, c), (res.intrinsics_source, _focal_err(res, c), sh.get("focal_checks"))
    assert not (_focal_err(res, c) > 0.03 and res.focal_confidence > 0.1)
    # Its split sigma (measured 4.4-5.9 %) is wide but below focal_max_split_sigma_rel: the focal is kept (+4.5 %)
    # with the low confidence that says how wide, instead of the default FOV 19 % off.
    assert res.intrinsics_source == "self_calibrated_sfm" and res.focal_confidence < 0.1
    assert _focal_err(res, c) < 0.1
    # The check itself (run inside estimate_poses, since the profile passed): measured 5.9 % on this clip, where
    # the profile alone said 1.4 % (0.05 % before the outlier points were dropped), which a curvature-only check
    # would report.
    chk = sh["focal_checks"]
    assert chk["focal_split_sigma_rel"] > 0.01 and chk["focal_split_sigma_rel"] > 2 * chk["profile_sigma_rel"], chk


def test_points_the_static_scene_cannot_explain_do_not_bias_the_focal(tmp_path):
    # The bench's clean mixed clip (bench/annotate.py --mode real-footage --fov 50: 320x192, 48 frames, H.264
    # round trip). Corners where two surfaces cross in the image slide along the edge as the view changes; their
    # tracks are smooth, so they pass RANSAC and COLMAP's 4 px filter, and they pull the one parameter every track
    # shares. Measured: +3.0 % focal, ATE Sim(3) 3.5 mm with every mapped point; +1.6 %, 1.3 mm with the 18 % of
    # points beyond 2x the median reprojection error dropped before the focal profile (pycolmap SIFT: 1.4 mm).
    from model.video_io import read_video, write_video

    c = render_clip(ClipSpec(kind="mixed", speed="slow", num_frames=48, fps=16.0, height=192, width=320, seed=9050,
                             fov_deg=50.0))
    write_video(c.frames, tmp_path / "clip.mp4", c.fps)
    frames, fps = read_video(tmp_path / "clip.mp4")
    # The split check costs 4 more mappings and is tested above; this test is about the profile's input.
    res = estimate_poses(frames, fps, None, scale_free=True, config=PoseEstimatorConfig(focal_split_groups=0))
    sh = res.diagnostics["shots"][0]
    assert sh["model"] == "sfm" and res.registered.all()
    assert res.intrinsics_source == "self_calibrated_sfm" and _focal_err(res, c) < 0.02, _focal_err(res, c)
    assert M.ate(res.c2w, c.c2w, "sim3")["rmse"] < 0.0025
    assert sh["sfm"]["outlier_points_dropped"] > 0



def test_focal_split_check_gives_the_same_answer_in_worker_processes(mixed_clip):
    # The check's R x G group maps run in focal_split_workers processes; each reseeds pycolmap, and the
    # partitions are drawn before any map runs, so the worker count must not change a single number.
    import cv2

    from components.annotate.colmap_backend import split_focal_check
    from components.annotate.tracks import track_clip

    c = mixed_clip
    gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in c.frames])
    cfg = PoseEstimatorConfig(focal_split_workers=1)
    tracks = track_clip(gray, cfg)
    idx = np.arange(len(gray))
    one = split_focal_check(tracks, idx, *gray.shape[1:], 230.0, cfg)
    two = split_focal_check(tracks, idx, *gray.shape[1:], 230.0, PoseEstimatorConfig(focal_split_workers=2))
    assert np.asarray(one["focal_split_px"]).shape == (cfg.focal_split_repeats, cfg.focal_split_groups)
    assert np.isfinite(one["focal_split_px"]).any()  # something mapped, so the comparison means something
    np.testing.assert_array_equal(one["focal_split_px"], two["focal_split_px"])
    def untimed(groups):
        return [{k: v for k, v in g.items() if k != "seconds"} for g in groups]

    assert untimed(one["focal_split_groups"]) == untimed(two["focal_split_groups"])
    with pytest.raises(ValueError, match="focal_split_workers"):
        PoseEstimatorConfig(focal_split_workers=0)
    # The groups only name their basin: their profiles step focal_split_profile_step, not the fine step.
    steps = [g["profile_step_rel"] for g in one["focal_split_groups"] if g["profile_step_rel"] is not None]
    assert steps and np.allclose(steps, cfg.focal_split_profile_step, rtol=1e-6)
    assert cfg.focal_split_profile_step != cfg.focal_profile_step
    for name in ("focal_profile_step", "focal_split_profile_step"):
        with pytest.raises(ValueError, match=name):
            PoseEstimatorConfig(**{name: 0.0})


def test_group_maps_started_beside_the_all_track_map_change_nothing_and_leave_no_process(mixed_clip):
    # With focal_split_workers > 1 the split check's group maps start in worker processes before the all-track
    # map (SplitFocalCheck) instead of after it; poses, focal and every group figure must be the same as with
    # the groups mapped one after another here, and no worker may outlive the call (nor a check closed unused).
    import multiprocessing

    import cv2

    from components.annotate.colmap_backend import SplitFocalCheck
    from components.annotate.tracks import track_clip

    c = mixed_clip
    one = estimate_poses(c.frames, c.fps, None, scale_free=True, config=PoseEstimatorConfig(focal_split_workers=1))
    two = estimate_poses(c.frames, c.fps, None, scale_free=True, config=PoseEstimatorConfig(focal_split_workers=2))
    assert multiprocessing.active_children() == []
    chk1, chk2 = (r.diagnostics["shots"][0].get("focal_checks") for r in (one, two))
    assert chk1 is not None  # the check ran, so the comparison covers the early start
    np.testing.assert_array_equal(chk1["focal_split_px"], chk2["focal_split_px"])
    np.testing.assert_array_equal(one.c2w, two.c2w)
    np.testing.assert_array_equal(one.intrinsics, two.intrinsics)
    assert one.intrinsics_source == two.intrinsics_source and one.focal_confidence == two.focal_confidence

    gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in c.frames])
    cfg = PoseEstimatorConfig(focal_split_workers=2)
    check = SplitFocalCheck(track_clip(gray, cfg), np.arange(len(gray)), *gray.shape[1:], cfg)
    assert len(multiprocessing.active_children()) == 1  # one worker maps already (the caller is the other)
    check.close()
    check.close()  # idempotent
    assert multiprocessing.active_children() == []


@pytest.mark.timeout(300)
def test_our_bundle_adjustments_stop_at_the_configured_tolerance_and_cap():
    """COLMAP's function tolerance 0 runs every allowed iteration; ours stop at colmap_ba_function_tolerance,
    and the joint BA at colmap_joint_ba_iters."""
    import pycolmap

    from components.annotate.colmap_backend import _ba_options

    cfg = PoseEstimatorConfig(colmap_ba_function_tolerance=3e-6, colmap_joint_ba_iters=7)
    held = _ba_options(pycolmap, cfg, refine_focal=False, iters=cfg.colmap_joint_ba_iters)
    s = held.ceres.solver_options
    assert s.function_tolerance == pytest.approx(3e-6) and s.max_num_iterations == 7 and s.num_threads == 1
    assert not held.refine_focal_length and _ba_options(pycolmap, cfg, refine_focal=True).refine_focal_length
    assert pycolmap.BundleAdjustmentOptions().ceres.solver_options.function_tolerance == 0.0  # what it replaces


def test_the_annotator_imports_without_torch():
    """Every split-check worker re-imports its caller's main module before it maps; with torch in the annotator's
    import chain (model.camera, via model.trajectory) that took 1.2-1.6 s per worker, 0.7-1.0 s without."""
    import subprocess
    import sys

    code = "import sys, components.annotate.poses, components.annotate.scale_free; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_a_split_check_worker_that_dies_is_an_error_not_a_wait(mixed_clip):
    # A worker killed (out of memory, say) before it sends its groups: result() maps what is left itself, then
    # says the worker is gone instead of waiting for its message forever.
    import cv2

    from components.annotate.colmap_backend import SplitFocalCheck
    from components.annotate.tracks import track_clip

    c = mixed_clip
    gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in c.frames])
    cfg = PoseEstimatorConfig(focal_split_workers=2)
    check = SplitFocalCheck(track_clip(gray, cfg), np.arange(len(gray)), *gray.shape[1:], cfg)
    check._procs[0].kill()
    with pytest.raises(RuntimeError, match="workers exited .* result\\(s\\) missing"):
        check.result(230.0)


def test_split_check_groups_map_fewer_keyframes_but_never_too_few():
    from components.annotate.colmap_backend import group_keyframe_step

    cfg = PoseEstimatorConfig()
    assert (cfg.colmap_keyframe_step, cfg.focal_split_keyframe_step, cfg.focal_split_min_keyframes) == (3, 6, 8)
    assert group_keyframe_step(48, cfg) == 6 and group_keyframe_step(480, cfg) == 6  # the bench's clips
    assert group_keyframe_step(30, cfg) == 3  # a thin shot keeps the shot's step (>= 8 keyframes)
    assert group_keyframe_step(5, cfg) == 3  # never finer than the shot's own map
    assert group_keyframe_step(48, PoseEstimatorConfig(focal_split_keyframe_step=0)) == 3
    for name, bad in (("focal_split_keyframe_step", -1), ("focal_split_min_keyframes", 1)):
        with pytest.raises(ValueError, match=name):
            PoseEstimatorConfig(**{name: bad})


def test_a_group_whose_incremental_map_fails_gets_the_global_mapper(monkeypatch):
    """A group map that cannot pin its focal is thin evidence, not evidence against the focal: the global
    mapper gets its turn before the group counts as failed (bench clean mixed clip: split sigma inf -> the focal
    kept at +1.2 % instead of the -19 % default FOV). Registration alone is not the test: that group had 29/48."""
    from components.annotate import colmap_backend as cb
    from components.annotate.tracks import Tracks

    calls = []

    def fake_map(part, fidx, h, w, focal, cfg, fixed_K=None):
        calls.append((cfg.colmap_keyframe_step, cfg.colmap_mapper))
        pinned = cfg.colmap_mapper in pinned_by
        k = np.diag([300.0 + len(calls), 300.0, 1.0])
        return cb.MapResult(np.zeros((len(fidx), 3, 3)), np.zeros((len(fidx), 3)), np.ones(len(fidx), bool), k, 0.3,
                            100, {"focal_sigma_rel": 0.01 if pinned else float("inf"), "mapper": cfg.colmap_mapper})

    monkeypatch.setattr(cb, "map_tracks", fake_map)
    tracks = Tracks(obs=[], num_tracks=0, survival=np.ones(48), cuts=[])  # the fake mapper never reads them
    job = (tracks, np.arange(48), 192, 320, PoseEstimatorConfig())
    inc, glob = "incremental", "global"
    pinned_by = {glob}  # every frame registered, focal unpinned by the incremental map
    assert cb._map_group(job)["focal_px"] == 302.0 and calls == [(6, inc), (6, glob)]
    calls.clear()
    pinned_by = {inc}  # passes at once: mapped once
    assert cb._map_group(job)["focal_px"] == 301.0 and calls == [(6, inc)]
    calls.clear()
    pinned_by = set()  # fails with both: NaN
    assert np.isnan(cb._map_group(job)["focal_px"]) and calls == [(6, inc), (6, glob)]


def test_joint_bundle_adjustment_refines_the_pnp_frames_with_the_keyframe_map(mixed_clip):
    """The frames PnP posed between keyframes join one BA with the map: their poses move (they carry
    observations there), every registered frame takes part, and without it nothing of that is reported."""
    from dataclasses import replace

    from components.annotate.colmap_backend import map_tracks
    from components.annotate.tracks import track_clip

    c = mixed_clip
    gray = np.stack([np.dot(f[..., :3], [0.299, 0.587, 0.114]).astype(np.uint8) for f in c.frames])
    n, h, w = gray.shape
    cfg = PoseEstimatorConfig(colmap_mapper="global")  # this thin clip's incremental map fragments (see scale_free)
    tracks = track_clip(gray, cfg)
    on = map_tracks(tracks, np.arange(n), h, w, None, cfg)
    off = map_tracks(tracks, np.arange(n), h, w, None, replace(cfg, colmap_joint_ba=False))
    assert on.registered.sum() >= 0.9 * n and (on.registered == off.registered).all()
    assert on.stats["joint_ba_frames"] == on.registered.sum() and "joint_ba_frames" not in off.stats
    assert on.stats["focal_keyframe_map_px"] == pytest.approx(off.K[0, 0])  # the same map before the joint BA
    rest = on.registered.copy()
    rest[:: cfg.colmap_keyframe_step] = False
    moved = np.abs(on.w2c_t[rest] - off.w2c_t[rest]).max(axis=1) / np.abs(off.w2c_t[rest]).max()
    assert np.median(moved) > 1e-6  # PnP frames without observations in the BA would stay where PnP put them
    assert np.isfinite(on.reprojection_rmse_px) and on.reprojection_rmse_px < 1.0


def test_colmap_log_goes_to_a_file_and_comes_back_on_failure(tmp_path, capfd):
    # pycolmap 4.2.1 ignores its own logging.minloglevel: each bundle adjustment writes INFO lines to fd 2.
    import pycolmap

    from components.annotate.colmap_backend import colmap_log_captured

    log = tmp_path / "colmap.log"
    with colmap_log_captured(log):
        pycolmap.bundle_adjustment(pycolmap.Reconstruction(), pycolmap.BundleAdjustmentOptions())
    assert "bundle adjustment" not in capfd.readouterr().err.lower()
    assert "bundle adjustment" in log.read_text().lower()
    with pytest.raises(RuntimeError, match="boom"), colmap_log_captured(log):
        pycolmap.bundle_adjustment(pycolmap.Reconstruction(), pycolmap.BundleAdjustmentOptions())
        raise RuntimeError("boom")
    err = capfd.readouterr().err
    assert "COLMAP's last log lines" in err and "bundle adjustment" in err.lower()


def test_untrusted_focal_does_not_keep_its_poses_for_one_more_frame(tmp_path):
    # The bench's hard mixed clip (bench/annotate.py --mode real-footage --fov 50, H.264 round trip). Its SfM
    # focal (127 px, -63 %) passed the profile but not the split test; the default-FOV map registered 35
    # frames, the untrusted one 36, and the untrusted map used to keep the poses: rotation error 16 deg.
    bench = _bench()
    c, frames, fps = _bench_hard_clip("mixed", tmp_path)
    res = estimate_poses(frames, fps, None, scale_free=True)
    assert _honest(res, c), (res.intrinsics_source, _focal_err(res, c), res.diagnostics["focal_fallback"])
    assert not (_focal_err(res, c) > 0.3 and "from the untrusted map" in res.diagnostics["focal_fallback"])
    assert bench.score(res.c2w, res.registered, c.c2w, metric=False)["rre_deg"] < 10.0  # measured 6.0


def _bench():
    """bench/annotate.py as a module (its degrade() makes the real-footage mode's hard clips)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_annotate", Path(__file__).parents[2] / "bench" / "annotate.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def _bench_hard_clip(kind, tmp_path):
    """The bench's hard clip of one class at 50 deg HFOV after an H.264 round trip: (clip, frames, fps)."""
    from model.video_io import read_video, write_video

    ki = ("walk_forward", "orbit", "pure_yaw", "strafe", "turn", "mixed").index(kind)
    c = render_clip(ClipSpec(kind=kind, speed="slow", num_frames=48, fps=16.0, height=192, width=320,
                             seed=9000 + 10 * ki, fov_deg=50.0))
    write_video(_bench().degrade(c.frames, 9000 + ki), tmp_path / "clip.mp4", c.fps)
    frames, fps = read_video(tmp_path / "clip.mp4")
    return c, frames, fps


def test_frames_beside_failed_keyframes_are_not_posed_by_a_lone_pnp(tmp_path):
    # The bench's hard turn: its first five keyframes did not map, and PnP on the few points the frames
    # between them saw gave poses 53 and 83 deg off their neighbours. Such frames are now unregistered, with
    # the reason; the registered ones turn like the camera (measured: largest per-frame error 2.7 deg).
    c, frames, fps = _bench_hard_clip("turn", tmp_path)
    res = estimate_poses(frames, fps, None, scale_free=True)
    reg = res.registered
    assert reg.sum() >= 24
    e, g = res.c2w[reg], c.c2w[reg]
    err = M.relative_rotation_error(np.linalg.inv(e[0]) @ e, np.linalg.inv(g[0]) @ g)
    assert err.max() < 10.0, np.round(err, 1)
    assert all("absolute pose not solved" in r for r, ok in zip(res.unregistered_reason, reg) if not ok)


def test_hard_pure_yaw_whose_sfm_focal_fails_is_posed_as_rotation(tmp_path):
    # The bench's hard pure yaw (noise, blur, flicker, two moving blocks). On some machines SfM wins the model
    # selection (it fits the noise as baseline: rotation p90 residual 1.3 px, its RMSE lower); its focal then
    # failed the split test (no track group could be mapped: no parallax) and the shot was re-mapped with the
    # default FOV: 26/48 frames, focal -19 %. The rotation model explains the tracks to noise level with a trusted
    # focal, so the shot is a rotation, posed in full (measured where rotation wins directly: 48/48, 0.11 deg).
    bench = _bench()
    c, frames, fps = _bench_hard_clip("pure_yaw", tmp_path)
    res = estimate_poses(frames, fps, None, scale_free=True)
    sh = res.diagnostics["shots"][0]
    assert sh["model"] == "rotation", (sh["model"], res.diagnostics["focal_fallback"])
    assert res.registered.all() and np.abs(res.c2w[:, :3, 3]).max() == 0.0
    assert res.intrinsics_source == "self_calibrated_rotation" and _focal_err(res, c) < 0.05
    assert bench.score(res.c2w, res.registered, c.c2w, metric=False)["rre_deg"] < 0.5
