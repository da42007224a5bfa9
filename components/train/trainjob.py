"""Kubeflow Trainer v2 ``TrainJob`` for the cluster run (8 nodes x 8 H100, DeepSpeed ZeRO).

The object is built from the same ``TrainConfig`` the local trainer uses (the config travels as one JSON
argument, so the pods train exactly what was planned) and validated offline against the pydantic models
of the ``kubeflow_trainer_api`` package before anything talks to a cluster. The runtime
``deepspeed-distributed`` is a ClusterTrainingRuntime with an MPI policy: its launcher runs ``mpirun``
with ``numProcPerNode`` slots per node, and ``deepspeed.initialize`` discovers ranks from the MPI
environment, so the container command is the same ``python -m components.train`` entry as locally.

``submit_trainjob`` creates the object through ``kubernetes.client.CustomObjectsApi`` (never called in
tests, which only check the object and the exact client call).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from components.train.config import TrainConfig

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
PLURAL = "trainjobs"
KIND = "TrainJob"
DEFAULT_RUNTIME = "deepspeed-distributed"


@dataclass(frozen=True)
class ClusterSpec:
    """Where and how the job runs. ``gpus_per_node`` becomes both the MPI slots and the GPU limit."""

    name: str = "sana-wm-stage1"
    namespace: str = "sana-wm"
    image: str = "ghcr.io/sana-wm/stack-train:0.1.0"
    num_nodes: int = 8
    gpus_per_node: int = 8
    cpu_per_node: str = "96"
    memory_per_node: str = "1600Gi"
    runtime: str = DEFAULT_RUNTIME
    shards_uri: str = "/data/shards"  # a PVC mount or object-store FUSE path inside the pod
    out_uri: str = "/data/runs/stage1"
    env: dict[str, str] = field(default_factory=lambda: {
        "NCCL_DEBUG": "WARN", "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
        "TORCH_EXTENSIONS_DIR": "/cache/torch_extensions"})

    def __post_init__(self) -> None:
        if self.num_nodes < 1 or self.gpus_per_node < 1:
            raise ValueError(f"ClusterSpec needs num_nodes >= 1 and gpus_per_node >= 1, "
                             f"got {self.num_nodes} x {self.gpus_per_node}")
        # Kubernetes object names are DNS-1123 labels.
        if not self.name or len(self.name) > 63 or not all(c.isalnum() or c == "-" for c in self.name) \
                or self.name.lower() != self.name or self.name[0] == "-" or self.name[-1] == "-":
            raise ValueError(f"ClusterSpec.name must be a DNS-1123 label (lowercase, digits, '-'), got {self.name!r}")


def build_trainjob(cfg: TrainConfig, cluster: ClusterSpec) -> dict[str, Any]:
    """The TrainJob as a plain dict (camelCase keys, ready for the API server); validated before return."""
    if not cfg.deepspeed:
        raise ValueError("build_trainjob: the cluster job runs the DeepSpeed engine; set TrainConfig.deepspeed=True")
    obj = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": cluster.name, "namespace": cluster.namespace,
                     "labels": {"app.kubernetes.io/part-of": "sana-wm", "sana-wm/preset": cfg.preset}},
        "spec": {
            "runtimeRef": {"name": cluster.runtime, "apiGroup": GROUP, "kind": "ClusterTrainingRuntime"},
            "trainer": {
                "image": cluster.image,
                "command": ["python", "-m", "components.train"],
                "args": ["--shards", cluster.shards_uri, "--out", cluster.out_uri, "--preset", cfg.preset,
                         "--deepspeed", "--zero-stage", str(cfg.zero_stage),
                         "--train-config-json", json.dumps(cfg.to_dict(), sort_keys=True)],
                "numNodes": cluster.num_nodes,
                "numProcPerNode": cluster.gpus_per_node,
                "resourcesPerNode": {
                    "limits": {"nvidia.com/gpu": str(cluster.gpus_per_node)},
                    "requests": {"cpu": cluster.cpu_per_node, "memory": cluster.memory_per_node,
                                 "nvidia.com/gpu": str(cluster.gpus_per_node)},
                },
                "env": [{"name": k, "value": v} for k, v in sorted(cluster.env.items())],
            },
        },
    }
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


def submit_trainjob(obj: dict[str, Any], api: Any | None = None) -> dict[str, Any]:
    """Create the TrainJob on the cluster of the current kubeconfig (or in-cluster config).

    ``api`` is a ``kubernetes.client.CustomObjectsApi`` (built from the local config when None).
    Returns the server's copy of the object.
    """
    validate_trainjob(obj)
    if api is None:
        from kubernetes import client, config

        try:
            config.load_kube_config()
        except config.ConfigException:  # no kubeconfig: running inside a pod
            config.load_incluster_config()
        api = client.CustomObjectsApi()
    return api.create_namespaced_custom_object(
        group=GROUP, version=VERSION, namespace=obj["metadata"]["namespace"], plural=PLURAL, body=obj)
