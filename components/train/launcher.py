"""Run-time side of the cluster train step: submit (or re-attach to) the TrainJob, follow it, collect.

The KFP train task in cluster form is a *launcher*: a small CPU pod (no GPU) that

1. builds the ``TrainConfig`` from the run's parameters and the TrainJob request
   (``components.train.trainjob``), named after (KFP run id, task name);
2. stages the shards on the shared PVC under ``<pvc>/runs/<run id>/``;
3. looks the job up: absent -> submit; running/created -> re-attach (a retried task never submits a
   second 64-GPU job); complete -> collect; failed -> delete and resubmit (the trainer resumes from the
   run's own checkpoints);
4. streams node-0's log into the task log, waits with ``TrainerClient.wait_for_job_status``, retrying
   transient API errors (timeouts, 5xx, 429, dropped connections) with capped exponential backoff;
5. on SIGTERM (the run was cancelled in KFP) deletes the job before exiting;
6. copies the bundle rank 0 wrote into the task's output artifact.

Everything talks to the cluster through ``kubeflow.trainer.TrainerClient`` (any object with its
``train / get_job / get_job_logs / wait_for_job_status / delete_job / get_job_events`` methods works,
which is how the tests drive it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from components.train.trainjob import (
    ClusterSpec,
    TrainJobRequest,
    build_request,
    job_name,
    run_paths,
    train_config_from_params,
)

COMPLETE, FAILED, RUNNING, CREATED = "Complete", "Failed", "Running", "Created"
TRANSIENT_HTTP = frozenset({408, 429, 500, 502, 503, 504})


class Cancelled(Exception):
    """The launcher got SIGTERM/SIGINT (KFP cancels a run by terminating its pods)."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of the first ``kubernetes.client.ApiException`` in ``exc``'s cause chain."""
    for e in _chain(exc):
        status = getattr(e, "status", None)
        if type(e).__name__ == "ApiException" and isinstance(status, int):
            return status
    return None


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: API timeouts, 408/429/5xx, dropped or refused connections (the SDK wraps them all
    in ``RuntimeError``/``TimeoutError``, so the cause chain is what tells)."""
    import multiprocessing

    status = http_status(exc)
    if status is not None:
        return status in TRANSIENT_HTTP
    for e in _chain(exc):
        if isinstance(e, (TimeoutError, multiprocessing.TimeoutError, ConnectionError)):
            return True
        if type(e).__module__.startswith("urllib3") and type(e).__name__ in (
                "MaxRetryError", "ProtocolError", "NewConnectionError", "ReadTimeoutError", "ConnectTimeoutError"):
            return True
    return False


def is_not_found(exc: BaseException) -> bool:
    return http_status(exc) == 404


def with_retries(fn: Callable[[], Any], what: str, *, attempts: int = 8, base_s: float = 2.0, max_s: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep, log: Callable[[str], None] = print) -> Any:
    """``fn()``, retried on transient errors with exponential backoff (2, 4, ... <= ``max_s`` seconds)."""
    for i in range(attempts):
        try:
            return fn()
        except Cancelled:
            raise
        except Exception as e:
            if not is_transient(e) or i == attempts - 1:
                raise
            delay = min(max_s, base_s * 2 ** i)
            log(f"[launcher] {what}: transient error ({type(e).__name__}: {e}); retry {i + 1}/{attempts - 1} "
                f"in {delay:.0f} s")
            sleep(delay)
    raise AssertionError("unreachable")


class TrainJobLauncher:
    """Submit-or-attach, follow, collect one TrainJob (see the module docstring).

    Args:
        client: a ``TrainerClient`` for the job's namespace.
        request: from ``trainjob.build_request``.
        timeout_s: how long to wait for ``Complete`` in total.
        poll_s: status polling interval (also the log-stream restart delay).
    """

    def __init__(self, client: Any, request: TrainJobRequest, *, timeout_s: float = 20 * 86400, poll_s: int = 30,
                 sleep: Callable[[float], None] = time.sleep, log: Callable[[str], None] = print) -> None:
        self.client, self.request = client, request
        self.name = request.name
        self.timeout_s, self.poll_s = timeout_s, poll_s
        self.sleep, self.log = sleep, log
        self.submitted = False  # this launcher created the job (vs re-attached)
        self._done = threading.Event()

    def _retry(self, fn: Callable[[], Any], what: str) -> Any:
        return with_retries(fn, what, sleep=self.sleep, log=self.log)

    def status(self) -> str | None:
        """The job's status, or None when no job of that name exists."""
        def get():
            try:
                return self.client.get_job(self.name).status
            except Exception as e:
                if is_not_found(e):
                    return None
                raise
        return self._retry(get, f"get TrainJob {self.name}")

    def submit(self) -> None:
        r = self.request
        def create():
            try:
                return self.client.train(runtime=r.runtime, trainer=r.trainer, options=r.options)
            except Exception as e:
                if http_status(e) == 409:  # an earlier attempt's create went through after all
                    return self.name
                raise
        name = self._retry(create, f"create TrainJob {self.name}")
        if name != self.name:
            raise RuntimeError(f"TrainerClient created {name!r}, expected {self.name!r}")
        self.submitted = True
        self.log(f"[launcher] submitted TrainJob {r.namespace}/{self.name}: {r.config.total_steps} steps in "
                 f"{len(r.config.stages)} stage(s), outputs under {r.paths.run_dir}")

    def delete(self) -> None:
        def rm():
            try:
                self.client.delete_job(self.name)
            except Exception as e:
                if not is_not_found(e):
                    raise
        self._retry(rm, f"delete TrainJob {self.name}")

    def _wait_gone(self, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while self.status() is not None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"TrainJob {self.name} still exists {timeout_s:.0f} s after delete")
            self.sleep(min(self.poll_s, 5))

    def ensure_job(self) -> str | None:
        """Submit, re-attach or resubmit; returns the status found (None = there was no job)."""
        found = self.status()
        if found is None:
            self.submit()
        elif found == FAILED:
            self.log(f"[launcher] TrainJob {self.name} failed in an earlier attempt: deleting and resubmitting "
                     f"(the trainer resumes from {self.request.paths.ckpt})")
            self.delete()
            self._wait_gone()
            self.submit()
        else:
            self.log(f"[launcher] re-attaching to TrainJob {self.name} (status {found})")
        return found

    def _stream_logs(self) -> None:
        """Follow node-0's log; restart the stream when it ends (pod not started yet, restarted, API hiccup)."""
        printed: dict[str, int] = {}
        while not self._done.is_set():
            try:
                pod = next((s.pod_name for s in self.client.get_job(self.name).steps if s.name == "node-0"), None)
                if pod:
                    n = 0
                    for line in self.client.get_job_logs(self.name, step="node-0", follow=True):
                        if self._done.is_set():
                            return
                        n += 1
                        if n > printed.get(pod, 0):  # a restarted stream replays from the start
                            self.log(line.rstrip("\n"))
                            printed[pod] = n
            except Exception as e:  # noqa: BLE001 - logs are best effort; status decides success
                if not is_transient(e) and not is_not_found(e):
                    self.log(f"[launcher] log stream: {type(e).__name__}: {e}")
            self._done.wait(self.poll_s)

    def wait(self) -> Any:
        """Block until Complete (``TrainerClient.wait_for_job_status``); raise with the job's events on Failed.

        The SDK wraps a failed API call in ``RuntimeError``/``TimeoutError``; transient ones re-enter the
        wait with the time left, and only the overall deadline ends it.
        """
        deadline = time.monotonic() + self.timeout_s
        while True:
            remaining = int(deadline - time.monotonic())
            if remaining <= self.poll_s:
                raise TimeoutError(f"TrainJob {self.name} did not complete within {self.timeout_s:.0f} s")
            try:
                return self.client.wait_for_job_status(self.name, status={COMPLETE}, timeout=remaining,
                                                       polling_interval=self.poll_s)
            except Cancelled:
                raise
            except Exception as e:
                if str(e) == f"TrainJob {self.name} is Failed":  # the SDK's message for a Failed job
                    raise RuntimeError(f"TrainJob {self.request.namespace}/{self.name} failed; events:\n"
                                       f"{self._events()}") from e
                if not is_transient(e):
                    raise
                self.log(f"[launcher] waiting on {self.name}: transient error ({type(e).__name__}: {e}); continuing")
                self.sleep(min(self.poll_s, max(0, deadline - time.monotonic())))

    def _events(self) -> str:
        with contextlib.suppress(Exception):
            return "\n".join(f"  {ev.event_time} {ev.involved_object_kind}/{ev.involved_object_name}: "
                             f"{ev.reason} {ev.message}" for ev in self.client.get_job_events(self.name)[-20:])
        return "  (no events)"

    def run(self) -> Any:
        """The whole launcher life cycle; returns the final TrainJob. Deletes the job on cancel."""
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

        def on_signal(signum, _frame):
            raise Cancelled(f"signal {signum}")

        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            for s in previous:
                signal.signal(s, on_signal)
        streamer = threading.Thread(target=self._stream_logs, name="trainjob-logs", daemon=True)
        try:
            self.ensure_job()
            streamer.start()
            job = self.wait()
            self.log(f"[launcher] TrainJob {self.name} complete")
            return job
        except Cancelled:
            self.log(f"[launcher] cancelled: deleting TrainJob {self.name}")
            self.delete()
            raise
        finally:
            self._done.set()
            if streamer.is_alive():  # the pods have ended, so a following stream ends soon
                streamer.join(timeout=10)
            if in_main:
                for s, h in previous.items():
                    signal.signal(s, h)


def tracking_env(tracking_uri: str = "", parent_run_id: str = "", experiment: str = "") -> dict[str, str]:
    """MLflow settings for the trainer pods: the task's parameters, else what the task's env holds
    (the tracking ConfigMap injects ``MLFLOW_TRACKING_URI`` into every KFP task)."""
    from components.common.tracking import ENV_EXPERIMENT, ENV_PARENT_RUN, ENV_TRACKING_URI

    env = {ENV_TRACKING_URI: tracking_uri or os.environ.get(ENV_TRACKING_URI, ""),
           ENV_PARENT_RUN: parent_run_id or os.environ.get(ENV_PARENT_RUN, ""),
           ENV_EXPERIMENT: experiment or os.environ.get(ENV_EXPERIMENT, "")}
    return {k: v for k, v in env.items() if v}


def plan(*, preset: str, steps: int, lr: float, checkpoint_every: int, stages_json: str, cluster_json: str,
         kfp_run_id: str, kfp_task_name: str, tracking: dict[str, str] | None = None,
         init: bool = False) -> TrainJobRequest:
    """The TrainJob request for one KFP train task (pure: what ``run_on_cluster`` would submit)."""
    import json

    cluster = ClusterSpec.from_dict(json.loads(cluster_json)) if cluster_json else ClusterSpec()
    cfg = train_config_from_params(preset, steps, lr, checkpoint_every, stages_json, zero_stage=cluster.zero_stage)
    return build_request(cfg, cluster, name=job_name(kfp_run_id, kfp_task_name), paths=run_paths(cluster, kfp_run_id),
                         tracking=tracking, labels={"sana-wm/kfp-run-id": kfp_run_id, "sana-wm/kfp-task": kfp_task_name},
                         init=init)


def default_client(namespace: str) -> Any:
    """A ``TrainerClient`` for ``namespace`` (in-cluster config inside a pod, else the kubeconfig)."""
    from kubeflow.common.types import KubernetesBackendConfig
    from kubeflow.trainer import TrainerClient

    return TrainerClient(KubernetesBackendConfig(namespace=namespace))


def run_on_cluster(*, shards_path: str, model_path: str, preset: str, steps: int, vae_path: str = "", lr: float = 0.0,
                   checkpoint_every: int = 0, stages_json: str = "", cluster_json: str = "", kfp_run_id: str,
                   kfp_task_name: str, tracking_uri: str = "", parent_run_id: str = "", experiment: str = "",
                   init_path: str = "", client: Any | None = None, poll_s: int = 30, timeout_s: float = 20 * 86400,
                   sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """The cluster train task: plan, stage shards, run the TrainJob to completion, copy the bundle out.

    ``init_path``: a model bundle to fine-tune (a base or an imported release); it is staged on the PVC
    beside the shards and the job trains with ``--init``. Returns ``{"name", "namespace", "run_dir",
    "submitted", "total_steps"}``.
    """
    if init_path and not (Path(init_path) / "config.json").is_file():
        raise FileNotFoundError(f"init bundle {init_path!r} has no config.json: not a model bundle")
    req = plan(preset=preset, steps=steps, lr=lr, checkpoint_every=checkpoint_every, stages_json=stages_json,
               cluster_json=cluster_json, kfp_run_id=kfp_run_id, kfp_task_name=kfp_task_name,
               tracking=tracking_env(tracking_uri, parent_run_id, experiment), init=bool(init_path))
    if os.path.abspath(shards_path) != os.path.abspath(req.paths.shards):
        # Idempotent: a retried task copies onto the same per-run folder.
        shutil.copytree(shards_path, req.paths.shards, dirs_exist_ok=True)
    if vae_path and os.path.abspath(vae_path) != os.path.abspath(req.paths.vae):
        shutil.copytree(vae_path, req.paths.vae, dirs_exist_ok=True)  # the vae step's fit, for --vae
    if init_path and os.path.abspath(init_path) != os.path.abspath(req.paths.init):
        shutil.copytree(init_path, req.paths.init, dirs_exist_ok=True)
    launcher = TrainJobLauncher(client if client is not None else default_client(req.namespace), req,
                                poll_s=poll_s, timeout_s=timeout_s, sleep=sleep)
    launcher.run()
    out = Path(req.paths.out)
    if not (out / "config.json").is_file():
        raise FileNotFoundError(f"TrainJob {req.name} completed but wrote no bundle at {out} (config.json missing)")
    shutil.copytree(out, model_path, dirs_exist_ok=True)
    return {"name": req.name, "namespace": req.namespace, "run_dir": req.paths.run_dir,
            "submitted": launcher.submitted, "total_steps": req.config.total_steps}


def main(argv: list[str] | None = None) -> int:
    """``python -m components.train.launcher --preset P --steps N [...] --run-id ID``: print the TrainJob
    this task would submit (YAML), without a cluster. The pipeline calls ``run_on_cluster`` instead."""
    import argparse

    import yaml

    from components.train.trainjob import render_trainjob

    ap = argparse.ArgumentParser(prog="python -m components.train.launcher", description=main.__doc__)
    ap.add_argument("--preset", default="sana_wm_2b6")
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--lr", type=float, default=0.0)
    ap.add_argument("--checkpoint-every", type=int, default=0)
    ap.add_argument("--stages-json", default="")
    ap.add_argument("--cluster-json", default="", help="ClusterSpec as JSON (default: ClusterSpec())")
    ap.add_argument("--run-id", default="dry-run")
    ap.add_argument("--task-name", default="train")
    a = ap.parse_args(argv)
    req = plan(preset=a.preset, steps=a.steps, lr=a.lr, checkpoint_every=a.checkpoint_every,
               stages_json=a.stages_json, cluster_json=a.cluster_json, kfp_run_id=a.run_id,
               kfp_task_name=a.task_name, tracking=tracking_env())
    yaml.safe_dump(render_trainjob(req), sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    from model.cli import run

    sys.exit(run(main))
