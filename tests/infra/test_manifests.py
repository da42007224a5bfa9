"""Kubernetes manifests read as an operator deploys them (kustomize render of the overlay): strict schema
validation, probes, security defaults, resources, secret references, Triton in pod mode, MLflow on
PostgreSQL + S3, and the names the compiled pipelines rely on (tracking ConfigMap, data PVC)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
BASE = INFRA / "k8s" / "base"
WORKLOADS = ("Deployment", "StatefulSet", "Job")


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed")
    out = subprocess.run(["kubectl", "kustomize", str(INFRA / "k8s" / "overlays" / "h100")],
                         capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _get(docs, kind, name):
    (obj,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return obj


def _pods(docs):
    for d in docs:
        if d["kind"] in WORKLOADS:
            yield d, d["spec"]["template"]["spec"]


def test_manifests_validate_strict():
    exe = Path(sys.executable).with_name("kubernetes-validate")
    if not exe.exists():
        pytest.skip("kubernetes-validate not installed")
    files = sorted(p for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")
    n_docs = sum(1 for p in files for d in yaml.safe_load_all(p.read_text()) if d)
    proc = subprocess.run([str(exe), "--strict", *map(str, files)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (proc.stdout + proc.stderr).count("passed") == n_docs


def test_overlay_renders_with_release_storage(rendered):
    pvc = _get(rendered, "PersistentVolumeClaim", "sana-wm-data")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Ti"
    assert all(d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "sana-wm" for d in rendered)


def test_every_pod_runs_non_root_read_only_with_requests_and_limits(rendered):
    for obj, pod in _pods(rendered):
        name = f'{obj["kind"]}/{obj["metadata"]["name"]}'
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0, name
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod.get("automountServiceAccountToken") is False, name  # none of them talks to the API
        for c in pod.get("initContainers", []) + pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], (name, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (name, c["name"], kind)


def test_long_running_containers_have_startup_liveness_and_readiness_probes(rendered):
    for obj, pod in _pods(rendered):
        if obj["kind"] == "Job":
            continue
        for c in pod["containers"]:
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in c, (obj["metadata"]["name"], c["name"], probe)


def test_no_secret_values_only_secret_references(rendered):
    assert not [d for d in rendered if d["kind"] == "Secret"]
    sensitive = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN|_USER$", re.IGNORECASE)
    for obj, pod in _pods(rendered):
        for c in pod.get("initContainers", []) + pod["containers"]:
            for env in c.get("env", []):
                if sensitive.search(env["name"]):
                    assert "secretKeyRef" in env.get("valueFrom", {}), (obj["metadata"]["name"], env["name"])
            for arg in c.get("args", []) + c.get("command", []):
                # credentials only as $(VAR) expansions of secret-backed env vars
                assert not re.search(r"://[^$/]+:[^$@]+@", str(arg)), arg


def test_triton_binds_all_interfaces_with_metrics_gpu_and_model_control(rendered):
    from serving.server import TritonDist, TritonServer, build_parser

    dep = _get(rendered, "Deployment", "triton")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["python", "-m", "serving.server"]
    args = build_parser().parse_args(c["args"])  # the manifest's flags parse with the real CLI
    assert args.host == "0.0.0.0" and args.metrics_port == 8002 and args.model_control == "explicit"
    assert args.follow_alias == "production" and args.device == "cuda"
    cmd = TritonServer(ROOT, http_port=args.port, grpc_port=8001, host=args.host, metrics_port=args.metrics_port,
                       model_control=args.model_control).command(TritonDist(*[Path("/x")] * 4), Path("/b"))
    assert {"--http-address=0.0.0.0", "--grpc-address=0.0.0.0", "--metrics-address=0.0.0.0",
            "--metrics-port=8002", "--allow-metrics=true", "--model-control-mode=explicit"} <= set(cmd)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "8002"
    svc = _get(rendered, "Service", "triton")
    assert {"name": "metrics", "port": 8002, "targetPort": "metrics"} in svc["spec"]["ports"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"]["nvidia.com/gpu.product"].startswith("NVIDIA-")


def test_mlflow_runs_on_postgresql_with_an_s3_artifact_store(rendered):
    pg = _get(rendered, "StatefulSet", "mlflow-postgres")
    assert pg["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    _get(rendered, "StatefulSet", "mlflow-minio")
    dep = _get(rendered, "Deployment", "mlflow")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    args = c["args"]
    assert args[args.index("--backend-store-uri") + 1].startswith("postgresql+psycopg2://$(DB_USER):$(DB_PASSWORD)@mlflow-postgres")
    assert args[args.index("--artifacts-destination") + 1].startswith("s3://")
    env = {e["name"]: e for e in c["env"]}
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"].startswith("http://mlflow-minio")
    init = dep["spec"]["template"]["spec"]["initContainers"][0]
    assert init["command"] == ["mlflow", "db", "upgrade"]  # migrations once, before the workers start
    assert "sqlite" not in yaml.safe_dump_all(rendered)
    # The tracking URI every task gets names this server.
    cm = _get(rendered, "ConfigMap", "sana-wm-tracking")
    port = args[args.index("--port") + 1]
    assert cm["data"]["MLFLOW_TRACKING_URI"] == f"http://mlflow.sana-wm.svc:{port}"
    host = cm["data"]["MLFLOW_TRACKING_URI"].split("//")[1]
    assert host in args[args.index("--allowed-hosts") + 1].split(",")


def test_names_the_compiled_pipelines_use_exist(rendered):
    from components.train.trainjob import APP_UID
    from pipelines.cluster import default_settings
    from pipelines.dags import TRACKING_CONFIG_MAP

    s = default_settings()
    _get(rendered, "ConfigMap", TRACKING_CONFIG_MAP)
    _get(rendered, "PersistentVolumeClaim", s.pvc_name)
    _get(rendered, "ServiceAccount", "sana-wm-pipeline-runner")
    role = _get(rendered, "Role", "sana-wm-train-launcher")
    assert any("trainjobs" in r["resources"] and {"create", "delete", "get"} <= set(r["verbs"]) for r in role["rules"])
    assert s.run_as_user == APP_UID


def test_images_run_unprivileged_and_the_build_has_no_hard_coded_mirror():
    for f in (INFRA / "images").glob("Containerfile.*"):
        text = f.read_text()
        if f.name != "Containerfile.base":
            assert re.search(r"^USER 10001", text, re.MULTILINE), f.name
    script = (INFRA / "build_image.sh").read_text()
    assert "DEBIAN_MIRROR:?" in script and "deb.debian.org" not in script
    assert "torchrun" in (INFRA / "images" / "Containerfile.train").read_text()
