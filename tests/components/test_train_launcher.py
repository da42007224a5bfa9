"""The cluster train launcher: submit or re-attach, retries, log streaming, cancel, collect.

``FakeTrainer`` stands in for the Trainer control plane behind ``TrainerClient`` (same method names and
the SDK's error shapes: ``RuntimeError``/``TimeoutError`` wrapping ``kubernetes.client.ApiException``).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException

from components.train import launcher as L
from components.train.trainjob import ClusterSpec, job_name


@dataclass
class Step:
    name: str
    status: str
    pod_name: str


@dataclass
class Job:
    name: str
    status: str
    steps: list


@dataclass
class Event:
    event_time: str
    involved_object_kind: str
    involved_object_name: str
    reason: str
    message: str


def api_error(status):
    err = RuntimeError("Failed to call the API")
    err.__cause__ = ApiException(status=status, reason="x")
    return err


class FakeTrainer:
    """Jobs go Created -> Running -> Complete (or Failed) one wait poll at a time; rank 0 'writes' the bundle."""

    def __init__(self, out_dir: Path | None = None, polls_to_finish=2, end="Complete", faults=None):
        self.jobs: dict[str, Job] = {}
        self.calls: list[tuple] = []
        self.out_dir, self.polls_to_finish, self.end = out_dir, polls_to_finish, end
        self.faults = faults or {}  # method -> list of exceptions to raise first
        self.on_wait = None

    def _fault(self, method):
        queue = self.faults.get(method)
        if queue:
            raise queue.pop(0)

    def train(self, runtime, trainer, options):
        self._fault("train")
        name = next(o.name for o in options if type(o).__name__ == "Name")
        self.calls.append(("train", name, runtime))
        self.args = next(o.args for o in options if type(o).__name__ == "TrainerArgs")
        self.jobs[name] = Job(name, "Created", [Step("node-0", "Pending", f"{name}-node-0-0")])
        self._polls = 0
        return name

    def get_job(self, name):
        self._fault("get_job")
        if name not in self.jobs:
            raise api_error(404)
        return self.jobs[name]

    def get_job_logs(self, name, step="node-0", follow=False):
        yield from (f"step {i} loss 0.{i}" for i in range(3))

    def get_job_events(self, name):
        return [Event("t0", "Pod", f"{name}-node-0-0", "OOMKilled", "container node was OOM killed")]

    def delete_job(self, name):
        self.calls.append(("delete", name))
        self.jobs.pop(name, None)

    def wait_for_job_status(self, name, status, timeout, polling_interval):
        self.calls.append(("wait", name))
        self._fault("wait")
        if self.on_wait:
            self.on_wait()
        job = self.jobs[name]
        while job.status not in status:
            job.status, job.steps[0].status = "Running", "Running"
            self._polls += 1
            if self._polls >= self.polls_to_finish:
                job.status = self.end
                if self.end == "Complete" and self.out_dir is not None:
                    self.out_dir.mkdir(parents=True, exist_ok=True)
                    (self.out_dir / "config.json").write_text("{}")
            if job.status == "Failed":
                raise RuntimeError(f"TrainJob {name} is Failed")
        return job


def _run(tmp_path, fake, run_id="run-1", **kw):
    cluster = ClusterSpec(pvc_mount=str(tmp_path / "pvc"))
    shards = tmp_path / "in-shards"
    shards.mkdir(parents=True, exist_ok=True)
    (shards / "shard-000000.tar").write_bytes(b"x")
    fake.out_dir = tmp_path / "pvc" / "runs" / run_id / "teacher"
    return L.run_on_cluster(shards_path=str(shards), model_path=str(tmp_path / "model"), preset="small", steps=50,
                            checkpoint_every=10, cluster_json=json.dumps(cluster.to_dict()), kfp_run_id=run_id,
                            kfp_task_name="train", tracking_uri="http://mlflow:5000", client=fake, poll_s=1,
                            sleep=lambda s: None, **kw)


def test_fresh_run_submits_once_stages_shards_and_collects_the_bundle(tmp_path, capsys):
    fake = FakeTrainer()
    res = _run(tmp_path, fake)
    assert [c[0] for c in fake.calls if c[0] == "train"] == ["train"] and res["submitted"]
    assert res["name"] == job_name("run-1", "train") and res["total_steps"] == 50
    assert (tmp_path / "pvc/runs/run-1/shards/shard-000000.tar").is_file()
    assert (tmp_path / "model/config.json").is_file()


def test_fine_tune_stages_the_init_bundle_and_trains_with_init(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    fake = FakeTrainer()
    _run(tmp_path, fake, init_path=str(base))
    staged = tmp_path / "pvc/runs/run-1/init"
    assert (staged / "config.json").is_file()
    i = fake.args.index("--init")
    assert fake.args[i + 1] == str(staged)
    fake = FakeTrainer()
    _run(tmp_path / "scratch", fake)
    assert "--init" not in fake.args  # no init: random weights, as before
    with pytest.raises(FileNotFoundError, match="not a model bundle"):
        _run(tmp_path / "bad", FakeTrainer(), init_path=str(tmp_path / "missing"))


def test_retried_task_reattaches_instead_of_resubmitting(tmp_path):
    fake = FakeTrainer()
    name = job_name("run-1", "train")
    fake.jobs[name] = Job(name, "Running", [Step("node-0", "Running", f"{name}-node-0-0")])
    fake._polls = 0
    res = _run(tmp_path, fake)
    assert not res["submitted"] and not [c for c in fake.calls if c[0] == "train"]
    assert (tmp_path / "model/config.json").is_file()


def test_a_failed_job_from_an_earlier_attempt_is_deleted_and_resubmitted(tmp_path):
    fake = FakeTrainer()
    name = job_name("run-1", "train")
    fake.jobs[name] = Job(name, "Failed", [Step("node-0", "Failed", "p")])
    res = _run(tmp_path, fake)
    kinds = [c[0] for c in fake.calls]
    assert kinds.index("delete") < kinds.index("train") and res["submitted"]


def test_transient_api_errors_are_retried_and_others_are_not(tmp_path):
    fake = FakeTrainer(faults={"get_job": [api_error(503), TimeoutError("timeout to get"), api_error(429)],
                               "train": [api_error(502)], "wait": [api_error(500)]})
    assert _run(tmp_path, fake)["submitted"]
    fake = FakeTrainer(faults={"get_job": [api_error(403)]})
    with pytest.raises(RuntimeError, match="Failed to call"):
        _run(tmp_path / "b", fake)
    assert L.is_transient(api_error(503)) and not L.is_transient(api_error(404)) and L.is_not_found(api_error(404))


def test_a_failed_job_raises_with_its_events(tmp_path):
    fake = FakeTrainer(end="Failed")
    with pytest.raises(RuntimeError, match="(?s)failed.*OOMKilled"):
        _run(tmp_path, fake)


def test_cancel_deletes_the_job(tmp_path):
    assert threading.current_thread() is threading.main_thread()
    fake = FakeTrainer()
    fake.on_wait = lambda: os.kill(os.getpid(), signal.SIGTERM)  # KFP terminating the pod mid-wait
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(L.Cancelled):
        _run(tmp_path, fake)
    assert ("delete", job_name("run-1", "train")) in fake.calls and not fake.jobs
    assert signal.getsignal(signal.SIGTERM) is before  # handler restored


def test_logs_are_streamed(tmp_path):
    fake = FakeTrainer(polls_to_finish=1)
    lines = []
    req = L.plan(preset="small", steps=5, lr=0, checkpoint_every=0, stages_json="", cluster_json="",
                 kfp_run_id="r", kfp_task_name="train")
    launcher = L.TrainJobLauncher(fake, req, poll_s=1, sleep=lambda s: None, log=lines.append)
    launcher.ensure_job()
    launcher._done.set()  # one pass of the stream is enough here
    launcher._done.clear()
    t = threading.Thread(target=launcher._stream_logs)
    t.start()
    import time
    time.sleep(0.3)
    launcher._done.set()
    t.join(timeout=5)
    assert "step 2 loss 0.2" in lines and lines.count("step 0 loss 0.0") == 1  # a restarted stream does not repeat


def test_dry_run_cli_prints_the_trainjob(capsys):
    assert L.main(["--preset", "sana_wm_2b6", "--steps", "800", "--run-id", "abc"]) == 0
    import yaml

    obj = yaml.safe_load(capsys.readouterr().out)
    assert obj["kind"] == "TrainJob" and obj["metadata"]["name"] == job_name("abc", "train")
