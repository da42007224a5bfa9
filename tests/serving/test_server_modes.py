"""Pod mode of the Triton launcher (bind address, metrics, explicit model control) and the production
follower reloading a real tritonserver when the MLflow alias moves (trivial echo model: seconds)."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from serving.server import ProductionFollower, TritonDist, TritonServer

ECHO_MODEL = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.version = int(args["model_version"])

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x * self.version)]))
        return out
'''
ECHO_CONFIG = '''name: "echo"
backend: "python"
max_batch_size: 0
input { name: "X" data_type: TYPE_FP32 dims: [-1] }
output { name: "Y" data_type: TYPE_FP32 dims: [-1] }
instance_group { kind: KIND_CPU count: 1 }
'''


def echo_builder(bundle: Path, repo: Path, model_name: str, device: str) -> None:
    """Stands in for serving.triton_repo.build_repository: same layout (``<name>/config.pbtxt``, ``1/``)."""
    assert (bundle / "config.json").is_file()
    (repo / model_name / "1").mkdir(parents=True)
    (repo / model_name / "config.pbtxt").write_text(ECHO_CONFIG.replace('"echo"', f'"{model_name}"'))
    (repo / model_name / "1" / "model.py").write_text(ECHO_MODEL)


def _echo(url: str, model: str = "echo") -> float:
    with httpclient.InferenceServerClient(url) as client:
        inp = httpclient.InferInput("X", [1], "FP32")
        inp.set_data_from_numpy(np.array([1.0], np.float32))
        return float(client.infer(model, [inp]).as_numpy("Y")[0])


def test_defaults_stay_local_and_pod_mode_binds_all_interfaces_with_metrics(tmp_path):
    dist = TritonDist(Path("/t/tritonserver"), Path("/b"), Path("/s"), Path("/l"))
    (tmp_path / "r").mkdir()
    local = TritonServer(tmp_path / "r", http_port=1, grpc_port=2).command(dist, Path("/b"))
    assert "--http-address=127.0.0.1" in local and "--grpc-address=127.0.0.1" in local
    assert "--allow-metrics=false" in local and "--model-control-mode=explicit" in local
    pod = TritonServer(tmp_path / "r", http_port=8000, grpc_port=8001, host="0.0.0.0", metrics_port=8002)
    cmd = pod.command(dist, Path("/b"))
    assert {"--http-address=0.0.0.0", "--grpc-address=0.0.0.0", "--allow-metrics=true",
            "--metrics-address=0.0.0.0", "--metrics-port=8002"} <= set(cmd)
    assert pod.http_url == "127.0.0.1:8000" and pod.metrics_url == "http://127.0.0.1:8002/metrics"
    with pytest.raises(ValueError, match="model_control"):
        TritonServer(tmp_path / "r", model_control="poll")


def _non_loopback_ip() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent; picks the outgoing interface
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def test_all_interfaces_answers_on_the_machine_address_and_serves_metrics(tmp_path):
    repo = tmp_path / "repo"
    echo_builder(_fake_bundle(tmp_path / "b"), repo, "echo", "cpu")
    with TritonServer(repo, host="0.0.0.0", metrics_port=0, log_file=tmp_path / "log.txt") as srv:
        assert _echo(srv.http_url) == 1.0
        with urllib.request.urlopen(srv.metrics_url, timeout=5) as resp:
            assert b"nv_inference_request_success" in resp.read()
        ip = _non_loopback_ip()
        if ip:  # what the kubelet's probe does: the pod IP, not loopback
            with urllib.request.urlopen(f"http://{ip}:{srv.http_port}/v2/health/ready", timeout=5) as resp:
                assert resp.status == 200
    assert "Started HTTPService at 0.0.0.0" in (tmp_path / "log.txt").read_text()


def _fake_bundle(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text("{}")
    return path


def _register(client, name: str, bundle: Path) -> str:
    """A version whose artifacts hold ``artifacts/bundle`` (the layout the pyfunc model has)."""
    exp = client.get_experiment_by_name("t") or client.get_experiment(client.create_experiment("t"))
    run = client.create_run(exp.experiment_id)
    client.log_artifacts(run.info.run_id, str(bundle), "model/artifacts/bundle")
    client.set_terminated(run.info.run_id)
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    return str(client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id).version)


def test_follower_reloads_the_server_when_production_moves_and_records_it(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
    v1 = _register(client, "m", _fake_bundle(tmp_path / "b1"))
    v2 = _register(client, "m", _fake_bundle(tmp_path / "b2"))
    client.set_registered_model_alias("m", "production", v1)

    repo = tmp_path / "repo"
    follower = ProductionFollower(repo, "m", "production", triton_model="echo", tracking_uri=uri, device="cuda",
                                  builder=echo_builder, deployment="triton-test")
    follower.publish(follower.current())
    assert (repo / "echo" / v1 / "model.py").is_file()  # version folder = the MLflow version
    assert "KIND_GPU" in (repo / "echo" / "config.pbtxt").read_text()  # device cuda -> GPU instances
    # Serve on CPU here (no GPU): same repository, CPU instance group.
    (repo / "echo" / "config.pbtxt").write_text(ECHO_CONFIG)
    follower.device = "cpu"
    with TritonServer(repo, log_file=tmp_path / "log.txt") as srv:
        follower.served = v1
        follower.record(v1)
        assert _echo(srv.http_url) == float(v1)
        assert follower.sync(srv) is False  # nothing moved
        client.set_registered_model_alias("m", "production", v2)
        assert follower.sync(srv) is True
        assert _echo(srv.http_url) == float(v2)  # the reloaded model is the new version folder
        index = {(m["name"], m.get("version"), m.get("state")) for m in srv.repository_index()}
        assert ("echo", v2, "READY") in index
    model = client.get_registered_model("m")
    assert model.tags["serving.triton-test.version"] == v2
    assert client.get_model_version("m", v2).tags["serving.triton-test"] == "serving"
    assert client.get_model_version("m", v1).tags["serving.triton-test"] == "retired"
