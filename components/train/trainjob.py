"""Kubeflow Trainer v2 ``TrainJob`` for the cluster run, built at run time from the pipeline's parameters.

Runtime choice: ``torch-distributed`` (a ClusterTrainingRuntime shipped with Trainer v2). Its torch
policy injects ``PET_NNODES`` / ``PET_NPROC_PER_NODE`` / ``PET_NODE_RANK`` / ``PET_MASTER_ADDR`` /
``PET_MASTER_PORT`` into every node pod, which ``torchrun`` reads as its own flags; the container command
is ``torchrun -m components.train ...`` and ``deepspeed.init_distributed`` joins the process group
torchrun set up (RANK/WORLD_SIZE/MASTER_*). No MPI launcher, no SSH keys, nothing the train image lacks
(``deepspeed-distributed`` would need mpirun + sshd in the image). ``numProcPerNode`` stays the
runtime's ``auto`` = the GPUs each node requests.

What travels where:

* ``ClusterSpec`` (placement: image, nodes x GPUs, PVC, cache, node selector) is fixed at compile time
  and rides in the KFP IR as one JSON constant;
* the ``TrainConfig`` is built *in the launcher pod* from the pipeline's run-time parameters
  (``train_config_from_params``: preset, steps, lr, checkpoint cadence, optional explicit stages), so a
  run from the UI trains what its form says;
* names and paths come from the KFP run: the job is named after (run id, task name), so a retried task
  finds and re-attaches to its job, and every output lives under ``<pvc>/runs/<run id>/``.

``build_request`` returns the exact arguments for ``kubeflow.trainer.TrainerClient.train`` (a
``CustomTrainerContainer`` + SDK options); ``render_trainjob`` runs the SDK's own TrainJob construction
with the API server replaced by a recorder, so offline checks see the object the cluster would get, and
``validate_trainjob`` parses it with the ``kubeflow_trainer_api`` pydantic models.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from components.train.config import StageConfig, TrainConfig, default_train_config, paper_stages

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
PLURAL = "trainjobs"
KIND = "TrainJob"
DEFAULT_RUNTIME = "torch-distributed"
NODE = "node"  # the torch runtime's replicated job *and* trainer container name
TRAINER_COMMAND = ("torchrun", "-m", "components.train")
DEFAULT_IMAGE = "ghcr.io/sana-wm-stack/sana-wm-train:0.1.0"
APP_UID = 10001  # the unprivileged user of every image (infra/images/Containerfile.base)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass(frozen=True)
class ClusterSpec:
    """Where and how the TrainJob runs (compile-time placement; JSON in the IR via ``to_dict``).

    ``gpus_per_node`` is the GPU request *and* limit of every node pod; torchrun starts one rank per GPU.
    ``cache_size`` sizes a node-local emptyDir at ``cache_mount`` (DeepSpeed's JIT ops, HF/torch caches);
    the latent cache lives on the shared PVC instead, so rank 0 encodes once for every node.
    """

    namespace: str = "sana-wm"
    image: str = DEFAULT_IMAGE
    num_nodes: int = 8
    gpus_per_node: int = 8
    cpu_per_node: str = "96"
    memory_per_node: str = "1600Gi"
    runtime: str = DEFAULT_RUNTIME
    pvc_name: str = "sana-wm-data"
    pvc_mount: str = "/data"
    cache_mount: str = "/cache"
    cache_size: str = "500Gi"
    shm_size: str = "256Gi"  # NCCL and DataLoader workers use /dev/shm; the default 64 MiB is not enough
    node_selector: dict[str, str] = field(default_factory=lambda: {
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"})
    tolerations: tuple[dict[str, str], ...] = (
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},)
    active_deadline_s: int = 20 * 86400  # the paper's schedule is ~15 days on 64 H100
    zero_stage: int = 2
    env: dict[str, str] = field(default_factory=lambda: {
        "NCCL_DEBUG": "WARN", "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"})

    def __post_init__(self) -> None:
        _require(self.num_nodes >= 1 and self.gpus_per_node >= 1,
                 f"ClusterSpec needs num_nodes >= 1 and gpus_per_node >= 1, got {self.num_nodes} x {self.gpus_per_node}")
        _require(bool(_DNS_LABEL.match(self.namespace)) and len(self.namespace) <= 63,
                 f"ClusterSpec.namespace must be a DNS-1123 label, got {self.namespace!r}")
        _require(bool(_DNS_LABEL.match(self.pvc_name)), f"ClusterSpec.pvc_name must be a DNS-1123 label, got {self.pvc_name!r}")
        for name in ("pvc_mount", "cache_mount"):
            v = getattr(self, name)
            _require(v.startswith("/") and v != "/", f"ClusterSpec.{name} must be an absolute folder, got {v!r}")
        _require(self.active_deadline_s >= 1, f"ClusterSpec.active_deadline_s must be >= 1, got {self.active_deadline_s}")
        _require(self.zero_stage in (0, 1, 2, 3), f"ClusterSpec.zero_stage must be 0..3, got {self.zero_stage}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["tolerations"] = [dict(t) for t in self.tolerations]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClusterSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        _require(not unknown, f"ClusterSpec: unknown keys {unknown}")
        kw = dict(d)
        if "tolerations" in kw:
            kw["tolerations"] = tuple(dict(t) for t in kw["tolerations"])
        return cls(**kw)


@dataclass(frozen=True)
class RunPaths:
    """Folders of one KFP run on the shared PVC: a rerun (new run id) never resumes another run's
    checkpoint, a retried task (same run id) resumes its own."""

    run_dir: str

    @property
    def shards(self) -> str:
        return f"{self.run_dir}/shards"

    @property
    def vae(self) -> str:
        return f"{self.run_dir}/vae"

    @property
    def out(self) -> str:
        return f"{self.run_dir}/teacher"

    @property
    def ckpt(self) -> str:
        return f"{self.run_dir}/teacher.ckpt"

    @property
    def latents(self) -> str:
        return f"{self.run_dir}/latents"

    @property
    def init(self) -> str:
        """Where the launcher stages the bundle a fine-tune starts from (``train --init``)."""
        return f"{self.run_dir}/init"


def _slug(value: str, limit: int = 63) -> str:
    """A Kubernetes label value / path component from an arbitrary id (KFP run ids are UUIDs)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-._")[:limit].strip("-._")
    return s or "none"


def run_paths(cluster: ClusterSpec, run_id: str) -> RunPaths:
    _require(bool(run_id), "run_paths: the KFP run id is empty (the component gets it from {{$.pipeline_job_uuid}})")
    return RunPaths(f"{cluster.pvc_mount}/runs/{_slug(run_id)}")


def job_name(run_id: str, task_name: str, prefix: str = "sana-wm-train") -> str:
    """Deterministic TrainJob name for (KFP run, task): the same on every retry of the task.

    Short on purpose: JobSet derives pod and service names from it (``<name>-node-0-0-xxxxx`` <= 63).
    """
    _require(bool(run_id) and bool(task_name), f"job_name needs a run id and a task name, got {run_id!r}, {task_name!r}")
    digest = hashlib.sha1(f"{run_id}/{task_name}".encode()).hexdigest()[:10]
    return f"{prefix}-{digest}"


def train_config_from_params(preset: str, steps: int = 0, lr: float = 0.0, checkpoint_every: int = 0,
                             stages_json: str = "", zero_stage: int = 2, seed: int = 0) -> TrainConfig:
    """The TrainConfig a cluster run trains, from the pipeline's run-time parameters.

    * ``stages_json`` (a JSON list of ``StageConfig`` dicts) wins when given;
    * else the preset's schedule: the paper's four progressive stages for ``sana_wm_2b6`` (their step
      budgets scaled to sum to ``steps`` when ``steps`` > 0), one stage of ``steps`` for the others;
    * ``lr`` > 0 sets every stage's peak LR; ``checkpoint_every`` is the checkpoint cadence in steps.
    Always the DeepSpeed engine (the cluster job runs ZeRO stage ``zero_stage``).
    """
    _require(steps >= 0, f"steps must be >= 0 (0 = the preset's schedule), got {steps}")
    _require(lr >= 0, f"lr must be >= 0 (0 = the preset's), got {lr}")
    _require(checkpoint_every >= 0, f"checkpoint_every must be >= 0, got {checkpoint_every}")
    if stages_json.strip():
        raw = json.loads(stages_json)
        _require(isinstance(raw, list) and len(raw) >= 1 and all(isinstance(s, dict) for s in raw),
                 f"stages_json must be a non-empty JSON list of stage objects, got {stages_json!r}")
        stages = tuple(StageConfig(**s) for s in raw)
    elif preset == "sana_wm_2b6":
        stages = paper_stages()
        if steps:
            stages = _scale_steps(stages, steps)
    else:
        _require(steps >= 1, f"preset {preset!r} trains one stage of `steps` steps; got steps={steps}")
        stages = default_train_config(preset, steps).stages
    if lr:
        stages = tuple(dataclasses.replace(s, lr=lr) for s in stages)
    return TrainConfig(preset=preset, stages=stages, checkpoint_every=checkpoint_every, deepspeed=True,
                       zero_stage=zero_stage, seed=seed)


def _scale_steps(stages: tuple[StageConfig, ...], total: int) -> tuple[StageConfig, ...]:
    """Keep the stages' proportions, sum exactly to ``total`` (every stage keeps >= 1 step)."""
    _require(total >= len(stages), f"steps={total} cannot cover {len(stages)} stages (>= 1 step each)")
    budget = sum(s.steps for s in stages)
    new = [max(1, round(s.steps * total / budget)) for s in stages]
    new[-1] += total - sum(new)
    while new[-1] < 1:  # rounding pushed the last stage under 1: borrow from the largest
        i = max(range(len(new) - 1), key=new.__getitem__)
        new[i] -= 1
        new[-1] += 1
    return tuple(dataclasses.replace(s, steps=n) for s, n in zip(stages, new))


def trainer_args(cfg: TrainConfig, paths: RunPaths, init: bool = False) -> list[str]:
    """``python -m components.train`` flags: the whole config as JSON, the run's folders on the PVC;
    ``init``: fine-tune the bundle the launcher staged at ``paths.init``."""
    args = ["--shards", paths.shards, "--vae", paths.vae, "--out", paths.out, "--ckpt-dir", paths.ckpt,
            "--cache-dir", paths.latents, "--preset", cfg.preset, "--steps", str(cfg.total_steps), "--deepspeed",
            "--zero-stage", str(cfg.zero_stage), "--train-config-json", json.dumps(cfg.to_dict(), sort_keys=True)]
    return args + (["--init", paths.init] if init else [])


@dataclass
class TrainJobRequest:
    """The arguments of ``TrainerClient.train`` (plus the name/namespace it will have)."""

    name: str
    namespace: str
    runtime: str
    trainer: Any  # kubeflow.trainer.CustomTrainerContainer
    options: list[Any]
    config: TrainConfig
    paths: RunPaths


def build_request(cfg: TrainConfig, cluster: ClusterSpec, *, name: str, paths: RunPaths,
                  tracking: dict[str, str] | None = None, labels: dict[str, str] | None = None,
                  init: bool = False) -> TrainJobRequest:
    """TrainerClient arguments for ``cfg`` on ``cluster``; ``tracking`` = env for MLflow in the pods
    (``MLFLOW_TRACKING_URI``, ``SANA_WM_PARENT_RUN_ID``, ``MLFLOW_EXPERIMENT_NAME``; empty values dropped);
    ``init``: the trainer fine-tunes the bundle staged at ``paths.init``."""
    from kubeflow.trainer import CustomTrainerContainer
    from kubeflow.trainer.options import (
        ActiveDeadlineSeconds,
        Annotations,
        ContainerPatch,
        JobSetSpecPatch,
        JobSetTemplatePatch,
        JobSpecPatch,
        JobTemplatePatch,
        Labels,
        Name,
        PodSpecPatch,
        PodTemplatePatch,
        ReplicatedJobPatch,
        RuntimePatch,
        TrainerArgs,
        TrainerCommand,
        TrainingRuntimeSpecPatch,
    )

    _require(cfg.deepspeed, "build_request: the cluster job runs the DeepSpeed engine; set TrainConfig.deepspeed=True")
    _require(bool(_DNS_LABEL.match(name)) and len(name) <= 40, f"TrainJob name must be a short DNS-1123 label, got {name!r}")
    c = cluster.cache_mount
    env = {**cluster.env,
           # Read-only root filesystem: every cache and HOME go to the node-local cache volume.
           "HOME": f"{c}/home", "XDG_CACHE_HOME": c, "TORCH_EXTENSIONS_DIR": f"{c}/torch_extensions",
           "TRITON_CACHE_DIR": f"{c}/triton", "HF_HOME": f"{c}/huggingface", "TMPDIR": "/tmp",
           **{k: v for k, v in (tracking or {}).items() if v}}
    trainer = CustomTrainerContainer(
        image=cluster.image, num_nodes=cluster.num_nodes, env=dict(sorted(env.items())),
        resources_per_node={"cpu": cluster.cpu_per_node, "memory": cluster.memory_per_node,
                            "nvidia.com/gpu": cluster.gpus_per_node})
    volumes = [
        {"name": "data", "persistentVolumeClaim": {"claimName": cluster.pvc_name}},
        {"name": "cache", "emptyDir": {"sizeLimit": cluster.cache_size}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": cluster.shm_size}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Gi"}},
    ]
    mounts = [{"name": "data", "mountPath": cluster.pvc_mount}, {"name": "cache", "mountPath": cluster.cache_mount},
              {"name": "dshm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"}]
    container = ContainerPatch(name=NODE, volume_mounts=mounts, security_context={
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}})
    pod = PodSpecPatch(
        volumes=volumes, containers=[container], node_selector=dict(cluster.node_selector) or None,
        tolerations=[dict(t) for t in cluster.tolerations] or None,
        security_context={"runAsNonRoot": True, "runAsUser": APP_UID, "runAsGroup": APP_UID, "fsGroup": APP_UID,
                          "seccompProfile": {"type": "RuntimeDefault"}})
    patch = RuntimePatch(training_runtime_spec=TrainingRuntimeSpecPatch(template=JobSetTemplatePatch(
        spec=JobSetSpecPatch(replicated_jobs=[ReplicatedJobPatch(name=NODE, template=JobTemplatePatch(
            spec=JobSpecPatch(template=PodTemplatePatch(spec=pod))))]))))
    all_labels = {"app.kubernetes.io/part-of": "sana-wm", "app.kubernetes.io/component": "train",
                  "sana-wm/preset": _slug(cfg.preset), **{k: _slug(v) for k, v in (labels or {}).items()}}
    options = [Name(name=name), Labels(labels=all_labels),
               Annotations(annotations={"sana-wm/run-dir": paths.run_dir,
                                        "sana-wm/total-steps": str(cfg.total_steps)}),
               TrainerCommand(command=list(TRAINER_COMMAND)), TrainerArgs(args=trainer_args(cfg, paths, init)),
               patch, ActiveDeadlineSeconds(seconds=cluster.active_deadline_s)]
    return TrainJobRequest(name=name, namespace=cluster.namespace, runtime=cluster.runtime, trainer=trainer,
                           options=options, config=cfg, paths=paths)


class _RecordingCustomObjectsApi:
    """Stands in for the API server in ``render_trainjob``: keeps the body the SDK would POST."""

    def __init__(self) -> None:
        self.body: dict[str, Any] | None = None

    def create_namespaced_custom_object(self, group, version, namespace, plural, body, **_):
        self.body = {"group": group, "version": version, "namespace": namespace, "plural": plural, "body": body}
        return body


def render_trainjob(request: TrainJobRequest) -> dict[str, Any]:
    """The TrainJob ``TrainerClient.train(**request)`` would create, built by the SDK itself, offline.

    The SDK resolves the runtime by name through the API; here it gets the ``torch-distributed`` runtime
    as an object (custom trainer, torchrun entry) so no server is needed. Validated before return.
    """
    from kubeflow.trainer.backends.kubernetes.backend import KubernetesBackend
    from kubeflow.trainer.types import types

    backend = KubernetesBackend.__new__(KubernetesBackend)  # no kubeconfig, no control-plane check
    backend.namespace = request.namespace
    backend.custom_api = rec = _RecordingCustomObjectsApi()
    backend.core_api = None
    runtime = types.Runtime(name=request.runtime, kind=types.RuntimeKind.CLUSTER_TRAINING_RUNTIME,
                            trainer=types.RuntimeTrainer(trainer_type=types.TrainerType.CUSTOM_TRAINER,
                                                         framework="torch", image=request.trainer.image))
    runtime.trainer.set_command(("torchrun",))
    name = backend.train(runtime=runtime, trainer=request.trainer, options=request.options)
    assert rec.body is not None and name == request.name, (name, request.name)
    obj = dict(rec.body["body"])
    obj["metadata"] = {**obj["metadata"], "namespace": rec.body["namespace"]}
    validate_trainjob(obj)
    return obj


def validate_trainjob(obj: dict[str, Any]) -> Any:
    """Parse ``obj`` with ``kubeflow_trainer_api``'s ``TrainerV1alpha1TrainJob`` and check nothing was dropped.

    The generated models ignore unknown keys, so the round trip (parse -> dict) must equal the input:
    a misspelt field (e.g. ``numNode``) fails here rather than being silently lost on the cluster.
    Returns the pydantic object; raises ``ValueError`` naming the problem.
    """
    from kubeflow_trainer_api.models.trainer_v1alpha1_train_job import TrainerV1alpha1TrainJob

    if obj.get("apiVersion") != f"{GROUP}/{VERSION}" or obj.get("kind") != KIND:
        raise ValueError(f"not a {GROUP}/{VERSION} {KIND}: apiVersion={obj.get('apiVersion')!r} kind={obj.get('kind')!r}")
    try:
        model = TrainerV1alpha1TrainJob.from_dict(obj)
    except Exception as e:  # pydantic.ValidationError: keep the message, name the object
        raise ValueError(f"TrainJob {obj.get('metadata', {}).get('name')!r} is invalid: {e}") from e
    back = model.to_dict()
    diff = _diff(obj, back)
    if diff:
        raise ValueError(f"TrainJob has fields the Trainer v1alpha1 schema does not know: {diff}")
    return model


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in a:
            if k not in b:
                out.append(f"{path}.{k}".lstrip("."))
            else:
                out += _diff(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        return [x for i, (p, q) in enumerate(zip(a, b)) for x in _diff(p, q, f"{path}[{i}]")]
    return []


def trainer_pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """The node pod's patched spec inside a rendered TrainJob (for checks): volumes, mounts, placement."""
    for p in obj["spec"].get("runtimePatches", []):
        for rj in p.get("trainingRuntimeSpec", {}).get("template", {}).get("spec", {}).get("replicatedJobs", []):
            if rj.get("name") == NODE:
                return rj["template"]["spec"]["template"]["spec"]
    raise ValueError("TrainJob has no runtime patch for the node pods")


def trainer_config(obj: dict[str, Any]) -> TrainConfig:
    """The TrainConfig a rendered TrainJob trains (its ``--train-config-json`` argument)."""
    args = obj["spec"]["trainer"]["args"]
    return TrainConfig.from_dict(json.loads(args[args.index("--train-config-json") + 1]))
