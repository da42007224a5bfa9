"""Sessions and streaming through a REAL tritonserver: the stateful ``sana_wm_session`` (limit without
eviction, END, idle reaping, bad requests), the decoupled ``sana_wm`` over gRPC streaming and the
``session`` CLI. One server for the module (tiny bundle, 2 sessions, 2 spare Triton slots)."""

from __future__ import annotations

import time

import av
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from model.pipeline import WorldModelPipeline
from model.trajectory import default_intrinsics, trajectory_from_actions
from serving.client import SessionClient, request_video, stream_video
from serving.client import main as client_main
from serving.server import TritonServer
from serving.session import StreamingDecoder
from serving.triton_repo import build_repository
from tests.serving.conftest import TINY, H, W, assert_starts_refused

pytestmark = pytest.mark.slow  # server start + three model loads + generation: a minute on 2 cores

MAX_SESSIONS, IDLE_S = 2, 6.0
FIRST, CHUNK = 12, 12


@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("sessions")
    repo = build_repository(bundle[0], root / "repo", loader=bundle[1], default_mode="few_step", session_mode="few_step",
                            max_sessions=MAX_SESSIONS, spare_slots=2, idle_timeout_s=IDLE_S,
                            max_video_frames=1 + FIRST + 4)
    with TritonServer(repo, log_file=root / "server.log", ready_timeout_s=240) as srv:
        yield srv


def _sessions(server, n):
    return [SessionClient(server.grpc_url) for _ in range(n)]


def test_session_round_trip_path_continuity_and_end(server, first_frame):
    with SessionClient(server.grpc_url) as s:
        k0, f0, p0 = s.start(first_frame, action="w", seed=3)
        k1, f1, p1 = s.step(action="w")
        assert (k0, k1) == (0, 1)
        assert f0.shape == (1 + FIRST, H, W, 3) and f1.shape == (CHUNK, H, W, 3) and f1.dtype == np.uint8
        np.testing.assert_allclose(p0[0], np.eye(4), atol=1e-6)  # frame 0 is the first image, at identity
        step = np.linalg.norm(p0[2, :3, 3] - p0[1, :3, 3])
        assert np.linalg.norm(p1[0, :3, 3] - p0[-1, :3, 3]) == pytest.approx(step, rel=1e-4)  # continuous path
        k2, _, _ = s.step(action="q", end=True)  # END rides on the last chunk
        assert k2 == 2
        with pytest.raises(InferenceServerException, match="must specify the START flag"):
            s.step(action="w")  # ended: Triton and the model have both forgotten it


def test_start_beyond_the_limit_is_refused_and_evicts_no_live_session(server, first_frame):
    # The case: every session place taken, then more STARTs. Without spare Triton slots a START
    # waits for a slot and then evicts the longest-idle live sequence ("must specify the START flag").
    live = _sessions(server, MAX_SESSIONS)
    for s in live:
        s.start(first_frame, action="w")
    try:
        assert_starts_refused(server.grpc_url, first_frame, f"session limit reached: {MAX_SESSIONS} of")
        for s in live:  # every live session carries on
            assert s.step(action="d")[0] == 1
        live[0].end()
        fresh = SessionClient(server.grpc_url)
        assert fresh.start(first_frame, action="w")[0] == 0  # END freed a place at once
        fresh.close()
    finally:
        for s in live:
            s.close()


BAD = [  # (what, request maker, expected message)
    ("oversized ACTION", lambda s, im: s.step(action="w" * 300), "ACTION is 300 bytes; at most 256"),
    ("NaN C2W", lambda s, im: s.step(c2w=np.full((CHUNK, 4, 4), np.nan)), "C2W contains NaN"),
    ("wrong pose count", lambda s, im: s.step(c2w=np.repeat(np.eye(4)[None], 5, 0)),
     f"C2W has 5 poses but chunk 1 generates {CHUNK}"),
    ("both ACTION and C2W", lambda s, im: s.step(action="w", c2w=np.repeat(np.eye(4)[None], CHUNK, 0)),
     "exactly one of ACTION"),
    ("unknown key", lambda s, im: s.step(action="z"), "unknown key 'z'"),
]


def test_bad_requests_get_clear_errors_and_the_session_survives(server, first_frame):
    with SessionClient(server.grpc_url) as s:
        s.start(first_frame, action="w")
        for what, make, match in BAD:
            with pytest.raises(InferenceServerException, match=match):
                make(s, first_frame)
        assert s.step(action="w")[0] == 1, "a bad request must not break or advance the session"
        with pytest.raises(InferenceServerException, match="already live: START was sent twice"):
            s.start(first_frame, action="w")
        assert s.step(action="w")[0] == 2  # the double START did not reset it
    ghost = SessionClient(server.grpc_url)
    with pytest.raises(InferenceServerException, match="must specify the START flag"):
        ghost.step(action="w")  # a chunk before START / an unknown correlation id
    with pytest.raises(InferenceServerException, match="unexpected shape for input 'IMAGE'"):
        ghost.start(first_frame[: H // 2], action="w")
    with pytest.raises(InferenceServerException, match="START needs IMAGE"):
        ghost._infer(SessionClient._steer("w", None), start=True)
    ghost._release()
    with pytest.raises(InferenceServerException, match="must specify the START flag"):
        ghost.end.__func__(type("E", (), {"live": True, "_infer": ghost._infer})())  # END twice
    ghost.close()
    with grpcclient.InferenceServerClient(server.grpc_url) as c:
        assert c.is_server_ready() and c.is_model_ready("sana_wm_session")


def test_idle_sessions_are_reaped(server, first_frame):
    s = SessionClient(server.grpc_url)
    s.start(first_frame, action="w")
    time.sleep(IDLE_S + 3)
    with pytest.raises(InferenceServerException, match="START flag|unknown session"):
        s.step(action="w")
    s.live = False
    s.close()
    assert "reaped idle sessions" in server.log_file.read_text()


def test_decoupled_model_streams_chunks_equal_to_the_whole_video(server, bundle, first_frame):
    n = 1 + FIRST + 4  # two chunks: 13 frames, then a short last chunk of 4
    traj = trajectory_from_actions("w 1s; e 2s", fps=TINY.fps, K=default_intrinsics(H, W), num_frames=n + 4)
    c2w, K = traj.c2w[:n], traj.intrinsics[:n]
    t0 = time.monotonic()
    arrivals, chunks = [], []
    for chunk in stream_video(server.grpc_url, first_frame, c2w, K, seed=5):
        arrivals.append(time.monotonic() - t0)
        chunks.append(chunk)
    assert [len(c) for c in chunks] == [1 + FIRST, 4]
    whole = request_video(server.http_url, first_frame, c2w, K, seed=5)  # the HTTP route, same request
    exact = StreamingDecoder(WorldModelPipeline.from_pretrained(bundle[0]).vae).exact
    if exact:  # a VAE with a per-conv decode cache (Wan): chunk-wise decode equals the whole decode
        np.testing.assert_array_equal(np.concatenate(chunks), whole)
    else:  # overlap decode: the first chunk is exact, later ones approximate
        np.testing.assert_array_equal(chunks[0], whole[: len(chunks[0])])
    assert arrivals[0] < arrivals[-1]
    with pytest.raises(InferenceServerException, match="NUM_FRAMES=5 but C2W has 17 poses"):
        list(stream_video(server.grpc_url, first_frame, c2w, K, num_frames=5))
    with pytest.raises(InferenceServerException, match=f"too many frames.*at most {n}"):
        request_video(server.http_url, first_frame, traj.c2w, traj.intrinsics)  # n + 4 frames over HTTP


def test_session_cli_writes_the_mp4(server, first_frame, tmp_path, capsys):
    Image.fromarray(first_frame).save(tmp_path / "first.png")
    out = tmp_path / "walk.mp4"
    rc = client_main(["session", "--image", str(tmp_path / "first.png"), "--actions", "w 2s; q 1s",
                      "-o", str(out), "--url", server.grpc_url])
    assert rc == 0, capsys.readouterr().err
    with av.open(str(out)) as container:
        frames = list(container.decode(container.streams.video[0]))
    assert len(frames) == 1 + 3 * int(TINY.fps) + 0  # 3 s at 8 fps = 24 new poses = two chunks of 12
    from model.cli import EXIT_INPUT_ERROR, run

    rc = run(client_main, ["session", "--image", str(tmp_path / "first.png"), "--actions", "jump 1s",
                           "-o", str(tmp_path / "x.mp4"), "--url", server.grpc_url])
    assert rc == EXIT_INPUT_ERROR and "unknown action 'jump'" in capsys.readouterr().err
