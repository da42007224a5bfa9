"""MLflow on PostgreSQL for real, as the cluster runs it: Debian's ``postgresql`` on loopback with its data in
a temp dir, ``mlflow db upgrade`` (the Deployment's init container) then ``mlflow server`` on it, and the
register step run the way its KFP task runs it (``run_step`` with an empty ``tracking_uri`` parameter and
``MLFLOW_TRACKING_URI`` in the environment, as the tracking ConfigMap injects it): it logs, registers and
aliases through the server, and the rows land in PostgreSQL.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user the package creates.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # ~30 s: database init, migrations, server start, a tiny bundle


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))[::-1]), None)
    if not found:
        pytest.skip(f"PostgreSQL not installed ({name}): make system-deps (apt-get install postgresql)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="sana-wm-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")  # created by the Debian package
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    password = "s3cret-" + os.urandom(4).hex()
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    if as_user:
        os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
    data, port = root / "data", _free_port()
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", "mlflow", f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(root / "pg.log"), "-w", "-t", "60", "-o",
                    f"-c listen_addresses=127.0.0.1 -p {port} -k {root}", "start"], check=True, capture_output=True)
    try:
        env = {**os.environ, "PGPASSWORD": password}
        subprocess.run([_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow"],
                       check=True, env=env, capture_output=True)
        yield {"uri": f"postgresql+psycopg2://mlflow:{password}@127.0.0.1:{port}/mlflow", "port": port, "env": env}
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    pytest.importorskip("psycopg2")
    mlflow_exe = str(Path(sys.executable).with_name("mlflow"))
    up = subprocess.run([mlflow_exe, "db", "upgrade", postgres["uri"]], capture_output=True, text=True)
    assert up.returncode == 0, up.stderr[-3000:]
    artifacts = tmp_path_factory.mktemp("artifacts")
    port = _free_port()
    log = open(artifacts.parent / "mlflow-server.log", "wb")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen([mlflow_exe, "server", "--backend-store-uri", postgres["uri"], "--artifacts-destination",
                             str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {Path(log.name).read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()


def test_register_step_logs_registers_and_aliases_through_mlflow_on_postgres(postgres, mlflow_server, tmp_path,
                                                                              monkeypatch):
    from mlflow import MlflowClient

    from components.common.launch import run_step
    from model.config import get_preset
    from model.pipeline import WorldModelPipeline

    bundle = tmp_path / "quantized"
    WorldModelPipeline.from_config(get_preset("tiny")).save_pretrained(bundle, kind="quantized")
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"rot_err_deg_mean": 2.5, "gen_fps": 3.0}))
    # As in the pod: the ConfigMap's env var, the pipeline parameter left at its default ''.
    for var in ("SANA_WM_PARENT_RUN_ID", "RANK", "SANA_WM_MLFLOW_ARTIFACTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    out = tmp_path / "registration.json"
    run_step("register", ["--model", str(bundle), "--metrics", str(metrics), "--name", "sana-wm-pg", "--out", str(out)],
             tracking_uri="", parent_run_id="", experiment="cluster-test")
    reg = json.loads(out.read_text())

    client = MlflowClient(mlflow_server)
    mv = client.get_model_version_by_alias("sana-wm-pg", "candidate")
    assert str(mv.version) == reg["version"]
    import mlflow

    mlflow.set_tracking_uri(mlflow_server)
    metrics_on_model = {m.key: m.value for m in mlflow.get_logged_model(reg["logged_model_id"]).metrics}
    assert metrics_on_model["rot_err_deg_mean"] == 2.5
    run = client.get_run(reg["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "cluster-test"
    # The version's files come back through the server's artifact proxy, and the registry rows are in PostgreSQL.
    import mlflow

    source = client.get_model_version_download_uri("sana-wm-pg", mv.version)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp_path / "dl"),
                                                     tracking_uri=mlflow_server))
    assert (local / "MLmodel").is_file()
    psql = _pg_bin("psql")
    q = subprocess.run([psql, "-h", "127.0.0.1", "-p", str(postgres["port"]), "-U", "mlflow", "-d", "mlflow", "-At",
                        "-c", "select alias, version from registered_model_aliases where name = 'sana-wm-pg'"],
                       env=postgres["env"], capture_output=True, text=True, check=True)
    assert q.stdout.strip() == f"candidate|{reg['version']}"
