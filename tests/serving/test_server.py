"""Through a REAL tritonserver process (the binary in nvidia-pytriton) serving a real tiny bundle:
round trip, per-request errors, the client CLI. One server for the module."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from model.trajectory import Trajectory, save_trajectory
from serving.client import main as client_main
from serving.client import request_video
from serving.server import TritonServer
from serving.triton_repo import build_repository
from tests.serving.conftest import MAX_FRAMES, N_FRAMES, H, W

pytestmark = pytest.mark.slow  # server start + model load + generation: tens of seconds on 2 cores

MODEL = "sana_wm_video"  # the whole-video HTTP route; the decoupled stream model is tested in test_session_server


@pytest.fixture(scope="module")
def repo(bundle, tmp_path_factory) -> Path:
    bundle_dir, loader = bundle
    return build_repository(bundle_dir, tmp_path_factory.mktemp("triton") / "repo", models=("video",),
                            max_video_frames=MAX_FRAMES, default_mode="few_step", loader=loader)


@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    log = tmp_path_factory.mktemp("triton_log") / "server.log"
    with TritonServer(repo, log_file=log, ready_timeout_s=180) as srv:
        yield srv
    assert log.exists()  # a caller-chosen log survives stop()


def test_round_trip_shape_dtype_and_determinism(server, first_frame, trajectory):
    args = (server.http_url, first_frame, trajectory.c2w[:N_FRAMES], trajectory.intrinsics[:N_FRAMES])
    a = request_video(*args, seed=11, num_frames=N_FRAMES, model_name=MODEL)
    b = request_video(*args, seed=11, num_frames=N_FRAMES, model_name=MODEL)
    c = request_video(*args, seed=12, num_frames=N_FRAMES, model_name=MODEL)
    assert a.shape == (N_FRAMES, H, W, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def _nan_c2w(traj):
    c2w = traj.c2w.copy()
    c2w[2, 1, 3] = np.nan
    return c2w


BAD_REQUESTS = {  # case -> (changes to a good request, what the error must say)
    "image_shape": ({"image": lambda im: im[: H // 2]}, "unexpected shape for input 'IMAGE'"),  # Triton core
    "nan": ({"c2w": _nan_c2w}, "C2W .*NaN or inf"),
    "too_many": ({"num_frames": MAX_FRAMES + 4}, f"too many frames.*at most {MAX_FRAMES}"),
    "frame_rule": ({"num_frames": 6}, r"NUM_FRAMES=6 is not 1 \+ 4\*k"),
    "disagree": ({"num_frames": N_FRAMES, "poses": MAX_FRAMES}, f"NUM_FRAMES={N_FRAMES} but C2W has {MAX_FRAMES}"),
    "mode": ({"mode": "warp"}, "MODE must be one of"),
}


def test_bad_requests_get_their_own_errors_and_server_keeps_serving(server, first_frame, trajectory):
    for case, (change, match) in BAD_REQUESTS.items():
        n = change.get("poses", change.get("num_frames", N_FRAMES))
        kwargs = {
            "image": change.get("image", lambda x: x)(first_frame),
            "c2w": change.get("c2w", lambda t: t.c2w)(trajectory)[:n],
            "K": trajectory.intrinsics[:n],
            "num_frames": change.get("num_frames", N_FRAMES),
            "mode": change.get("mode"),
        }
        with pytest.raises(InferenceServerException, match=match) as err:
            request_video(server.http_url, model_name=MODEL, **kwargs)
        assert err.value.status() == "400", case  # the client's fault, not the server's
    good = request_video(server.http_url, first_frame, trajectory.c2w[:N_FRAMES], trajectory.intrinsics[:N_FRAMES],
                         model_name=MODEL)  # NUM_FRAMES left out: one frame per pose
    assert good.shape == (N_FRAMES, H, W, 3)
    with httpclient.InferenceServerClient(server.http_url) as client:
        assert client.is_server_ready() and client.is_model_ready(MODEL)


def test_client_cli_writes_decodable_mp4_and_contact_sheet(server, first_frame, trajectory, tmp_path):
    Image.fromarray(first_frame).save(tmp_path / "first.png")
    traj = Trajectory(trajectory.c2w[:N_FRAMES], trajectory.intrinsics[:N_FRAMES], trajectory.fps)
    save_trajectory(traj, tmp_path / "traj.npz")
    out, sheet = tmp_path / "out.mp4", tmp_path / "sheet.png"
    rc = client_main(["--image", str(tmp_path / "first.png"), "--trajectory", str(tmp_path / "traj.npz"),
                      "-o", str(out), "--url", server.http_url, "--seed", "3", "--contact-sheet", str(sheet)])
    assert rc == 0
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert float(stream.average_rate) == pytest.approx(trajectory.fps)
    assert len(frames) == N_FRAMES and frames[0].shape == (H, W, 3)
    with Image.open(sheet) as im:
        assert im.format == "PNG" and im.width > W and im.height >= H  # a grid, not one frame


def test_client_cli_reports_server_error(server, first_frame, trajectory, tmp_path, capsys):
    Image.fromarray(first_frame).save(tmp_path / "first.png")
    save_trajectory(trajectory, tmp_path / "traj.npz")
    from model.cli import EXIT_INPUT_ERROR, run

    rc = run(client_main, ["--image", str(tmp_path / "first.png"), "--trajectory", str(tmp_path / "traj.npz"),
                           "-o", str(tmp_path / "x.mp4"), "--url", server.http_url, "--frames", "6"])
    assert rc == EXIT_INPUT_ERROR and "NUM_FRAMES=6 but C2W has" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()
