"""TritonServer process management with a trivial Python-backend model (no torch in the stub, so
each start takes seconds): readiness, environment for the stub, foreground CLI, start-up failure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from serving.server import TritonServer, TritonServerError

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Doubles an FP32 tensor and reports which numpy the stub imported: catches the STACK.md pitfalls
# (wrong libpython, base interpreter's numpy 2 turning FP32 inputs into constants).
ECHO_MODEL = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            ver = np.array([np.__version__.encode()], dtype=np.object_)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x * 2), pb_utils.Tensor("NUMPY", ver)]))
        return out
'''
ECHO_CONFIG = '''backend: "python"
max_batch_size: 0
input { name: "X" data_type: TYPE_FP32 dims: [-1] }
output { name: "Y" data_type: TYPE_FP32 dims: [-1] }
output { name: "NUMPY" data_type: TYPE_STRING dims: [1] }
'''


def _repo(root: Path, model_py: str) -> Path:
    (root / "echo" / "1").mkdir(parents=True)
    (root / "echo" / "config.pbtxt").write_text(ECHO_CONFIG)
    (root / "echo" / "1" / "model.py").write_text(model_py)
    return root


def _echo(url: str, x: np.ndarray) -> tuple[np.ndarray, str]:
    with httpclient.InferenceServerClient(url) as client:
        inp = httpclient.InferInput("X", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        res = client.infer("echo", [inp])
    return res.as_numpy("Y"), res.as_numpy("NUMPY")[0].decode()


def test_server_serves_fp32_through_the_venv_numpy_and_stops(tmp_path):
    repo = _repo(tmp_path / "repo", ECHO_MODEL)
    server = TritonServer(repo, log_file=tmp_path / "log.txt")
    with server:
        assert server.is_ready()
        x = np.array([0.5, -1.25, 3.0], np.float32)
        y, numpy_version = _echo(server.http_url, x)
        np.testing.assert_array_equal(y, 2 * x)  # real values, not zeros/ones
        assert numpy_version == np.__version__  # the stub imported this venv's numpy (< 2)
        assert server.http_port != server.grpc_port
    assert not server.is_ready()  # stopped: nothing answers on the port
    assert "Started HTTPService at 127.0.0.1" in (tmp_path / "log.txt").read_text()  # loopback only


def test_start_failure_raises_with_log_tail(tmp_path):
    repo = _repo(tmp_path / "repo", "raise RuntimeError('deliberately broken model')\n")
    with pytest.raises(TritonServerError, match="(?s)exited with code.*deliberately broken model"):
        TritonServer(repo, ready_timeout_s=60).start()


def test_missing_repository_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="model repository not found"):
        TritonServer(tmp_path / "nope")


def test_server_cli_runs_in_foreground_and_stops_on_sigterm(tmp_path):
    repo = _repo(tmp_path / "repo", ECHO_MODEL)
    proc = subprocess.Popen([sys.executable, "-m", "serving.server", "--repo", str(repo), "--port", "0",
                             "--log-file", str(tmp_path / "fg.log"), "--ready-timeout", "60"],
                            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # blocks until "ready" (or EOF if start-up failed)
        assert line.startswith("tritonserver ready: http 127.0.0.1:"), line or proc.stderr.read()
        url = line.split()[3]
        y, _ = _echo(url, np.ones(2, np.float32))
        np.testing.assert_array_equal(y, [2.0, 2.0])
        proc.terminate()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
