"""The DAGs, built by factories so the same graph compiles for a cluster or runs locally.

```
data:            ingest -> annotate                      (training shards)
                 ingest-heldout -> annotate-heldout      (held-out shards)
train_to_serve:  importer(shards) -> vae -> train -> distill -> quantize -> evaluate(importer(heldout))
                 -> register -> deploy
full:            data, then vae -> train -> ... -> evaluate(held-out shards) -> register -> deploy
annotate (fan-out):  annotate-plan -> ParallelFor(groups){annotate-group} -> annotate-merge (shards)
```
The held-out split is its own artifact: ``ingest --split heldout`` renders scenes from a separate seed
stream, starts with the ``holdout_kinds`` trajectory classes (which the training ingest leaves out) and
uses clips ``heldout_frames`` long (>= 2x the training clips, so evaluation measures extrapolation).
Only ``evaluate`` reads it. ``vae`` fits the presets' video VAE on the training shards; ``train`` encodes
its latents with that VAE (``--vae``).
Annotation fans out over ``annotate_groups`` clip groups (a pipeline parameter): one task per group, at
most ``parallelism`` at once, merged back into the one shards artifact every later step reads.
``ClusterSettings`` adds the kfp-kubernetes parts and switches the train step to a launcher; ``None``
leaves the graph plain, which is what the KFP local runner wants (it would ignore the Kubernetes parts
with warnings anyway). In cluster form every task gets

* the data PVC, CPU/memory requests *and* limits, a non-root security context;
* ``MLFLOW_TRACKING_URI`` from the ``sana-wm-tracking`` ConfigMap (infra/k8s), so a run started from
  the UI with default parameters is tracked on the cluster's MLflow; a non-empty ``tracking_uri``
  parameter still wins (``components.common.launch.run_step`` sets it over the env);
* 1 GPU + the GPU node selector for distill/quantize/evaluate/deploy. The train task is a CPU-only
  *launcher* (``components.train.launcher``): at run time it builds the TrainJob from the run's
  parameters (preset, steps, lr, checkpoint cadence, stages) and the compile-time ``ClusterSpec``
  (a JSON constant in the IR), names it after the KFP run id + task name, and is retried by KFP.

Nothing here talks to a cluster.
"""

# No `from __future__ import annotations`: KFP reads the pipeline functions' annotations as real types.

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kfp import dsl, kubernetes

from components.annotate.component import annotate, annotate_group, annotate_merge, annotate_plan
from components.common.paths import PACKAGE_VERSION
from components.deploy.component import deploy
from components.distill.component import distill
from components.evaluate.component import evaluate
from components.ingest.component import ingest
from components.quantize.component import quantize
from components.register.component import register
from components.train.component import train
from components.vae.component import vae

PIPELINE_NAMES = ("data", "train_to_serve", "full")
# Tasks whose pod needs a GPU. train is not one: its GPUs are the TrainJob's, its task only launches it.
GPU_STEPS = ("vae", "distill", "quantize", "evaluate", "deploy")
TRACKING_CONFIG_MAP = "sana-wm-tracking"  # infra/k8s/base/tracking.yaml
TRACKING_ENV = "MLFLOW_TRACKING_URI"


@dataclass(frozen=True)
class ClusterSettings:
    """Kubernetes placement for the cluster form of the DAG.

    ``train_cluster`` is the TrainJob placement (``components.train.trainjob.ClusterSpec.to_dict()``;
    ``pipelines.cluster.default_settings`` fills it); the TrainJob itself is built at run time.
    ``launcher_*`` size the train task's own pod, which only submits and follows the job.
    """

    gpus_per_step: int = 1
    gpu_resource: str = "nvidia.com/gpu"
    node_selector: tuple[str, str] = ("nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3")
    pvc_name: str = "sana-wm-data"
    pvc_mount: str = "/data"
    cpu_request: str = "4"
    memory_request: str = "32G"
    cpu_limit: str = "16"
    memory_limit: str = "64G"
    launcher_cpu: str = "500m"
    launcher_memory: str = "1G"
    launcher_retries: int = 3
    train_cluster: dict[str, Any] = field(default_factory=dict)
    tracking_config_map: str = TRACKING_CONFIG_MAP
    run_as_user: int = 10001  # the images' unprivileged user (infra/images/Containerfile.base)
    annotate_parallelism: int = 16
    annotate_workers: int = 4

    def __post_init__(self) -> None:
        if self.gpus_per_step < 1:
            raise ValueError(f"ClusterSettings.gpus_per_step must be >= 1, got {self.gpus_per_step}")
        if self.annotate_parallelism < 1 or self.annotate_workers < 1:
            raise ValueError(f"ClusterSettings.annotate_parallelism/annotate_workers must be >= 1, got "
                             f"{self.annotate_parallelism}/{self.annotate_workers}")
        if not self.pvc_mount.startswith("/"):
            raise ValueError(f"ClusterSettings.pvc_mount must be absolute, got {self.pvc_mount!r}")


@dataclass(frozen=True)
class PipelineMeta:
    """Version stamp carried by every compiled pipeline (name suffix + description)."""

    version: str = PACKAGE_VERSION
    git_sha: str = "unknown"

    @property
    def stamp(self) -> str:
        return f"v{self.version}+g{self.git_sha}"


def _place(task: dsl.PipelineTask, step: str, cluster: ClusterSettings | None) -> dsl.PipelineTask:
    """Give a task its display name and, in cluster form, its GPU/node/PVC settings."""
    task.set_display_name(step)
    if step in ("register", "deploy"):
        task.set_caching_options(False)  # side effects on the registry/server must always happen
    if cluster is None:
        return task
    if step == "train":  # the launcher: a small CPU pod, retried (a retry re-attaches to the same TrainJob)
        task.set_cpu_request(cluster.launcher_cpu).set_memory_request(cluster.launcher_memory)
        task.set_cpu_limit("2").set_memory_limit("4G")
        task.set_retry(num_retries=cluster.launcher_retries, backoff_duration="60s", backoff_factor=2)
    else:
        task.set_cpu_request(cluster.cpu_request).set_memory_request(cluster.memory_request)
        task.set_cpu_limit(cluster.cpu_limit).set_memory_limit(cluster.memory_limit)
    kubernetes.mount_pvc(task, pvc_name=cluster.pvc_name, mount_path=cluster.pvc_mount)
    kubernetes.use_config_map_as_env(task, cluster.tracking_config_map, {TRACKING_ENV: TRACKING_ENV})
    kubernetes.set_security_context(task, run_as_user=cluster.run_as_user, run_as_group=cluster.run_as_user,
                                    run_as_non_root=True)
    if step in GPU_STEPS:
        task.set_accelerator_type(cluster.gpu_resource).set_accelerator_limit(cluster.gpus_per_step)
        kubernetes.add_node_selector(task, cluster.node_selector[0], cluster.node_selector[1])
    return task


# Local form: 2 groups x 1 worker keeps a small machine busy without oversubscribing it.
LOCAL_ANNOTATE_PARALLELISM = 2
LOCAL_ANNOTATE_WORKERS = 1


def _data_tasks(num_clips, seed, source_dir, clip_hw_frames, groups, heldout, tracking, cluster):
    """ingest -> annotate-plan -> ParallelFor(annotate-group) -> annotate-merge, and the held-out split
    ingest-heldout -> annotate-heldout. Returns (merge task, held-out annotate task): the merge task's
    ``shards`` are what training reads, the held-out task's ``shards`` what evaluate reads."""
    h, w, n = clip_hw_frames
    heldout_clips, heldout_frames, holdout_kinds = heldout
    ing = _place(ingest(num_clips=num_clips, seed=seed, source_dir=source_dir, height=h, width=w, frames=n,
                        split="train", holdout_kinds=holdout_kinds, **tracking), "ingest", cluster)
    # The held-out split is always synthetic (known ground-truth trajectories); with a real --source the
    # training clips are real and the held-out ones still measure camera following against exact poses.
    ing_h = _place(ingest(num_clips=heldout_clips, seed=seed, source_dir="", height=h, width=w, frames=heldout_frames,
                          split="heldout", holdout_kinds=holdout_kinds, **tracking), "ingest-heldout", cluster)
    ann_h = _place(annotate(raw=ing_h.outputs["raw"], **tracking), "annotate-heldout", cluster)
    plan = _place(annotate_plan(raw=ing.outputs["raw"], groups=groups, **tracking), "annotate-plan", cluster)
    parallelism = cluster.annotate_parallelism if cluster else LOCAL_ANNOTATE_PARALLELISM
    workers = cluster.annotate_workers if cluster else LOCAL_ANNOTATE_WORKERS
    with dsl.ParallelFor(plan.outputs["Output"], parallelism=parallelism) as group_ids:
        grp = _place(annotate_group(raw=ing.outputs["raw"], ids=group_ids, workers=workers, **tracking),
                     "annotate-group", cluster)
    merge = annotate_merge(parts=dsl.Collected(grp.outputs["shards"]), **tracking)
    return _place(merge, "annotate", cluster), ann_h


def _train_to_serve_tasks(shards, heldout, train_params, vae_fit, distill_steps, model_name, eval_clips,
                          serving, tracking, cluster, init_bundle=""):
    """vae -> train -> distill -> quantize -> evaluate -> register -> deploy; ``serving`` is the deploy step's
    (keep_serving, device, instance_count, max_sessions_per_instance). Returns the deploy task."""
    vae_steps, vae_lr, vae_cache = vae_fit
    # init_bundle: fine-tune a base/released bundle; the vae step then passes that bundle's VAE through
    # (the network was trained on its latents) and train loads network + VAE strictly from it.
    vf = _place(vae(shards=shards, preset=train_params["preset"], steps=vae_steps, lr=vae_lr, cache_dir=vae_cache,
                    init_bundle=init_bundle, **tracking), "vae", cluster)
    train_params = dict(train_params, vae=vf.outputs["vae"], init=init_bundle)
    if cluster is not None:
        if not cluster.train_cluster:
            raise ValueError("ClusterSettings.train_cluster is empty; build settings with "
                             "pipelines.cluster.default_settings()")
        # Run id and task name are KFP placeholders, resolved per run: the job name and output folder.
        tr = train(shards=shards, **train_params, cluster=True,
                   cluster_spec=json.dumps(cluster.train_cluster, sort_keys=True),
                   kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, kfp_task_name=dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
                   **tracking)
    else:
        tr = train(shards=shards, **train_params, **tracking)
    _place(tr, "train", cluster)
    ode_steps, dmd_steps, teacher_steps = distill_steps
    ds = _place(distill(teacher=tr.outputs["model"], shards=shards, ode_steps=ode_steps, dmd_steps=dmd_steps,
                        teacher_steps=teacher_steps, **tracking), "distill", cluster)
    qt = _place(quantize(model=ds.outputs["student"], shards=shards, **tracking), "quantize", cluster)
    ev = _place(evaluate(model=qt.outputs["quantized"], heldout=heldout, num_clips=eval_clips,
                         teacher=tr.outputs["model"], student=ds.outputs["student"], **tracking),
                "evaluate", cluster)
    rg = _place(register(model=qt.outputs["quantized"], report=ev.outputs["report"], name=model_name,
                         **tracking), "register", cluster)
    keep_serving, device, instance_count, max_sessions = serving
    dp = deploy(model_uri=rg.outputs["Output"], keep_serving=keep_serving, device=device,
                instance_count=instance_count, max_sessions_per_instance=max_sessions, **tracking)
    return _place(dp, "deploy", cluster)


# What the KFP UI's run form shows beside each parameter (the pipeline docstring's Args become the IR's
# parameter descriptions). Every parameter of every pipeline must have an entry (_document checks).
PARAM_DOCS = {
    "num_clips": "Synthetic clips to generate when source_dir is empty.",
    "seed": "Seed for clip generation and sampling.",
    "source_dir": "Folder of real videos to ingest (a path the ingest pod can read, e.g. on the data PVC); "
                  "empty = synthetic clips.",
    "clip_height": "Clip height in pixels after ingest.",
    "clip_width": "Clip width in pixels after ingest.",
    "clip_frames": "Raw frames per clip after ingest.",
    "annotate_groups": "Clip groups annotated in parallel (one annotate-group task each).",
    "heldout_clips": "Held-out clips (scenes from seeds training never sees) that evaluate reads.",
    "heldout_frames": "Raw frames per held-out clip (at least 2x clip_frames, to measure extrapolation).",
    "holdout_kinds": "Trajectory classes kept out of training and put first in the held-out set (comma list).",
    "heldout_uri": "URI of an existing held-out shards folder (artifact store URI) to evaluate on.",
    "vae_steps": "Gradient steps of the VAE fit after its closed-form PCA start (0 = the PCA start alone).",
    "vae_lr": "Learning rate of the VAE fit.",
    "vae_cache_dir": "Folder caching VAE fits by data + config hash (empty = no cache).",
    "init_bundle": "Model bundle to fine-tune from (a `make pretrain` base or an imported release, a path the "
                   "train pod can read); empty = train from scratch.",
    "shards_uri": "URI of an existing annotated shards folder (artifact store URI) to train on.",
    "preset": "Model preset: tiny, small or sana_wm_2b6 (the 2.6 B paper model).",
    "steps": "Optimizer steps. tiny/small: one stage of this many steps; sana_wm_2b6: the paper's four "
             "progressive stages scaled to sum to this (0 = their full 16,600-step budget).",
    "lr": "Peak learning rate of every stage (0 = the preset's).",
    "checkpoint_every": "Steps between training checkpoints (0 = only at the end); a retried cluster train "
                        "task resumes from the latest one.",
    "stages_json": "Explicit training stages as a JSON list of {latent_frames, steps, batch_size, lr}; "
                   "wins over steps and lr. Empty = the preset's schedule.",
    "distill_ode_steps": "Distillation: ODE-regression steps of the few-step student.",
    "distill_dmd_steps": "Distillation: DMD steps after the ODE stage.",
    "distill_teacher_steps": "Distillation: sampling steps of the teacher when it makes ODE targets.",
    "model_name": "MLflow registered model name (register sets @candidate, deploy sets @production).",
    "eval_clips": "Clips the evaluate step generates and scores.",
    "keep_serving": "Leave the deploy step's Triton running after the smoke request (until the task is stopped).",
    "serve_device": "Where the deploy step's Triton runs the model: auto, cpu or cuda[:i] (auto = a GPU when the "
                    "pod has one; a quantized bundle is served where it was built).",
    "serve_instances": "Triton instances per model (each loads the bundle).",
    "serve_max_sessions": "Live interactive sessions one sana_wm_session instance holds (the server holds "
                          "serve_instances x this).",
    "tracking_uri": "MLflow tracking URI. Empty = the cluster default from ConfigMap sana-wm-tracking "
                    "(cluster form) or the embedded SQLite store (local run).",
    "parent_run_id": "MLflow run id to nest every step's run under (empty = top-level runs).",
    "experiment": "MLflow experiment name.",
}


def _document(fn: Callable, summary: str) -> Callable:
    """Give ``fn`` a Google-style docstring whose Args are ``PARAM_DOCS`` (KFP turns them into descriptions)."""
    import inspect

    params = list(inspect.signature(fn).parameters)
    missing = [p for p in params if p not in PARAM_DOCS]
    if missing:
        raise ValueError(f"pipeline {fn.__name__}: parameters without a description in PARAM_DOCS: {missing}")
    fn.__doc__ = summary + "\n\nArgs:\n" + "".join(f"    {p}: {PARAM_DOCS[p]}\n" for p in params)
    return fn


@dataclass(frozen=True)
class _Defaults:
    """Pipeline parameter defaults, read from params.yaml (the one source the CLIs and DVC read too)."""

    preset: str
    steps: int
    lr: float
    init: str
    ingest_clips: int
    seed: int
    height: int
    width: int
    frames: int
    heldout_clips: int
    heldout_frames: int
    holdout_kinds: str
    vae_steps: int
    vae_lr: float
    ode_steps: int
    dmd_steps: int
    teacher_steps: int
    eval_clips: int
    model_name: str
    serve_device: str
    serve_instances: int
    serve_max_sessions: int


def _defaults() -> _Defaults:
    from components.common.defaults import default as d

    return _Defaults(
        preset=d("preset"), steps=d("train.steps"), lr=float(d("train.lr")), init=d("train.init"), ingest_clips=d("ingest.num_clips"),
        seed=d("ingest.seed"), height=d("ingest.height"), width=d("ingest.width"), frames=d("ingest.frames"),
        heldout_clips=d("heldout.num_clips"), heldout_frames=d("heldout.frames"),
        holdout_kinds=str(d("heldout.holdout_kinds")), vae_steps=d("vae.steps"), vae_lr=float(d("vae.lr")),
        ode_steps=d("distill.ode_steps"), dmd_steps=d("distill.dmd_steps"), teacher_steps=d("distill.teacher_steps"),
        eval_clips=d("evaluate.num_clips"), model_name=d("register.model_name"), serve_device=str(d("deploy.device")),
        serve_instances=d("deploy.instance_count"), serve_max_sessions=d("deploy.max_sessions_per_instance"))


def build_pipeline(name: str, cluster: ClusterSettings | None = None,
                   meta: PipelineMeta = PipelineMeta()) -> Callable:
    """Return the ``@dsl.pipeline`` function for ``name`` (one of ``PIPELINE_NAMES``).

    Training defaults follow the form: locally the small preset for 200 steps; on a cluster the paper's
    2.6 B schedule with a checkpoint every 500 steps.
    """
    if name not in PIPELINE_NAMES:
        raise ValueError(f"unknown pipeline {name!r}; choose one of {PIPELINE_NAMES}")
    form = "cluster" if cluster is not None else "local"
    deco = dsl.pipeline(
        name=f"sana-wm-{name.replace('_', '-')}",
        display_name=f"SANA-WM {name} ({meta.stamp}, {form})",
        description=f"SANA-WM {name} pipeline; sana-wm-stack {meta.version}; git {meta.git_sha}; form {form}",
    )
    P = _defaults()
    # the cluster form trains the paper preset: params.yaml's local base bundle (a repo path) is not its default
    d_preset, d_steps, d_lr, d_ckpt, d_init = (("sana_wm_2b6", 0, 0.0, 500, "") if cluster is not None
                                               else (P.preset, P.steps, P.lr, 0, P.init))
    summary = f"SANA-WM {name} pipeline ({form} form)."

    if name == "data":
        def data(num_clips: int = P.ingest_clips, seed: int = P.seed, source_dir: str = "", clip_height: int = P.height,
                 clip_width: int = P.width, clip_frames: int = P.frames, annotate_groups: int = 2, heldout_clips: int = P.heldout_clips,
                 heldout_frames: int = P.heldout_frames, holdout_kinds: str = P.holdout_kinds, tracking_uri: str = "",
                 parent_run_id: str = "", experiment: str = "sana-wm"):
            tracking = dict(tracking_uri=tracking_uri, parent_run_id=parent_run_id, experiment=experiment)
            _data_tasks(num_clips, seed, source_dir, (clip_height, clip_width, clip_frames), annotate_groups,
                        (heldout_clips, heldout_frames, holdout_kinds), tracking, cluster)
        return deco(_document(data, summary))

    if name == "train_to_serve":
        def train_to_serve(shards_uri: str, heldout_uri: str, preset: str = d_preset, steps: int = d_steps,
                           lr: float = d_lr, checkpoint_every: int = d_ckpt, stages_json: str = "",
                           vae_steps: int = P.vae_steps, vae_lr: float = P.vae_lr, vae_cache_dir: str = "",
                           init_bundle: str = d_init, distill_ode_steps: int = P.ode_steps, distill_dmd_steps: int = P.dmd_steps, distill_teacher_steps: int = P.teacher_steps,
                           model_name: str = P.model_name, eval_clips: int = P.eval_clips, keep_serving: bool = False,
                           serve_device: str = P.serve_device, serve_instances: int = P.serve_instances,
                           serve_max_sessions: int = P.serve_max_sessions,
                           tracking_uri: str = "", parent_run_id: str = "", experiment: str = "sana-wm"):
            tracking = dict(tracking_uri=tracking_uri, parent_run_id=parent_run_id, experiment=experiment)
            imp = dsl.importer(artifact_uri=shards_uri, artifact_class=dsl.Dataset, reimport=False)
            imp.set_display_name("shards")
            imp_h = dsl.importer(artifact_uri=heldout_uri, artifact_class=dsl.Dataset, reimport=False)
            imp_h.set_display_name("heldout")
            train_params = dict(preset=preset, steps=steps, lr=lr, checkpoint_every=checkpoint_every,
                                stages_json=stages_json)
            _train_to_serve_tasks(imp.output, imp_h.output, train_params, (vae_steps, vae_lr, vae_cache_dir),
                                  (distill_ode_steps, distill_dmd_steps, distill_teacher_steps), model_name,
                                  eval_clips, (keep_serving, serve_device, serve_instances, serve_max_sessions),
                                  tracking, cluster, init_bundle)
        return deco(_document(train_to_serve, summary))

    def full(num_clips: int = P.ingest_clips, seed: int = P.seed, source_dir: str = "", clip_height: int = P.height,
             clip_width: int = P.width, clip_frames: int = P.frames, annotate_groups: int = 2, heldout_clips: int = P.heldout_clips,
             heldout_frames: int = P.heldout_frames, holdout_kinds: str = P.holdout_kinds, preset: str = d_preset,
             steps: int = d_steps, lr: float = d_lr, checkpoint_every: int = d_ckpt, stages_json: str = "",
             vae_steps: int = P.vae_steps, vae_lr: float = P.vae_lr, vae_cache_dir: str = "",
             init_bundle: str = d_init, distill_ode_steps: int = P.ode_steps, distill_dmd_steps: int = P.dmd_steps,
             distill_teacher_steps: int = P.teacher_steps, model_name: str = P.model_name, eval_clips: int = P.eval_clips, keep_serving: bool = False,
             serve_device: str = P.serve_device, serve_instances: int = P.serve_instances,
             serve_max_sessions: int = P.serve_max_sessions, tracking_uri: str = "", parent_run_id: str = "", experiment: str = "sana-wm"):
        tracking = dict(tracking_uri=tracking_uri, parent_run_id=parent_run_id, experiment=experiment)
        ann, ann_h = _data_tasks(num_clips, seed, source_dir, (clip_height, clip_width, clip_frames),
                                 annotate_groups, (heldout_clips, heldout_frames, holdout_kinds), tracking, cluster)
        train_params = dict(preset=preset, steps=steps, lr=lr, checkpoint_every=checkpoint_every,
                            stages_json=stages_json)
        _train_to_serve_tasks(ann.outputs["shards"], ann_h.outputs["shards"], train_params,
                              (vae_steps, vae_lr, vae_cache_dir),
                              (distill_ode_steps, distill_dmd_steps, distill_teacher_steps), model_name, eval_clips,
                              (keep_serving, serve_device, serve_instances, serve_max_sessions), tracking, cluster,
                              init_bundle)
    return deco(_document(full, summary))
