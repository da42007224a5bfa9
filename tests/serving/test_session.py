"""StreamingSession / SessionManager in-process: parity with the whole-video pipeline, actions, errors,
the session limit, END and idle reaping, and memory that does not grow with the session."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.pipeline import WorldModelPipeline
from model.trajectory import default_intrinsics, trajectory_from_actions
from serving.session import (
    MAX_ACTION_BYTES,
    SessionError,
    SessionManager,
    StreamingSession,
    _to_uint8,
    action_poses,
    parse_chunk_action,
)
from tests.serving.conftest import TINY, H, W

FIRST, CHUNK = 12, 12  # tiny: 4 * (4 - 1) poses on START, 4 * 3 per later chunk
K = default_intrinsics(H, W)


@pytest.fixture(scope="module")
def pipeline(bundle):
    return WorldModelPipeline.from_pretrained(bundle[0])


@pytest.mark.parametrize("mode", ["few_step", "streaming"])
def test_session_chunks_equal_the_pipeline_video(pipeline, first_frame, mode):
    # Three chunks steered with a whole trajectory's poses reproduce generate() bit for bit: the same
    # noise order and camera windows equal to the whole-path condition give the same latents (checked by
    # decoding them whole), and where the VAE decodes chunk-wise exactly (Wan), the same frames.
    n = 1 + FIRST + CHUNK + CHUNK
    traj = trajectory_from_actions("w 1s; q 2s; pitch_up 1s", fps=TINY.fps, K=K, num_frames=n)
    whole = pipeline.generate(first_frame, traj.c2w, traj.intrinsics, seed=7, mode=mode)
    session = StreamingSession(pipeline, first_frame, K, seed=7, mode=mode)
    got, latents, start = [], [], 1
    for size in (FIRST, CHUNK, CHUNK):
        frames, poses = session.step(c2w=traj.c2w[start:start + size])
        got.append(frames)
        latents.append(session.last_chunk_latents)
        np.testing.assert_allclose(poses[-1], traj.c2w[start + size - 1])
        start += size
    assert [len(g) for g in got] == [1 + FIRST, CHUNK, CHUNK]  # START also returns frame 0
    np.testing.assert_array_equal(_to_uint8(pipeline.vae.decode(torch.cat(latents, dim=2))), whole)
    if session.decoder.exact:
        np.testing.assert_array_equal(np.concatenate(got), whole)
    else:  # overlap decode (VAEs without a per-conv cache): same shapes, frames of the first chunk exact
        np.testing.assert_array_equal(got[0], whole[: 1 + FIRST])


def test_camera_guided_session_equals_the_pipeline_video(first_frame):
    # The session runs the samplers' guidance branches (model.sampling.Guidance): with camera guidance on,
    # its stream state holds the held-still branch too, and the chunks still equal generate()'s latents.
    from dataclasses import replace

    cfg = replace(TINY, sampler=replace(TINY.sampler, camera_guidance_scale=3.0))
    pipe = WorldModelPipeline.from_config(cfg, seed=0)
    with torch.no_grad():  # zero-initialised camera branches would make the camera (and this test) invisible
        gen = torch.Generator().manual_seed(0)
        for p in pipe.network.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    n = 1 + FIRST + CHUNK
    traj = trajectory_from_actions("w 1s; q 2s", fps=TINY.fps, K=K, num_frames=n)
    whole = pipe.generate(first_frame, traj.c2w, traj.intrinsics, seed=3)
    unguided = pipe.generate(first_frame, traj.c2w, traj.intrinsics, seed=3, camera_guidance_scale=1.0)
    assert np.abs(whole.astype(int) - unguided).max() > 0  # the guidance changes the video
    session = StreamingSession(pipe, first_frame, K, seed=3, mode="streaming")
    latents, start = [], 1
    for size in (FIRST, CHUNK):
        session.step(c2w=traj.c2w[start:start + size])
        latents.append(session.last_chunk_latents)
        start += size
    np.testing.assert_array_equal(_to_uint8(pipe.vae.decode(torch.cat(latents, dim=2))), whole)


def test_action_path_is_continuous_across_chunks():
    fps = TINY.fps
    a = action_poses("w", np.eye(4), 12, fps)
    b = action_poses("w", a[-1], 12, fps)
    step = np.linalg.norm(a[1, :3, 3] - a[0, :3, 3])
    assert step == pytest.approx(1.0 / fps)  # 1 m/s default
    assert np.linalg.norm(b[0, :3, 3] - a[-1, :3, 3]) == pytest.approx(step)  # no jump, no pause
    turn = action_poses("q+w 2", np.eye(4), 8, fps)  # keys held together: walk at 2 m/s while turning
    assert np.linalg.norm(turn[-1, :3, 3]) == pytest.approx(2.0, rel=0.05)
    assert turn[-1, 0, 2] < 0  # yaw left: the forward axis swings to -X
    pitch = action_poses("r", np.eye(4), 8, fps)
    assert pitch[-1, 1, 2] < 0  # pitch up: forward tilts to -Y (up, OpenCV axes)
    held = action_poses("w 0.5s", np.eye(4), 8, fps)  # shorter than the chunk: then hold
    np.testing.assert_allclose(held[-1], held[3])


@pytest.mark.parametrize("text, match", [
    ("x", "unknown key 'x'"),
    ("w fast", "bad speed 'fast'"),
    ("hold 2", "'hold' takes no speed"),
    ("w 1 2 3", r"expected 'KEY \[SPEED\]'"),
    ("w" * (MAX_ACTION_BYTES + 1), f"ACTION is {MAX_ACTION_BYTES + 1} bytes; at most {MAX_ACTION_BYTES}"),
    ("w -1", "speed must be finite and >= 0"),
])
def test_bad_actions_are_named(text, match):
    with pytest.raises(SessionError, match=match):
        parse_chunk_action(text)


def test_bad_steering_is_named_and_leaves_the_session_usable(pipeline, first_frame):
    s = StreamingSession(pipeline, first_frame, K, seed=1)
    with pytest.raises(SessionError, match="exactly one of ACTION"):
        s.step()
    with pytest.raises(SessionError, match=f"C2W has 5 poses but chunk 0 generates {FIRST}"):
        s.step(c2w=np.repeat(np.eye(4)[None], 5, 0))
    bad = np.repeat(np.eye(4)[None], FIRST, 0)
    bad[3, 0, 3] = np.nan
    with pytest.raises(SessionError, match="C2W contains NaN"):
        s.step(c2w=bad)
    frames, _ = s.step(action="w")
    assert frames.shape == (1 + FIRST, H, W, 3) and s.chunk_index == 1
    with pytest.raises(SessionError, match="IMAGE is 32x64"):
        StreamingSession(pipeline, first_frame[:32], K)
    with pytest.raises(SessionError, match="MODE must be one of"):
        StreamingSession(pipeline, first_frame, K, mode="bidirectional")


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_manager_limit_start_twice_end_twice_unknown_and_reaping(pipeline, first_frame):
    clock = FakeClock()
    m = SessionManager(pipeline, max_sessions=2, idle_timeout_s=10, clock=clock)
    m.start(1, first_frame)
    m.start(2, first_frame)
    with pytest.raises(SessionError, match="session limit reached: 2 of 2"):
        m.start(3, first_frame)
    with pytest.raises(SessionError, match="session 1 is already live: START was sent twice"):
        m.start(1, first_frame)
    frames, _, index = m.step(1, action="w")  # the refused STARTs harmed no live session
    assert index == 0 and len(frames) == 1 + FIRST
    with pytest.raises(SessionError, match="unknown session 9"):
        m.step(9, action="w")
    m.end(2)
    with pytest.raises(SessionError, match="END for a session that is not live"):
        m.end(2)
    m.start(3, first_frame)  # END freed a place at once
    clock.t = 5.0
    m.step(3, action="d")  # session 3 used at t=5, session 1 last at t=0
    clock.t = 12.0
    assert m.reap() == [1] and m.ids() == [3]
    with pytest.raises(SessionError, match="unknown session 1.*dropped after 10 s idle"):
        m.step(1, action="w")
    with pytest.raises(SessionError, match="CORRID must be a positive"):
        m.start(0, first_frame)


def test_session_memory_does_not_grow_with_length(pipeline, first_frame):
    s = StreamingSession(pipeline, first_frame, K, seed=2)
    sizes = []
    for k in range(6):
        s.step(action="w+q")
        sizes.append(s.num_bytes())
    # A chunk enters the state on the next request, so after request 4 the softmax K/V window (sink + 2
    # recent chunks) is full; GDN state, decoder cache and the pending chunk are fixed-size throughout.
    assert sizes[3] > 0 and sizes[-1] == sizes[3], sizes
