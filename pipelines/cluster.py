"""Cluster form defaults: Kubernetes placement for every task and the TrainJob placement.

Pure definition-time code (kfp compiles with it; nothing talks to a cluster). What runs at run time
lives in the components: the train task's launcher is ``components.train.launcher`` (a pipeline module
must not be imported by a component: layers go model <- serving <- components <- pipelines).
"""

from __future__ import annotations

from typing import Any

from components.common.paths import image_for
from components.train.trainjob import ClusterSpec
from pipelines.dags import ClusterSettings

DEFAULT_NODES = 8
DEFAULT_GPUS_PER_NODE = 8


def default_train_cluster(num_nodes: int = DEFAULT_NODES, gpus_per_node: int = DEFAULT_GPUS_PER_NODE,
                          pvc_name: str = "sana-wm-data", pvc_mount: str = "/data",
                          namespace: str = "sana-wm") -> ClusterSpec:
    """The TrainJob placement: ``num_nodes`` x ``gpus_per_node`` H100 on the torch-distributed runtime."""
    return ClusterSpec(namespace=namespace, image=image_for("train"), num_nodes=num_nodes,
                       gpus_per_node=gpus_per_node, pvc_name=pvc_name, pvc_mount=pvc_mount)


def default_settings(num_nodes: int = DEFAULT_NODES, gpus_per_node: int = DEFAULT_GPUS_PER_NODE,
                     **overrides: Any) -> ClusterSettings:
    """``ClusterSettings`` with the default 8 x 8 TrainJob placement (``overrides`` go to the dataclass)."""
    if "train_cluster" not in overrides:
        overrides["train_cluster"] = default_train_cluster(
            num_nodes, gpus_per_node, pvc_name=overrides.get("pvc_name", "sana-wm-data"),
            pvc_mount=overrides.get("pvc_mount", "/data")).to_dict()
    return ClusterSettings(**overrides)
