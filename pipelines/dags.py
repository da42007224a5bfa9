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
``ClusterSettings`` adds the kfp-kubernetes parts (1 GPU per GPU step, node selector, a data PVC) and
switches the train step to submitting a Trainer v2 TrainJob; ``None`` leaves the graph plain, which
is what the KFP local runner wants (it would ignore the Kubernetes parts with warnings anyway).
Nothing here talks to a cluster: the TrainJob manifest is *built* at definition time and travels in
the IR as a parameter constant; the train component submits it at run time.
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
GPU_STEPS = ("vae", "train", "distill", "quantize", "evaluate", "deploy")


@dataclass(frozen=True)
class ClusterSettings:
    """Kubernetes placement for the cluster form of the DAG.

    ``trainjob`` is the TrainJob manifest (dict) the train step submits; build it with
    ``pipelines.cluster.build_trainjob_spec``.
    """

    gpus_per_step: int = 1
    gpu_resource: str = "nvidia.com/gpu"
    node_selector: tuple[str, str] = ("nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3")
    pvc_name: str = "sana-wm-data"
    pvc_mount: str = "/data"
    cpu_request: str = "4"
    memory_request: str = "32G"
    trainjob: dict[str, Any] = field(default_factory=dict)
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
    task.set_cpu_request(cluster.cpu_request).set_memory_request(cluster.memory_request)
    kubernetes.mount_pvc(task, pvc_name=cluster.pvc_name, mount_path=cluster.pvc_mount)
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


def _train_to_serve_tasks(shards, heldout, preset, steps, vae_fit, distill_steps, model_name, eval_clips,
                          keep_serving, tracking, cluster, init_bundle=""):
    is_cluster = cluster is not None
    vae_steps, vae_lr, vae_cache = vae_fit
    # init_bundle: fine-tune a base/released bundle; the vae step then passes that bundle's VAE through
    # (the network was trained on its latents) and train loads network + VAE strictly from it.
    vf = _place(vae(shards=shards, preset=preset, steps=vae_steps, lr=vae_lr, cache_dir=vae_cache,
                    init_bundle=init_bundle, **tracking), "vae", cluster)
    tr = train(shards=shards, vae=vf.outputs["vae"], preset=preset, steps=steps, cluster=is_cluster, init=init_bundle,
               trainjob_spec=json.dumps(cluster.trainjob, sort_keys=True) if is_cluster else "", **tracking)
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
    dp = deploy(model_uri=rg.outputs["Output"], keep_serving=keep_serving, **tracking)
    return _place(dp, "deploy", cluster)


def build_pipeline(name: str, cluster: ClusterSettings | None = None,
                   meta: PipelineMeta = PipelineMeta()) -> Callable:
    """Return the ``@dsl.pipeline`` function for ``name`` (one of ``PIPELINE_NAMES``)."""
    if name not in PIPELINE_NAMES:
        raise ValueError(f"unknown pipeline {name!r}; choose one of {PIPELINE_NAMES}")
    form = "cluster" if cluster is not None else "local"
    deco = dsl.pipeline(
        name=f"sana-wm-{name.replace('_', '-')}",
        display_name=f"SANA-WM {name} ({meta.stamp}, {form})",
        description=f"SANA-WM {name} pipeline; sana-wm-stack {meta.version}; git {meta.git_sha}; form {form}",
    )

    if name == "data":
        def data(num_clips: int = 8, seed: int = 0, source_dir: str = "", clip_height: int = 64,
                 clip_width: int = 96, clip_frames: int = 33, annotate_groups: int = 2, heldout_clips: int = 2,
                 heldout_frames: int = 69, holdout_kinds: str = "turn", tracking_uri: str = "",
                 parent_run_id: str = "", experiment: str = "sana-wm"):
            tracking = dict(tracking_uri=tracking_uri, parent_run_id=parent_run_id, experiment=experiment)
            _data_tasks(num_clips, seed, source_dir, (clip_height, clip_width, clip_frames), annotate_groups,
                        (heldout_clips, heldout_frames, holdout_kinds), tracking, cluster)
        return deco(data)

    if name == "train_to_serve":
        def train_to_serve(shards_uri: str, heldout_uri: str, preset: str = "small", steps: int = 200,
                           vae_steps: int = 0, vae_lr: float = 5e-4, vae_cache_dir: str = "",
                           init_bundle: str = "", distill_ode_steps: int = 60, distill_dmd_steps: int = 4, distill_teacher_steps: int = 20,
                           model_name: str = "sana-wm", eval_clips: int = 2, keep_serving: bool = False,
                           tracking_uri: str = "", parent_run_id: str = "", experiment: str = "sana-wm"):
            tracking = dict(tracking_uri=tracking_uri, parent_run_id=parent_run_id, experiment=experiment)
            imp = dsl.importer(artifact_uri=shards_uri, artifact_class=dsl.Dataset, reimport=False)
            imp.set_display_name("shards")
            imp_h = dsl.importer(artifact_uri=heldout_uri, artifact_class=dsl.Dataset, reimport=False)
            imp_h.set_display_name("heldout")
            _train_to_serve_tasks(imp.output, imp_h.output, preset, steps, (vae_steps, vae_lr, vae_cache_dir),
                                  (distill_ode_steps, distill_dmd_steps, distill_teacher_steps), model_name, eval_clips, keep_serving,
                                  tracking, cluster, init_bundle)
        return deco(train_to_serve)

    def full(num_clips: int = 8, seed: int = 0, source_dir: str = "", clip_height: int = 64,
             clip_width: int = 96, clip_frames: int = 33, annotate_groups: int = 2, heldout_clips: int = 2,
             heldout_frames: int = 69, holdout_kinds: str = "turn", preset: str = "small",
             steps: int = 200, vae_steps: int = 0, vae_lr: float = 5e-4, vae_cache_dir: str = "",
             init_bundle: str = "", distill_ode_steps: int = 60, distill_dmd_steps: int = 4,
             distill_teacher_steps: int = 20, model_name: str = "sana-wm", eval_clips: int = 2, keep_serving: bool = False,
             tracking_uri: str = "", parent_run_id: str = "", experiment: str = "sana-wm"):
        tracking = dict(tracking_uri=tracking_uri, parent_run_id=parent_run_id, experiment=experiment)
        ann, ann_h = _data_tasks(num_clips, seed, source_dir, (clip_height, clip_width, clip_frames), annotate_groups,
                                 (heldout_clips, heldout_frames, holdout_kinds), tracking, cluster)
        _train_to_serve_tasks(ann.outputs["shards"], ann_h.outputs["shards"], preset, steps,
                              (vae_steps, vae_lr, vae_cache_dir),
                              (distill_ode_steps, distill_dmd_steps, distill_teacher_steps), model_name, eval_clips, keep_serving,
                              tracking, cluster, init_bundle)
    return deco(full)
