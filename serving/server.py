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

Usage::

    with TritonServer(repo_dir) as server:        # picks free ports, waits until ready
        request_video(server.http_url, ...)

    python -m serving.server --repo build/triton_repo [--port 8000]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
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


class TritonServer:
    """A ``tritonserver`` process serving ``repo_dir`` on 127.0.0.1; a context manager.

    Args:
        repo_dir: model repository (``<name>/config.pbtxt`` + ``<name>/1/model.py``).
        http_port / grpc_port: 0 picks a free port.
        log_file: server stdout+stderr (default: inside the server's private work dir).
        ready_timeout_s: how long ``start`` waits for ``/v2/health/ready``.
        stop_grace_s: SIGTERM first, SIGKILL after this many seconds.
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
    ) -> None:
        self.repo_dir = Path(repo_dir).resolve()
        if not self.repo_dir.is_dir():
            raise FileNotFoundError(f"model repository not found: {self.repo_dir}")
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.log_file = Path(log_file) if log_file else None
        self.ready_timeout_s = ready_timeout_s
        self.stop_grace_s = stop_grace_s
        self.log_verbose = log_verbose
        self._proc: subprocess.Popen | None = None
        self._work: Path | None = None

    @property
    def http_url(self) -> str:
        """``host:port`` of the HTTP endpoint, the form tritonclient.http expects."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint (tritonclient.grpc)."""
        return f"127.0.0.1:{self.grpc_port}"

    def _prepare_backends(self, dist: TritonDist) -> Path:
        """A private backend dir: the wheel's python backend + the stub for this Python version."""
        backends = self._work / "backends"
        shutil.copytree(dist.python_backend, backends / "python", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(dist.stub, backends / "python" / "triton_python_backend_stub")
        return backends

    def command(self, dist: TritonDist, backends: Path) -> list[str]:
        """The tritonserver command line (HTTP + gRPC on 127.0.0.1 only, metrics off)."""
        return [
            str(dist.binary),
            f"--model-repository={self.repo_dir}",
            f"--backend-directory={backends}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--allow-metrics=false",
            "--model-control-mode=none",
            "--exit-on-error=true",  # a model that fails to load stops the server: start() reports it
            "--strict-readiness=true",  # ready only once every model is ready
            f"--log-verbose={self.log_verbose}",
        ]

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


def main(argv: list[str] | None = None) -> int:
    """``python -m serving.server --repo DIR [--port 8000] [--grpc-port 8001]``: serve until Ctrl-C/SIGTERM."""
    ap = argparse.ArgumentParser(prog="python -m serving.server", description=__doc__.splitlines()[0])
    ap.add_argument("--repo", required=True, type=Path, help="Triton model repository directory")
    ap.add_argument("--port", type=int, default=8000, help="HTTP port on 127.0.0.1 (0 = pick a free one)")
    ap.add_argument("--grpc-port", type=int, default=0, help="gRPC port on 127.0.0.1 (0 = pick a free one)")
    ap.add_argument("--log-file", type=Path, default=None, help="server log (default: a temp file)")
    ap.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for readiness")
    args = ap.parse_args(argv)

    server = TritonServer(args.repo, http_port=args.port, grpc_port=args.grpc_port, log_file=args.log_file,
                          ready_timeout_s=args.ready_timeout)
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
    print(f"tritonserver ready: http {server.http_url}  grpc {server.grpc_url}  log {server.log_file}", flush=True)
    try:
        while not stop["now"]:
            if server.exit_code() is not None:
                print(f"tritonserver exited ({server.exit_code()}):\n{server.log_tail()}", file=sys.stderr)
                return 1
            time.sleep(0.5)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
