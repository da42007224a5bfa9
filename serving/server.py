"""Run the real ``tritonserver`` binary that ships inside the ``nvidia-pytriton`` wheel.

No PyTriton Python API is used: the binary serves a standard model repository (serving.triton_repo),
the same one NVIDIA's server image would serve. What this module adds is the environment the binary
and its Python-backend stub need here (see STACK.md, every item was a real failure):

* a backend directory holding ``libtriton_python.so`` plus the stub built for *this* Python (3.11);
  the wheel keeps stubs per version under ``python_backend_stubs/``;
* ``LD_LIBRARY_PATH`` starting with this interpreter's ``LIBDIR`` (else the stub loads the system
  libpython: ``'_thread.RLock' object has no attribute '_recursion_count'``) and the wheel's bundled
  ``nvidia_pytriton.libs``;
* this venv's ``bin`` first on ``PATH``, so the embedded interpreter resolves this venv's packages (a
  stray numpy 2 makes FP32 inputs arrive as constant garbage with no error).

Bind address and model control are settings: locally the server listens on 127.0.0.1 only (the
default); in the Kubernetes pod it binds every interface (``--host 0.0.0.0``) so the kubelet's probes
and the Service reach it on the pod IP, and exposes Prometheus metrics (``--metrics-port 8002``). Model
control is explicit (``--model-control-mode=explicit``, every model loaded at start), so a running
server can load a new version without a restart: ``ProductionFollower`` watches an MLflow alias
(``production``), writes the aliased version as version folder ``<name>/<N>/``, asks Triton to load it,
and records the served version in MLflow.

Usage::

    with TritonServer(repo_dir) as server:        # picks free ports, waits until ready
        request_video(server.http_url, ...)

    python -m serving.server --repo build/triton_repo [--port 8000]
    python -m serving.server --repo /models/repo --host 0.0.0.0 --metrics-port 8002 \
        --follow-alias production --model-name sana-wm --device cuda      # the Kubernetes Deployment
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


class TritonServerError(RuntimeError):
    """The server could not be started or did not become ready; the message carries the log tail."""


@dataclass(frozen=True)
class TritonDist:
    """Where the pieces of the pytriton-bundled Triton live."""

    binary: Path  # tritonserver executable
    python_backend: Path  # dir with libtriton_python.so + triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub for this interpreter's minor version
    libs: Path  # nvidia_pytriton.libs (the wheel's vendored shared libraries)


def find_triton_dist() -> TritonDist:
    """Locate tritonserver in the installed ``nvidia-pytriton`` package without importing pytriton."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonServerError("nvidia-pytriton is not installed: pip install 'nvidia-pytriton==0.7.0'")
    pkg = Path(next(iter(spec.submodule_search_locations)))
    dist = pkg / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = TritonDist(
        binary=dist / "bin" / "tritonserver",
        python_backend=dist / "backends" / "python",
        stub=dist / "python_backend_stubs" / version / "triton_python_backend_stub",
        libs=pkg.parent / "nvidia_pytriton.libs",
    )
    for field_name in ("binary", "python_backend", "stub", "libs"):
        path = getattr(found, field_name)
        if not path.exists():
            raise TritonServerError(f"nvidia-pytriton install lacks {field_name} at {path} (Python {version})")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(dist: TritonDist, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver and its Python stub (library and executable search order)."""
    env = dict(os.environ if base is None else base)
    libdir = sysconfig.get_config_var("LIBDIR")
    ld = [p for p in (libdir, str(dist.libs), env.get("LD_LIBRARY_PATH", "")) if p]
    env["LD_LIBRARY_PATH"] = ":".join(ld)
    # The venv's bin, not the resolved base interpreter: the embedded Python finds pyvenv.cfg from it.
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = f"{venv_bin}:{env.get('PATH', '')}"
    # The python-backend stub starts with no locale; Python then reads text files as ASCII, and libraries
    # that open UTF-8 sources (torch inductor templates, pulled in by ModelOpt) fail at import.
    env["PYTHONUTF8"] = "1"
    return env


LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"
ENV_HOST = "SANA_WM_TRITON_HOST"  # the bind address setting (the Deployment sets 0.0.0.0)
MODEL_CONTROL_MODES = ("explicit", "none")


class TritonServer:
    """A ``tritonserver`` process serving ``repo_dir``; a context manager.

    Args:
        repo_dir: model repository (``<name>/config.pbtxt`` + ``<name>/<version>/model.py``).
        http_port / grpc_port: 0 picks a free port.
        log_file: server stdout+stderr (default: inside the server's private work dir).
        ready_timeout_s: how long ``start`` waits for ``/v2/health/ready``.
        stop_grace_s: SIGTERM first, SIGKILL after this many seconds.
        host: bind address of HTTP, gRPC and metrics (default 127.0.0.1; ``0.0.0.0`` in a pod).
        metrics_port: Prometheus metrics port (``/metrics``); None = metrics off, 0 = a free port.
        model_control: ``explicit`` (load every model at start; ``load_model`` reloads) or ``none``.
    """

    def __init__(
        self,
        repo_dir: str | Path,
        http_port: int = 0,
        grpc_port: int = 0,
        log_file: str | Path | None = None,
        ready_timeout_s: float = 120.0,
        stop_grace_s: float = 15.0,
        log_verbose: int = 0,
        host: str = LOOPBACK,
        metrics_port: int | None = None,
        model_control: str = "explicit",
    ) -> None:
        self.repo_dir = Path(repo_dir).resolve()
        if not self.repo_dir.is_dir():
            raise FileNotFoundError(f"model repository not found: {self.repo_dir}")
        if model_control not in MODEL_CONTROL_MODES:
            raise ValueError(f"model_control must be one of {MODEL_CONTROL_MODES}, got {model_control!r}")
        if not host:
            raise ValueError("host must be an address to bind (127.0.0.1 locally, 0.0.0.0 in a pod)")
        self.host = host
        self.model_control = model_control
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = None if metrics_port is None else (metrics_port or free_port())
        self.log_file = Path(log_file) if log_file else None
        self.ready_timeout_s = ready_timeout_s
        self.stop_grace_s = stop_grace_s
        self.log_verbose = log_verbose
        self._proc: subprocess.Popen | None = None
        self._work: Path | None = None

    @property
    def _connect_host(self) -> str:
        # A wildcard bind is reachable on loopback from this machine/pod.
        return LOOPBACK if self.host in (ALL_INTERFACES, "::", "[::]") else self.host

    @property
    def http_url(self) -> str:
        """``host:port`` of the HTTP endpoint, the form tritonclient.http expects."""
        return f"{self._connect_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint (tritonclient.grpc)."""
        return f"{self._connect_host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str | None:
        """``http://host:port/metrics`` (Prometheus text format), or None when metrics are off."""
        return None if self.metrics_port is None else f"http://{self._connect_host}:{self.metrics_port}/metrics"

    def _prepare_backends(self, dist: TritonDist) -> Path:
        """A private backend dir: the wheel's python backend + the stub for this Python version."""
        backends = self._work / "backends"
        shutil.copytree(dist.python_backend, backends / "python", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(dist.stub, backends / "python" / "triton_python_backend_stub")
        return backends

    def command(self, dist: TritonDist, backends: Path) -> list[str]:
        """The tritonserver command line (HTTP + gRPC [+ metrics] on ``host``)."""
        cmd = [
            str(dist.binary),
            f"--model-repository={self.repo_dir}",
            f"--backend-directory={backends}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
        ]
        if self.metrics_port is None:
            cmd.append("--allow-metrics=false")
        else:
            cmd += ["--allow-metrics=true", f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}"]
        cmd.append(f"--model-control-mode={self.model_control}")
        if self.model_control == "explicit":
            cmd.append("--load-model=*")  # everything in the repository at start, as mode none would
        return cmd + [
            "--exit-on-error=true",  # a model that fails to load stops the server: start() reports it
            "--strict-readiness=true",  # ready only once every model is ready
            f"--log-verbose={self.log_verbose}",
        ]

    def _post(self, path: str, timeout_s: float = 600.0) -> None:
        req = urllib.request.Request(f"http://{self.http_url}{path}", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                resp.read()
        except urllib.error.HTTPError as e:
            raise TritonServerError(f"POST {path}: HTTP {e.code}: {e.read().decode(errors='replace')}") from e

    def load_model(self, name: str) -> None:
        """(Re)load model ``name`` from the repository (explicit mode): Triton re-reads its config and
        version folders, serves the new version once it is ready, then unloads the old one."""
        if self.model_control != "explicit":
            raise TritonServerError(f"load_model needs model_control='explicit' (server runs {self.model_control!r})")
        self._post(f"/v2/repository/models/{name}/load")

    def unload_model(self, name: str) -> None:
        """Unload model ``name`` (explicit mode)."""
        self._post(f"/v2/repository/models/{name}/unload")

    def repository_index(self) -> list[dict]:
        """``[{"name", "version", "state"}, ...]`` of the repository as the server sees it."""
        req = urllib.request.Request(f"http://{self.http_url}/v2/repository/index", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"[]")

    def start(self) -> TritonServer:
        """Launch the server and block until it reports ready (or raise with the log tail)."""
        if self._proc is not None:
            raise TritonServerError("server already started")
        dist = find_triton_dist()
        self._work = Path(tempfile.mkdtemp(prefix="tritonserver-"))
        if self.log_file is None:
            self.log_file = self._work / "tritonserver.log"
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        backends = self._prepare_backends(dist)
        with open(self.log_file, "ab") as log:
            self._proc = subprocess.Popen(
                self.command(dist, backends), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=server_env(dist), cwd=self._work,
                start_new_session=True,  # its own process group: stop() signals the stubs too
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def exit_code(self) -> int | None:
        """The server's exit code if it has exited on its own, else None."""
        return None if self._proc is None else self._proc.poll()

    def is_ready(self) -> bool:
        """True when ``GET /v2/health/ready`` answers 200."""
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise TritonServerError(
                    f"tritonserver exited with code {self._proc.returncode} before becoming ready; "
                    f"log tail ({self.log_file}):\n{self.log_tail()}"
                )
            if self.is_ready():
                return
            time.sleep(0.25)
        raise TritonServerError(
            f"tritonserver not ready after {self.ready_timeout_s:.0f} s; log tail ({self.log_file}):\n"
            f"{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server log."""
        if self.log_file is None or not self.log_file.exists():
            return "<no log>"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int | None:
        """SIGTERM the server's process group, SIGKILL after the grace period; return the exit code."""
        proc, self._proc = self._proc, None
        code = None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_grace_s)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            code = proc.returncode
        if self._work is not None:
            # Keep a log the caller asked for; the private dir (backends, default log) goes.
            if self.log_file is not None and self.log_file.parent == self._work:
                self.log_file = None
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None
        return code

    def __enter__(self) -> TritonServer:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class ProductionFollower:
    """Serve the version of a registered model that holds ``alias`` (``production``), and say so in MLflow.

    ``sync`` asks the registry which version holds the alias; when it moved, the version's bundle is
    downloaded, the Triton model is rebuilt with version folder ``<name>/<N>/`` (N = the MLflow version)
    and GPU instances when ``device`` is CUDA, swapped into the repository, and loaded by the running
    server (explicit model control). Only after Triton reports it loaded does MLflow get the registered
    model tag ``serving.<deployment>.version`` = N and the version tag ``serving.<deployment>`` = ``serving``.

    ``builder(bundle_dir, repo_dir, model_name, device)`` writes ``<repo_dir>/<model_name>/{config.pbtxt, 1/}``;
    the default is ``serving.triton_repo.build_repository``.
    """

    def __init__(self, repo_dir: str | Path, model_name: str = "sana-wm", alias: str = "production",
                 triton_model: str = "sana_wm", tracking_uri: str | None = None, device: str = "cpu",
                 store_dir: str | Path | None = None, deployment: str = "triton", builder=None,
                 log=print) -> None:
        from mlflow import MlflowClient

        self.repo_dir = Path(repo_dir).resolve()
        self.repo_dir.mkdir(parents=True, exist_ok=True)
        self.store_dir = Path(store_dir) if store_dir else self.repo_dir.parent / f"{self.repo_dir.name}-bundles"
        self.model_name, self.alias, self.triton_model = model_name, alias, triton_model
        self.device, self.deployment, self.log = device, deployment, log
        self.client = MlflowClient(tracking_uri)
        self.builder = builder or _build_with_triton_repo
        self.served: str | None = None

    def current(self) -> str | None:
        """The version holding the alias now (None when no version has it)."""
        try:
            return str(self.client.get_model_version_by_alias(self.model_name, self.alias).version)
        except Exception as e:  # RESOURCE_DOES_NOT_EXIST: no such model or alias yet
            if "RESOURCE_DOES_NOT_EXIST" in str(e) or "not found" in str(e).lower():
                return None
            raise

    def _bundle(self, version: str) -> Path:
        """Download version ``version`` and return its model bundle folder (pyfunc artifact ``bundle``)."""
        import mlflow

        dst = self.store_dir / version
        if (dst / ".complete").is_file():
            return Path((dst / ".complete").read_text())
        shutil.rmtree(dst, ignore_errors=True)
        dst.mkdir(parents=True)
        source = self.client.get_model_version_download_uri(self.model_name, version)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst),
                                                         tracking_uri=self.client.tracking_uri))
        bundle = local / "artifacts" / "bundle"
        if (local / "MLmodel").is_file():
            from mlflow.models import Model

            arts = Model.load(str(local)).flavors.get("python_function", {}).get("artifacts", {})
            if "bundle" in arts:
                bundle = local / arts["bundle"]["path"]
        if not bundle.is_dir():
            raise TritonServerError(f"models:/{self.model_name}/{version} holds no bundle (looked at {bundle})")
        (dst / ".complete").write_text(str(bundle))
        return bundle

    def publish(self, version: str) -> Path:
        """Write version ``version`` into the repository as ``<triton_model>/<version>/``; returns the model dir."""
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2 as mc

        bundle = self._bundle(version)
        staging = Path(tempfile.mkdtemp(dir=self.repo_dir.parent, prefix=f".{self.repo_dir.name}.stage-"))
        try:
            self.builder(bundle, staging, self.triton_model, self.device)
            model_dir = staging / self.triton_model
            cfg = text_format.Parse((model_dir / "config.pbtxt").read_text(), mc.ModelConfig())
            if self.device.startswith("cuda"):
                for group in cfg.instance_group:  # the GPU the pod was given, not a CPU instance
                    group.kind = mc.ModelInstanceGroup.KIND_GPU
            (model_dir / "config.pbtxt").write_text(text_format.MessageToString(cfg))
            versions = [d for d in model_dir.iterdir() if d.is_dir() and d.name.isdigit()]
            if len(versions) != 1:
                raise TritonServerError(f"builder wrote version folders {[d.name for d in versions]}, expected one")
            if versions[0].name != version:
                os.rename(versions[0], model_dir / version)
            target = self.repo_dir / self.triton_model
            old = staging / ".old"
            if target.exists():
                os.rename(target, old)
            os.rename(model_dir, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def record(self, version: str) -> None:
        """Tag the registry with what this deployment serves."""
        self.client.set_registered_model_tag(self.model_name, f"serving.{self.deployment}.version", version)
        self.client.set_model_version_tag(self.model_name, version, f"serving.{self.deployment}", "serving")
        if self.served and self.served != version:
            with contextlib.suppress(Exception):
                self.client.set_model_version_tag(self.model_name, self.served, f"serving.{self.deployment}", "retired")

    def sync(self, server: TritonServer | None = None) -> bool:
        """Follow the alias once; returns True when a new version was published (and loaded, with ``server``)."""
        version = self.current()
        if version is None or version == self.served:
            return False
        self.log(f"[follower] {self.model_name}@{self.alias} -> version {version} (serving {self.served})")
        self.publish(version)
        if server is not None:
            server.load_model(self.triton_model)
        self.record(version)
        previous, self.served = self.served, version
        if previous:
            shutil.rmtree(self.store_dir / previous, ignore_errors=True)
        return True


def _build_with_triton_repo(bundle: Path, repo: Path, model_name: str, device: str) -> None:
    from serving.triton_repo import build_repository

    # project_root "": the adapter imports the installed packages (the image), not a checkout.
    build_repository(bundle, repo, model_name=model_name, device=device, project_root="")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m serving.server`` flags (also what the Kubernetes manifests are checked against)."""
    ap = argparse.ArgumentParser(prog="python -m serving.server", description=__doc__.splitlines()[0])
    ap.add_argument("--repo", required=True, type=Path, help="Triton model repository directory")
    ap.add_argument("--port", type=int, default=8000, help="HTTP port (0 = pick a free one)")
    ap.add_argument("--grpc-port", type=int, default=0, help="gRPC port (0 = pick a free one)")
    ap.add_argument("--host", default=os.environ.get(ENV_HOST, LOOPBACK),
                    help=f"bind address (default ${ENV_HOST} or 127.0.0.1; 0.0.0.0 in a pod)")
    ap.add_argument("--metrics-port", type=int, default=None, help="Prometheus metrics port (default: metrics off)")
    ap.add_argument("--model-control", choices=MODEL_CONTROL_MODES, default="explicit")
    ap.add_argument("--log-file", type=Path, default=None, help="server log (default: a temp file)")
    ap.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for readiness")
    ap.add_argument("--follow-alias", default=None,
                    help="serve the version of --model-name holding this MLflow alias and reload when it moves")
    ap.add_argument("--model-name", default="sana-wm", help="MLflow registered model (with --follow-alias)")
    ap.add_argument("--triton-model", default="sana_wm", help="model name inside the Triton repository")
    ap.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default $MLFLOW_TRACKING_URI)")
    ap.add_argument("--device", default="cpu", help="device the model runs on (cuda = GPU instance group)")
    ap.add_argument("--poll-s", type=float, default=60.0, help="seconds between alias checks")
    ap.add_argument("--deployment", default=os.environ.get("HOSTNAME", "triton").rsplit("-", 2)[0],
                    help="name recorded in MLflow as serving.<deployment>.version")
    return ap


def main(argv: list[str] | None = None) -> int:
    """``python -m serving.server --repo DIR [--port 8000] [--host H] [--metrics-port P] [--follow-alias A]``:
    serve until SIGTERM/Ctrl-C."""
    args = build_parser().parse_args(argv)

    if args.follow_alias:
        args.repo.mkdir(parents=True, exist_ok=True)
    follower = None
    if args.follow_alias:
        follower = ProductionFollower(args.repo, args.model_name, args.follow_alias, args.triton_model,
                                      args.tracking_uri, args.device, deployment=args.deployment)
        try:
            v = follower.current()
            if v:
                follower.publish(v)
            else:
                print(f"no version of {args.model_name} has alias {args.follow_alias} yet; starting empty", flush=True)
        except Exception as err:  # noqa: BLE001 - the registry being down must not keep the server from starting
            print(f"[follower] initial fetch failed: {err}", file=sys.stderr, flush=True)
            v = None
    server = TritonServer(args.repo, http_port=args.port, grpc_port=args.grpc_port, log_file=args.log_file,
                          ready_timeout_s=args.ready_timeout, host=args.host, metrics_port=args.metrics_port,
                          model_control=args.model_control)
    stop = {"now": False}

    def _on_signal(signum, _frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        server.start()
    except TritonServerError as err:
        print(err, file=sys.stderr)
        return 1
    if follower is not None and v:
        with contextlib.suppress(Exception):
            follower.record(v)
        follower.served = v
    print(f"tritonserver ready: http {server.http_url}  grpc {server.grpc_url}  metrics {server.metrics_url}  "
          f"bind {server.host}  log {server.log_file}", flush=True)
    next_sync = time.monotonic() + args.poll_s
    try:
        while not stop["now"]:
            if server.exit_code() is not None:
                print(f"tritonserver exited ({server.exit_code()}):\n{server.log_tail()}", file=sys.stderr)
                return 1
            if follower is not None and time.monotonic() >= next_sync:
                next_sync = time.monotonic() + args.poll_s
                try:
                    follower.sync(server)
                except Exception as err:  # noqa: BLE001 - keep serving the current version; retry next poll
                    print(f"[follower] sync failed: {err}", file=sys.stderr, flush=True)
            time.sleep(0.5)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    from model.cli import run

    raise SystemExit(run(main))
