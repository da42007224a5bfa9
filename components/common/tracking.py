"""Experiment tracking behind a no-op logger; MLflow is one implementation (torchtitan's BaseLogger habit).

Library code takes a ``Logger`` and never checks whether tracking is on. ``get_logger`` decides:

* ``RANK`` set and not ``0``            -> no-op (only rank 0 logs under torchrun/DeepSpeed);
* ``enabled=False``                     -> no-op;
* ``enabled=None`` (default)            -> MLflow iff ``MLFLOW_TRACKING_URI`` is set;
* ``enabled=True``                      -> MLflow at ``MLFLOW_TRACKING_URI`` or the embedded default,
                                           SQLite at ``data/mlflow/mlflow.db`` (artifacts beside it).

Nesting across processes: the pipeline driver opens one parent run and hands its id to each step through
``SANA_WM_PARENT_RUN_ID`` (env) or ``--parent-run-id``; each step's run carries the ``mlflow.parentRunId``
tag, which is what the MLflow UI nests on. Everything goes through an explicit ``MlflowClient`` so no
fluent-API global "active run" leaks between callers.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from components.common.paths import DataLayout, repo_root

ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
ENV_EXPERIMENT = "MLFLOW_EXPERIMENT_NAME"
ENV_PARENT_RUN = "SANA_WM_PARENT_RUN_ID"
ENV_ARTIFACT_ROOT = "SANA_WM_MLFLOW_ARTIFACTS"
DEFAULT_EXPERIMENT = "sana-wm"
PARENT_TAG = "mlflow.parentRunId"
_MAX_PARAM_CHARS = 6000  # MLflow's param value limit; longer values are truncated with a marker


class Logger:
    """No-op tracking logger. Every method accepts what the MLflow one does and does nothing.

    ``run_id`` is ``None`` for the no-op logger, so callers can pass it on without branching.
    """

    run_id: str | None = None
    tracking_uri: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log flat ``{name: value}`` params (nested dicts are flattened with ``.``)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log scalar metrics at ``step`` (loss curves use the optimizer step)."""

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Upload a file or a whole folder under ``artifact_path``."""

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Upload a matplotlib figure as ``artifact_file`` (e.g. ``plots/loss.png``)."""

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set string tags on the run."""

    def start_system_metrics(self, interval_s: float = 10.0) -> None:
        """Sample CPU/memory/GPU usage into the run every ``interval_s`` until ``close`` (long steps)."""

    def log_input(self, name: str, digest: str, source: str, context: str = "training") -> None:
        """Record a dataset this run consumed: ``digest`` is the DVC md5 of the data folder."""

    @contextlib.contextmanager
    def start_child(self, name: str) -> Iterator[Logger]:
        """A nested run under this one (a no-op logger here)."""
        yield Logger()

    def close(self, status: str = "FINISHED") -> None:
        """End the run (``FINISHED``/``FAILED``/``KILLED``)."""

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close("FAILED" if exc_type is not None else "FINISHED")


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "s": [{"n": 2}]}`` -> ``{"a.b": 1, "s.0.n": 2}`` (configs are nested dataclass
    dicts; lists of dicts, e.g. training stages, get their index; other lists become JSON strings)."""
    import json

    out: dict[str, Any] = {}
    for k, v in params.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)) and v and isinstance(v[0], Mapping):
            for i, x in enumerate(v):
                out.update(flatten(x, f"{key}.{i}."))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(list(v))
        else:
            out[key] = v
    return out


class MLflowLogger(Logger):
    """Logger writing to one MLflow run through an explicit ``MlflowClient``.

    Create with ``MLflowLogger.create(...)`` (new run) or ``MLflowLogger(client, run_id)`` (existing).
    """

    def __init__(self, client: Any, run_id: str, *, owns_run: bool = True) -> None:
        self.client = client
        self.run_id = run_id
        self.tracking_uri = client.tracking_uri
        self._owns_run = owns_run
        self._closed = False
        self._monitor = None

    def start_system_metrics(self, interval_s: float = 10.0) -> None:
        # MLflow's own monitor (system/* metrics: CPU, memory, disk, network, GPU when present).
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        if self._monitor is None:
            self._monitor = SystemMetricsMonitor(self.run_id, sampling_interval=interval_s,
                                                 tracking_uri=self.tracking_uri)
            self._monitor.start()

    @classmethod
    def create(
        cls,
        run_name: str,
        experiment: str,
        tracking_uri: str,
        parent_run_id: str | None = None,
        artifact_root: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> MLflowLogger:
        """Open a new run ``run_name`` in ``experiment`` (created with ``artifact_root`` if missing)."""
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
        exp_id = ensure_experiment(client, experiment, artifact_root)
        all_tags = dict(tags or {})
        if parent_run_id:
            # Fail early with a clear message rather than creating an orphan "child".
            try:
                client.get_run(parent_run_id)
            except Exception as e:  # MlflowException: RESOURCE_DOES_NOT_EXIST
                raise ValueError(f"parent run {parent_run_id!r} not found at {tracking_uri}: {e}") from e
            all_tags[PARENT_TAG] = parent_run_id
        run = client.create_run(exp_id, run_name=run_name, tags=all_tags)
        return cls(client, run.info.run_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten(params)
        items = [Param(k, _param_str(v)) for k, v in flat.items()]
        for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, int(step or 0)) for k, v in flatten(metrics).items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"cannot log artifact {path}: it does not exist")
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, figure, artifact_file)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_input(self, name: str, digest: str, source: str, context: str = "training") -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        ds = Dataset(name=name, digest=digest, source_type="dvc", source=source)
        self.client.log_inputs(
            self.run_id, datasets=[DatasetInput(ds, tags=[InputTag("mlflow.data.context", context)])]
        )

    @contextlib.contextmanager
    def start_child(self, name: str) -> Iterator[MLflowLogger]:
        exp_id = self.client.get_run(self.run_id).info.experiment_id
        run = self.client.create_run(exp_id, run_name=name, tags={PARENT_TAG: self.run_id})
        child = MLflowLogger(self.client, run.info.run_id)
        try:
            yield child
        except BaseException:
            child.close("FAILED")
            raise
        child.close("FINISHED")

    def close(self, status: str = "FINISHED") -> None:
        if self._monitor is not None:
            self._monitor.finish()
            self._monitor = None
        if self._owns_run and not self._closed:
            self.client.set_terminated(self.run_id, status=status)
        self._closed = True


def _param_str(v: Any) -> str:
    s = str(v)
    return s if len(s) <= _MAX_PARAM_CHARS else s[: _MAX_PARAM_CHARS - 14] + "...<truncated>"


def default_tracking_uri(root: str | os.PathLike | None = None) -> str:
    """The embedded store: ``sqlite:///<root>/data/mlflow/mlflow.db`` (root = checkout by default)."""
    return DataLayout(Path(root) if root else repo_root()).mlflow_uri


def artifact_root_for(tracking_uri: str) -> str | None:
    """Artifact location for new experiments: ``SANA_WM_MLFLOW_ARTIFACTS``, else ``artifacts/`` beside
    a SQLite file (MLflow's own default would be ``./mlruns`` of whatever the current folder is)."""
    env = os.environ.get(ENV_ARTIFACT_ROOT)
    if env:
        return Path(env).resolve().as_uri() if "://" not in env else env
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        return (db.parent / "artifacts").resolve().as_uri()
    return None  # a tracking server decides (its --artifacts-destination)


def init_store(tracking_uri: str) -> None:
    """Create/migrate the backend store once, before several processes write (they race otherwise).

    For SQLite this creates the folder and runs MLflow's schema migrations in this one process.
    """
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    from mlflow import MlflowClient

    # Constructing the SQLAlchemy store runs the migrations (what `mlflow db upgrade` does for a new DB).
    MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)


def ensure_experiment(client: Any, name: str, artifact_root: str | None = None) -> str:
    """Experiment id for ``name``, creating it (with an explicit artifact location) if missing."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    root = artifact_root or artifact_root_for(client.tracking_uri)
    try:
        return client.create_experiment(name, artifact_location=f"{root}/{name}" if root else None)
    except Exception:
        # Another process created it between our lookup and create.
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def get_logger(
    run_name: str,
    experiment: str | None = None,
    parent_run_id: str | None = None,
    enabled: bool | None = None,
    tags: Mapping[str, str] | None = None,
    tracking_uri: str | None = None,
) -> Logger:
    """The logger a step should use (see the module docstring for the decision rules).

    ``parent_run_id`` defaults to ``$SANA_WM_PARENT_RUN_ID``; ``experiment`` to
    ``$MLFLOW_EXPERIMENT_NAME`` or ``sana-wm``; ``tracking_uri`` to ``$MLFLOW_TRACKING_URI``. Use as a context manager so the run is closed with
    ``FAILED`` when the step raises.
    """
    rank = os.environ.get("RANK", "0").strip() or "0"
    if rank != "0":
        return Logger()
    uri = (tracking_uri or os.environ.get(ENV_TRACKING_URI, "")).strip()
    if enabled is None:
        enabled = bool(uri)
    if not enabled:
        return Logger()
    uri = uri or default_tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return MLflowLogger.create(
        run_name,
        experiment or os.environ.get(ENV_EXPERIMENT) or DEFAULT_EXPERIMENT,
        uri,
        parent_run_id=parent_run_id or os.environ.get(ENV_PARENT_RUN) or None,
        tags=tags,
    )


def add_tracking_args(parser: Any) -> None:
    """Add ``--tracking-uri`` / ``--experiment`` / ``--parent-run-id`` to a step's argparse parser."""
    parser.add_argument("--tracking-uri", default=None, help=f"MLflow tracking URI (default ${ENV_TRACKING_URI})")
    parser.add_argument("--experiment", default=None, help=f"MLflow experiment (default ${ENV_EXPERIMENT})")
    parser.add_argument("--parent-run-id", default=None, help=f"parent MLflow run (default ${ENV_PARENT_RUN})")


# Steps that run for minutes to days: their runs also carry system metrics (CPU, memory, GPU).
LONG_STEPS = ("vae", "train", "distill", "quantize", "evaluate")


def logger_from_args(args: Any, run_name: str) -> Logger:
    """``get_logger`` from the flags added by ``add_tracking_args`` (a given URI turns MLflow on); long
    steps (``LONG_STEPS``) sample system metrics into their run."""
    logger = get_logger(
        run_name,
        experiment=getattr(args, "experiment", None),
        parent_run_id=getattr(args, "parent_run_id", None),
        enabled=True if getattr(args, "tracking_uri", None) else None,
        tracking_uri=getattr(args, "tracking_uri", None),
    )
    if run_name in LONG_STEPS:
        logger.start_system_metrics()
    return logger
