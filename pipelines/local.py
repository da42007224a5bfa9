"""Run the ``full`` DAG on this machine: KFP local runner, MLflow on SQLite, DVC, a real Triton server.

Flow: make the root a DVC project -> create the MLflow store and one parent run -> run the DAG through
``kfp.local`` (SubprocessRunner, no venv, no network) with every step nested under the parent run ->
move each task's output artifact into the shared ``data/`` layout (the same paths as ``dvc.yaml``'s
outs) -> ``dvc commit`` those stages when the run used exactly ``params.yaml``'s values (so
``dvc status`` is clean and ``dvc repro`` has nothing to redo) -> print a per-step summary.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components.common import dvc_utils, tracking
from components.common.launch import ENV_TIMINGS_DIR
from components.common.lineage import log_dataset
from components.common.paths import PACKAGE_VERSION, DataLayout
from model import atomic

STEPS = ("ingest", "annotate", "vae", "train", "distill", "quantize", "evaluate", "register", "deploy")


@dataclass(frozen=True)
class LocalRunConfig:
    """Parameters of one local run; the defaults come from ``params.yaml`` (see ``from_params``)."""

    root: Path
    preset: str = "small"
    steps: int = 200
    lr: float = 0.0  # train.lr: peak learning rate (0 = the preset's)
    distill_ode_steps: int = 60
    distill_dmd_steps: int = 4
    distill_teacher_steps: int = 20
    num_clips: int = 8
    seed: int = 0
    clip_height: int = 64
    clip_width: int = 96
    clip_frames: int = 33
    heldout_clips: int = 2
    heldout_frames: int = 69
    holdout_kinds: str = "turn"
    vae_steps: int = 0
    vae_lr: float = 5e-4
    eval_clips: int = 2
    model_name: str = "sana-wm"
    experiment: str = "sana-wm"
    keep_serving: bool = False
    serve_device: str = "auto"  # deploy.device: auto | cpu | cuda[:i]
    serve_instances: int = 1  # deploy.instance_count
    serve_max_sessions: int = 4  # deploy.max_sessions_per_instance
    dvc: bool = True
    init: str = ""  # train.init: model bundle to fine-tune from ('' = from scratch), relative to root
    quiet: bool = True  # per-task log files + a step table instead of kfp.local's streamed JSON

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"LocalRunConfig.steps must be >= 1, got {self.steps}")
        if self.num_clips < 1:
            raise ValueError(f"LocalRunConfig.num_clips must be >= 1, got {self.num_clips}")
        if self.eval_clips < 1:
            raise ValueError(f"LocalRunConfig.eval_clips must be >= 1, got {self.eval_clips}")
        if self.heldout_clips < self.eval_clips:
            raise ValueError(f"LocalRunConfig.heldout_clips ({self.heldout_clips}) must be >= eval_clips "
                             f"({self.eval_clips}): evaluate reads only the held-out set")
        if self.heldout_frames < 2 * self.clip_frames:
            raise ValueError(f"LocalRunConfig.heldout_frames ({self.heldout_frames}) must be >= 2 x clip_frames "
                             f"({self.clip_frames}), so evaluation measures extrapolation")
        if self.serve_instances < 1 or self.serve_max_sessions < 1:
            raise ValueError(f"LocalRunConfig: need serve_instances >= 1 and serve_max_sessions >= 1, got "
                             f"{self.serve_instances}, {self.serve_max_sessions}")
        if self.vae_steps < 0 or self.vae_lr <= 0:
            raise ValueError(f"LocalRunConfig: need vae_steps >= 0 and vae_lr > 0, got {self.vae_steps}, {self.vae_lr}")

    def dvc_params(self) -> dict[str, Any]:
        """The values ``params.yaml`` must hold for this run to be recorded as the DVC stages' result."""
        return {"preset": self.preset, "train": {"steps": self.steps, "lr": self.lr},
                "vae": {"steps": self.vae_steps, "lr": self.vae_lr},
                "heldout": {"num_clips": self.heldout_clips, "frames": self.heldout_frames,
                            "holdout_kinds": self.holdout_kinds},
                "distill": {"ode_steps": self.distill_ode_steps, "dmd_steps": self.distill_dmd_steps,
                            "teacher_steps": self.distill_teacher_steps},
                "ingest": {"num_clips": self.num_clips, "seed": self.seed, "height": self.clip_height,
                           "width": self.clip_width, "frames": self.clip_frames},
                "evaluate": {"num_clips": self.eval_clips}, "register": {"model_name": self.model_name},
                "deploy": {"device": self.serve_device, "instance_count": self.serve_instances,
                           "max_sessions_per_instance": self.serve_max_sessions},
                "train.init": self.init}


def read_params(root: Path) -> dict[str, Any]:
    """``params.yaml`` of ``root`` as a dict ({} when absent)."""
    import yaml

    path = root / "params.yaml"
    if not path.exists():
        return {}
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def config_from_params(root: Path, **overrides: Any) -> LocalRunConfig:
    """``LocalRunConfig`` from ``root/params.yaml`` with non-None ``overrides`` on top."""
    p = read_params(root)
    base = dict(root=root, preset=p.get("preset", "small"),
                steps=p.get("train", {}).get("steps", 200), init=p.get("train", {}).get("init", "") or "",
                lr=float(p.get("train", {}).get("lr", 0.0) or 0.0),
                distill_ode_steps=p.get("distill", {}).get("ode_steps", 60),
                distill_dmd_steps=p.get("distill", {}).get("dmd_steps", 4),
                distill_teacher_steps=p.get("distill", {}).get("teacher_steps", 20),
                num_clips=p.get("ingest", {}).get("num_clips", 8), seed=p.get("ingest", {}).get("seed", 0),
                clip_height=p.get("ingest", {}).get("height", 64), clip_width=p.get("ingest", {}).get("width", 96),
                clip_frames=p.get("ingest", {}).get("frames", 33),
                heldout_clips=p.get("heldout", {}).get("num_clips", 2),
                heldout_frames=p.get("heldout", {}).get("frames", 69),
                holdout_kinds=p.get("heldout", {}).get("holdout_kinds", "turn"),
                vae_steps=p.get("vae", {}).get("steps", 0), vae_lr=p.get("vae", {}).get("lr", 5e-4),
                eval_clips=p.get("evaluate", {}).get("num_clips", 2),
                model_name=p.get("register", {}).get("model_name", "sana-wm"),
                serve_device=str(p.get("deploy", {}).get("device", "auto")),
                serve_instances=p.get("deploy", {}).get("instance_count", 1),
                serve_max_sessions=p.get("deploy", {}).get("max_sessions_per_instance", 4))
    base.update({k: v for k, v in overrides.items() if v is not None})
    return LocalRunConfig(**base)


def _init_path(cfg: LocalRunConfig) -> str:
    """Absolute path of ``cfg.init`` ('' = none); a clear error when the bundle is missing."""
    if not cfg.init:
        return ""
    p = Path(cfg.init)
    p = p if p.is_absolute() else cfg.root / p
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"train.init {cfg.init!r}: no model bundle (config.json) at {p}; "
                                "regenerate it with `make pretrain` or set train.init: '' in params.yaml")
    return str(p.resolve())


def _matches_params(cfg: LocalRunConfig, params: dict[str, Any]) -> list[str]:
    """Names of the params where the run differs from ``params.yaml`` (empty = identical)."""
    diffs = []
    for key, want in cfg.dvc_params().items():
        if "." in key:  # a nested key that shares its section with others (train.init beside train.steps)
            sec, sub = key.split(".", 1)
            if ((params.get(sec) or {}).get(sub) or "") != want:
                diffs.append(key)
            continue
        have = params.get(key)
        if isinstance(want, dict):
            diffs += [f"{key}.{k}" for k, v in want.items() if (have or {}).get(k) != v]
        elif have != want:
            diffs.append(key)
    return diffs


# Steps whose output comes from a KFP task of another name: annotate fans out into plan / group / merge
# tasks (pipelines/dags.py) and its shards are the merge task's output; the held-out split runs the same
# components a second time, which KFP names "ingest-2" and (the one-task batch form) "annotate".
_TASK_FOLDER = {"annotate": "annotate-merge", "ingest-heldout": "ingest-2", "annotate-heldout": "annotate"}


# step -> (output name, destination in the layout)
def _publish_map(layout: DataLayout) -> dict[str, list[tuple[str, Path]]]:
    return {
        "ingest": [("raw", layout.raw)],
        "annotate": [("shards", layout.shards)],
        "ingest-heldout": [("raw", layout.heldout_raw)],
        "annotate-heldout": [("shards", layout.heldout)],
        "vae": [("vae", layout.vae)],
        "train": [("model", layout.teacher)],
        "distill": [("student", layout.student)],
        "quantize": [("quantized", layout.quantized)],
        "evaluate": [("report", layout.eval)],
        "register": [("registration", layout.registry / "registration.json")],
        "deploy": [("triton_repo", layout.triton), ("outputs", layout.outputs)],
    }


class PipelineRunError(RuntimeError):
    """A local run failed; ``result`` holds what ran (timings) for the summary table."""

    def __init__(self, message: str, result: LocalRunResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class LocalRunResult:
    """What a local run produced: per-step timings, where outputs went, the MLflow parent run."""

    run_dir: Path
    parent_run_id: str | None
    tracking_uri: str
    timings: dict[str, dict[str, Any]] = field(default_factory=dict)
    published: dict[str, str] = field(default_factory=dict)
    dvc_committed: bool = False
    dvc_note: str = ""
    wall_s: float = 0.0
    log_dir: Path | None = None  # per-task logs (kfp.local's executor JSON and each task's output)


def run_local(cfg: LocalRunConfig) -> LocalRunResult:
    """Run the full DAG locally (see the module docstring); raises if any step fails."""
    from kfp import local

    from pipelines.dags import PipelineMeta, build_pipeline

    root = cfg.root.resolve()
    layout = DataLayout(root)
    layout.data.mkdir(parents=True, exist_ok=True)
    if cfg.dvc:
        dvc_utils.ensure_dvc_repo(root)
    uri = os.environ.get(tracking.ENV_TRACKING_URI) or layout.mlflow_uri
    tracking.init_store(uri)  # migrate once here; the steps then only read/write rows
    parent = tracking.MLflowLogger.create(
        f"local-{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}", cfg.experiment, uri,
        tags={"sana_wm.runner": "kfp-local", "sana_wm.version": PACKAGE_VERSION})
    parent.log_params({k: v for k, v in asdict(cfg).items() if k != "root"})
    timings_dir = layout.data / "kfp" / f".timings-{parent.run_id}"
    started = time.perf_counter()
    result = LocalRunResult(run_dir=layout.kfp_root, parent_run_id=parent.run_id, tracking_uri=uri,
                            log_dir=layout.kfp_root / f"logs-{parent.run_id}")
    pipeline = build_pipeline("full", cluster=None, meta=PipelineMeta())
    # kfp.local's subprocesses inherit this process's environment: the timings folder travels that way.
    old_env = os.environ.get(ENV_TIMINGS_DIR)
    os.environ[ENV_TIMINGS_DIR] = str(timings_dir)
    try:
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(layout.kfp_root))
        before = set(layout.kfp_root.glob("sana-wm-full-*"))
        from pipelines.console import quiet_kfp

        print(f"per-task logs (kfp executor JSON, full step output): {result.log_dir}", flush=True)
        with quiet_kfp(result.log_dir) if cfg.quiet else nullcontext():
            pipeline(num_clips=cfg.num_clips, seed=cfg.seed, clip_height=cfg.clip_height, clip_width=cfg.clip_width,
                     clip_frames=cfg.clip_frames, heldout_clips=cfg.heldout_clips, heldout_frames=cfg.heldout_frames,
                     holdout_kinds=cfg.holdout_kinds, preset=cfg.preset, steps=cfg.steps, lr=cfg.lr, vae_steps=cfg.vae_steps,
                     vae_lr=cfg.vae_lr, vae_cache_dir=str(layout.vae_cache), init_bundle=_init_path(cfg),
                     distill_ode_steps=cfg.distill_ode_steps, distill_dmd_steps=cfg.distill_dmd_steps,
                     distill_teacher_steps=cfg.distill_teacher_steps,
                     model_name=cfg.model_name, eval_clips=cfg.eval_clips, keep_serving=cfg.keep_serving,
                     serve_device=cfg.serve_device, serve_instances=cfg.serve_instances,
                     serve_max_sessions=cfg.serve_max_sessions,
                     tracking_uri=uri, parent_run_id=parent.run_id, experiment=cfg.experiment)
        new = sorted(set(layout.kfp_root.glob("sana-wm-full-*")) - before)
        if not new:
            raise RuntimeError(f"kfp.local finished but wrote no run folder under {layout.kfp_root}")
        result.run_dir = new[-1]
        result.published = publish(result.run_dir, layout)
        # The Triton repository names its bundle by absolute path: re-point it at the published copy.
        from serving.triton_repo import build_repository

        build_repository(layout.outputs / "bundle", layout.triton, device=cfg.serve_device,
                         instance_count=cfg.serve_instances, max_sessions=cfg.serve_max_sessions)
        log_dataset(parent, layout.raw, "raw", context="ingest")
        log_dataset(parent, layout.shards, "shards", context="training")
        log_dataset(parent, layout.heldout, "heldout", context="evaluation")
        for name in ("video.mp4", "contact_sheet.png"):
            if (layout.outputs / name).exists():
                parent.log_artifact(layout.outputs / name, "outputs")
    except Exception as e:
        result.timings = _read_timings(timings_dir)
        result.wall_s = time.perf_counter() - started
        parent.close("FAILED")
        raise PipelineRunError(f"local pipeline run failed: {e}", result) from e
    finally:
        if old_env is None:
            os.environ.pop(ENV_TIMINGS_DIR, None)
        else:
            os.environ[ENV_TIMINGS_DIR] = old_env
    result.timings = _read_timings(timings_dir)
    result.wall_s = time.perf_counter() - started
    parent.log_metrics({f"wall_s.{k}": v["seconds"] for k, v in result.timings.items()} | {"wall_s.total": result.wall_s})
    if cfg.dvc and (root / "dvc.yaml").exists():
        diffs = _matches_params(cfg, read_params(root))
        if diffs:
            result.dvc_note = (f"not recorded in dvc.lock: this run's {', '.join(diffs)} differ from params.yaml "
                               "(edit params.yaml and run again, or `dvc repro`)")
        else:
            dvc_utils.commit_stages(root)
            result.dvc_committed = True
            result.dvc_note = "outputs committed to dvc.lock and the DVC cache (`dvc push` uploads them)"
    parent.close("FINISHED")
    return result


def publish(run_dir: Path, layout: DataLayout) -> dict[str, str]:
    """Move each task's output artifact from the KFP run folder into the ``data/`` layout."""
    out = {}
    for task, items in _publish_map(layout).items():
        for name, dst in items:
            src = run_dir / _TASK_FOLDER.get(task, task) / name
            if not src.exists():
                raise FileNotFoundError(f"task {task!r} did not write its output {name!r} at {src}")
            atomic.move_tree(src, dst)
            out[f"{task}.{name}"] = str(dst)
    return out


def busy_seconds(spans: list[tuple[float, float]]) -> float:
    """Length of the union of ``spans`` [(start, end), ...] in seconds.

    A step's tasks need not run back to back (the held-out annotate task runs after quantize), so the span
    from the first start to the last end would count the steps in between; overlapping tasks count once.
    """
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def _read_timings(folder: Path) -> dict[str, dict[str, Any]]:
    import json

    got: dict[str, dict[str, Any]] = {}
    for step in STEPS:
        parts = [json.loads(p.read_text()) for p in sorted(folder.glob(f"{step}.*.json"))]
        if parts:  # time any of the step's tasks ran; FAILED if any task failed
            status = "FAILED" if any(p["status"] != "SUCCESS" for p in parts) else "SUCCESS"
            got[step] = {"step": step, "seconds": busy_seconds([(p["start"], p["end"]) for p in parts]),
                         "status": status, "tasks": len(parts)}
    return got


def format_summary(result: LocalRunResult, layout: DataLayout) -> str:
    """The end-of-run table (step, status, wall time, output) and where to look next."""
    lines = [f"{'step':<10} {'status':<8} {'wall s':>8}  output", "-" * 78]
    outputs = {k.split(".")[0]: v for k, v in result.published.items()}
    for step in STEPS:
        t = result.timings.get(step)
        status = t["status"] if t else "NOT RUN"
        secs = f"{t['seconds']:8.1f}" if t else f"{'-':>8}"
        lines.append(f"{step:<10} {status:<8} {secs}  {outputs.get(step, '')}")
    lines.append("-" * 78)
    lines.append(f"total wall time {result.wall_s:.1f} s; KFP run folder {result.run_dir}")
    if result.dvc_note:
        lines.append(f"DVC: {result.dvc_note}")
    if result.log_dir is not None:
        lines.append(f"per-task logs: {result.log_dir}/<task>.log")
    db = result.tracking_uri
    lines.append(f"MLflow UI:  mlflow ui --backend-store-uri {db}"
                 + (f" --default-artifact-root {layout.mlflow_artifacts}" if db.startswith("sqlite") else ""))
    lines.append(f"parent run: {result.parent_run_id}")
    for name in ("video.mp4", "contact_sheet.png"):
        lines.append(f"{name:<18} {layout.outputs / name}")
    return "\n".join(lines)
