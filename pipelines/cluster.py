"""Cluster form: default Kubernetes placement, the TrainJob the train step submits, and running it.

``default_settings`` is pure (builds and validates the TrainJob manifest offline with
``components.train.trainjob``); ``run_trainjob`` is what the train component calls *inside the cluster*
(``cluster=True``): stage the shards on the shared PVC, submit, wait for the Trainer's ``Complete``
condition, and copy the bundle rank 0 wrote back into the KFP output artifact.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
import uuid
from typing import Any

from components.common.paths import image_for
from pipelines.dags import ClusterSettings

DEFAULT_NODES = 8
DEFAULT_GPUS_PER_NODE = 8


def default_trainjob(preset: str = "sana_wm_2b6", num_nodes: int = DEFAULT_NODES,
                     gpus_per_node: int = DEFAULT_GPUS_PER_NODE, pvc_mount: str = "/data",
                     namespace: str = "sana-wm") -> dict[str, Any]:
    """The Trainer v2 TrainJob (DeepSpeed runtime, ``num_nodes`` x ``gpus_per_node``) as a dict."""
    from components.train.config import TrainConfig
    from components.train.trainjob import ClusterSpec, build_trainjob

    cfg = TrainConfig(preset=preset, deepspeed=True)
    spec = ClusterSpec(namespace=namespace, image=image_for("train"), num_nodes=num_nodes,
                       gpus_per_node=gpus_per_node, shards_uri=f"{pvc_mount}/shards",
                       out_uri=f"{pvc_mount}/runs/stage1")
    return build_trainjob(cfg, spec)


def default_settings(**overrides: Any) -> ClusterSettings:
    """``ClusterSettings`` with the default 8x8 DeepSpeed TrainJob (``overrides`` go to the dataclass)."""
    mount = overrides.get("pvc_mount", "/data")
    overrides.setdefault("trainjob", default_trainjob(pvc_mount=mount))
    return ClusterSettings(**overrides)


def _trainer_arg(spec: dict[str, Any], flag: str) -> str:
    args = spec["spec"]["trainer"]["args"]
    if flag not in args:
        raise ValueError(f"TrainJob args lack {flag}: {args}")
    return args[args.index(flag) + 1]


def run_trainjob(spec: dict[str, Any], shards_path: str, model_path: str, timeout_s: float = 14 * 86400,
                 poll_s: float = 30.0, api: Any | None = None) -> dict[str, Any]:
    """Submit ``spec`` under a unique name and block until it completes; raise if it fails.

    ``shards_path`` (the KFP input) is copied to the job's ``--shards`` path on the PVC, and the job's
    ``--out`` folder is copied to ``model_path`` afterwards. Returns the final TrainJob object.
    """
    from components.train import trainjob

    spec = copy.deepcopy(spec)
    # A TrainJob name is unique per namespace; pipeline reruns must not collide.
    spec["metadata"]["name"] = f"{spec['metadata']['name'][:50]}-{uuid.uuid4().hex[:8]}"
    shards_dst, out_src = _trainer_arg(spec, "--shards"), _trainer_arg(spec, "--out")
    if os.path.abspath(shards_path) != os.path.abspath(shards_dst):
        shutil.copytree(shards_path, shards_dst, dirs_exist_ok=True)
    if api is None:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except Exception:
            config.load_kube_config()
        api = client.CustomObjectsApi()
    trainjob.submit_trainjob(spec, api=api)
    name, ns = spec["metadata"]["name"], spec["metadata"]["namespace"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        obj = api.get_namespaced_custom_object(trainjob.GROUP, trainjob.VERSION, ns, trainjob.PLURAL, name)
        conds = {c.get("type"): c for c in obj.get("status", {}).get("conditions", [])
                 if c.get("status") == "True"}
        if "Failed" in conds:
            raise RuntimeError(f"TrainJob {ns}/{name} failed: {conds['Failed'].get('message', '')}")
        if "Complete" in conds:
            shutil.copytree(out_src, model_path, dirs_exist_ok=True)
            return obj
        time.sleep(poll_s)
    raise TimeoutError(f"TrainJob {ns}/{name} did not complete within {timeout_s:.0f} s")
