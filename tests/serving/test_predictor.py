"""Predictor: request validation (each error names its input) and generation, in-process."""

from __future__ import annotations

import numpy as np
import pytest

from serving.predictor import Predictor, RequestError, resolve_loader
from tests.serving.conftest import MAX_FRAMES, N_FRAMES, H, W


@pytest.fixture(scope="module")
def predictor(bundle) -> Predictor:
    bundle_dir, loader = bundle
    return Predictor(bundle_dir, max_frames=MAX_FRAMES, default_mode="few_step", loader=loader)


def test_generates_from_float32_wire_arrays(predictor, first_frame, trajectory):
    # The Triton wire form: FP32 poses, one-element INT64/INT32 arrays, MODE as bytes.
    video = predictor.predict(first_frame, trajectory.c2w[:N_FRAMES].astype(np.float32),
                              trajectory.intrinsics[:N_FRAMES].astype(np.float32), seed=np.array([1], np.int64),
                              num_frames=np.array([N_FRAMES], np.int32), mode=b"few_step")
    assert video.shape == (N_FRAMES, H, W, 3) and video.dtype == np.uint8
    assert video.std() > 0  # a real decode, not a constant fill


def _nan(c2w):
    c2w = c2w.copy()
    c2w[1, 0, 3] = np.nan
    return c2w


def _inf_focal(K):
    K = K.copy()
    K[0, 0, 0] = np.inf
    return K


def _scaled(c2w):
    c2w = c2w.copy()
    c2w[2, :3, :3] *= 2.0  # a scaled rotation: not a rigid motion
    return c2w


@pytest.mark.parametrize(
    "change, match",
    [
        ({"image": lambda im: im.astype(np.float32)}, "IMAGE must be a uint8"),
        ({"image": lambda im: im[..., :1]}, r"IMAGE must have shape \(H, W, 3\)"),
        ({"image": lambda im: im[: H // 2]}, f"IMAGE is {H // 2}x{W} but this model generates {H}x{W}"),
        ({"c2w": lambda c: c[:, :3]}, r"C2W must have shape \(N, 4, 4\)"),
        ({"c2w": lambda c: c.astype(np.int64)}, "C2W must be a float array"),
        ({"c2w": _nan}, "C2W .*NaN or inf"),
        ({"c2w": _scaled}, "rotation|orthonormal"),
        ({"K": lambda k: k[:-1]}, "C2W has .* poses but INTRINSICS has"),
        ({"K": _inf_focal}, "INTRINSICS contains NaN or inf"),
        ({"num_frames": MAX_FRAMES + 4}, f"too many frames.*at most {MAX_FRAMES}"),
        ({"num_frames": 6}, r"NUM_FRAMES=6 is not 1 \+ 4\*k.*5 or 9"),
        ({"num_frames": 1}, r"NUM_FRAMES must be >= 5 \(1 \+ 4\)"),
        ({"seed": -1}, r"SEED must be in \[0, 2\*\*63-1\]"),
        ({"seed": np.array([1.5])}, "SEED must be one integer"),
        ({"mode": "fast"}, "MODE must be one of"),
    ],
)
def test_bad_request_names_the_problem(predictor, first_frame, trajectory, change, match):
    n = change.get("num_frames", N_FRAMES)  # as many poses as frames: only the named problem remains
    image = change.get("image", lambda x: x)(first_frame)
    c2w = change.get("c2w", lambda x: x)(trajectory.c2w[:n])
    K = change.get("K", lambda x: x)(trajectory.intrinsics[:n])
    with pytest.raises(RequestError, match=match):
        predictor.predict(image, c2w, K, seed=change.get("seed", 0),
                          num_frames=change.get("num_frames", N_FRAMES), mode=change.get("mode"))


@pytest.mark.parametrize("num_frames, poses", [(9, 5), (5, 9)])
def test_frame_count_disagreeing_with_the_poses_is_rejected(predictor, first_frame, trajectory, num_frames, poses):
    # Both ways: asking for more frames than poses, and sending more poses than frames (once silently cut).
    with pytest.raises(RequestError, match=f"NUM_FRAMES={num_frames} but C2W has {poses} poses"):
        predictor.predict(first_frame, trajectory.c2w[:poses], trajectory.intrinsics[:poses], num_frames=num_frames)


def test_num_frames_is_optional(predictor, first_frame, trajectory):
    video = predictor.predict(first_frame, trajectory.c2w[:N_FRAMES], trajectory.intrinsics[:N_FRAMES])
    assert video.shape == (N_FRAMES, H, W, 3)


def test_stream_chunks_concatenate_to_the_whole_video(predictor, first_frame, trajectory):
    n = MAX_FRAMES  # 9 raw = 3 latent frames: one first chunk (4 latent frames would be 13 raw)
    c2w, K = trajectory.c2w[:n], trajectory.intrinsics[:n]
    whole = predictor.predict(first_frame, c2w, K, seed=4)
    chunks = list(predictor.stream(first_frame, c2w, K, seed=4))
    np.testing.assert_array_equal(np.concatenate(chunks), whole)
    with pytest.raises(RequestError, match="C2W .*NaN"):  # validation is eager: before the first chunk
        predictor.stream(first_frame, np.full_like(c2w, np.nan), K)


def test_request_error_is_a_value_error():
    assert issubclass(RequestError, ValueError)  # the INTERFACES contract: ValueError on bad input


def test_valid_frame_counts(predictor):
    assert predictor.valid_frame_counts(6) == (5, 9)
    assert predictor.valid_frame_counts(9) == (9, 9)
    assert predictor.valid_frame_counts(2) == (5, 5)


def test_constructor_rejects_bad_settings(bundle, tmp_path):
    bundle_dir, loader = bundle
    with pytest.raises(FileNotFoundError, match="bundle directory not found"):
        Predictor(tmp_path / "missing", loader=loader)
    with pytest.raises(ValueError, match="default_mode"):
        Predictor(bundle_dir, default_mode="turbo", loader=loader)
    with pytest.raises(ValueError, match="max_frames=3 is below the shortest video"):
        Predictor(bundle_dir, max_frames=3, loader=loader)
    with pytest.raises(ValueError, match="loader spec"):
        resolve_loader("no_colon_here")
