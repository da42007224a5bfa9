"""TrainJob for the cluster: built by the kubeflow SDK from run-time parameters, validated by the Trainer API models."""

from __future__ import annotations

import json

import pytest

from components.train.config import StageConfig, TrainConfig, paper_stages
from components.train.trainjob import (
    ClusterSpec,
    build_request,
    job_name,
    render_trainjob,
    run_paths,
    train_config_from_params,
    trainer_config,
    trainer_pod_spec,
    validate_trainjob,
)


def _render(cfg=None, cluster=ClusterSpec(), run_id="0b8f9a52-run", tracking=None):
    cfg = cfg or train_config_from_params("sana_wm_2b6", 0, checkpoint_every=500)
    req = build_request(cfg, cluster, name=job_name(run_id, "train"), paths=run_paths(cluster, run_id),
                        tracking=tracking)
    return cfg, render_trainjob(req)


def test_sdk_built_trainjob_validates_and_trains_the_planned_config():
    cfg, obj = _render(tracking={"MLFLOW_TRACKING_URI": "http://mlflow.sana-wm.svc:5000",
                                 "SANA_WM_PARENT_RUN_ID": "abc123"})
    model = validate_trainjob(obj)
    assert model.api_version == "trainer.kubeflow.org/v1alpha1" and model.kind == "TrainJob"
    assert model.spec.runtime_ref.name == "torch-distributed"
    tr = model.spec.trainer
    assert tr.num_nodes == 8
    assert tr.command == ["torchrun", "-m", "components.train"]  # torch runtime: no MPI launcher
    assert tr.resources_per_node.limits["nvidia.com/gpu"].actual_instance == 8
    assert trainer_config(obj) == cfg
    assert [s.steps for s in trainer_config(obj).stages] == [s.steps for s in paper_stages()]
    assert trainer_config(obj).checkpoint_every == 500
    env = {e.name: e.value for e in tr.env}
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.sana-wm.svc:5000" and env["SANA_WM_PARENT_RUN_ID"] == "abc123"
    assert env["TORCH_EXTENSIONS_DIR"].startswith("/cache/")


def test_trainer_pods_mount_the_data_pvc_and_a_cache_and_run_unprivileged():
    _, obj = _render()
    pod = trainer_pod_spec(obj)
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["data"]["persistentVolumeClaim"]["claimName"] == "sana-wm-data"
    assert "emptyDir" in vols["cache"] and vols["dshm"]["emptyDir"]["medium"] == "Memory"
    (node,) = pod["containers"]
    assert node["name"] == "node"
    mounts = {m["name"]: m["mountPath"] for m in node["volumeMounts"]}
    assert mounts["data"] == "/data" and mounts["cache"] == "/cache" and mounts["dshm"] == "/dev/shm"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert node["securityContext"]["readOnlyRootFilesystem"] is True
    assert node["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    # every path the trainer writes is under this run's folder on the PVC
    args = obj["spec"]["trainer"]["args"]
    for flag in ("--shards", "--out", "--ckpt-dir", "--cache-dir"):
        assert args[args.index(flag) + 1].startswith("/data/runs/0b8f9a52-run/"), flag


def test_job_name_and_outputs_are_per_run_and_stable_per_task():
    assert job_name("run-a", "train") == job_name("run-a", "train")  # a retry finds its job
    assert job_name("run-a", "train") != job_name("run-b", "train")
    assert len(job_name("x" * 200, "train")) <= 40
    cs = ClusterSpec()
    assert run_paths(cs, "run-a").out != run_paths(cs, "run-b").out
    with pytest.raises(ValueError, match="run id"):
        run_paths(cs, "")


def test_config_from_parameters():
    scaled = train_config_from_params("sana_wm_2b6", 1000, lr=2e-5, checkpoint_every=100)
    assert scaled.total_steps == 1000 and len(scaled.stages) == 4
    assert [s.latent_frames for s in scaled.stages] == [s.latent_frames for s in paper_stages()]
    assert {s.lr for s in scaled.stages} == {2e-5} and scaled.checkpoint_every == 100 and scaled.deepspeed
    small = train_config_from_params("small", 300)
    assert small.total_steps == 300 and len(small.stages) == 1
    explicit = train_config_from_params("small", 300, stages_json=json.dumps(
        [{"latent_frames": 3, "steps": 7, "batch_size": 1, "lr": 1e-4},
         {"latent_frames": 5, "steps": 9, "batch_size": 1, "lr": 5e-5}]))
    assert explicit.stages == (StageConfig(3, 7, 1, 1e-4), StageConfig(5, 9, 1, 5e-5))
    for bad, match in ((dict(preset="small", steps=0), "one stage"), (dict(preset="small", steps=5, lr=-1), "lr"),
                       (dict(preset="sana_wm_2b6", steps=3), "cannot cover"),
                       (dict(preset="small", steps=5, stages_json="{}"), "JSON list")):
        with pytest.raises(ValueError, match=match):
            train_config_from_params(**bad)


def test_unknown_field_is_rejected():
    _, obj = _render()
    obj["spec"]["trainer"]["numNode"] = 8  # typo: the schema would silently drop it
    with pytest.raises(ValueError, match="spec.trainer.numNode"):
        validate_trainjob(obj)
    _, obj = _render()
    obj["spec"]["trainer"]["numNodes"] = "eight"
    with pytest.raises(ValueError, match="invalid"):
        validate_trainjob(obj)


def test_bad_cluster_spec_and_non_deepspeed_config():
    with pytest.raises(ValueError, match="DNS-1123"):
        ClusterSpec(namespace="Bad_NS")
    with pytest.raises(ValueError, match="gpus_per_node"):
        ClusterSpec(gpus_per_node=0)
    with pytest.raises(ValueError, match="deepspeed"):
        build_request(TrainConfig(preset="tiny"), ClusterSpec(), name="x", paths=run_paths(ClusterSpec(), "r"))
    assert ClusterSpec.from_dict(json.loads(json.dumps(ClusterSpec().to_dict()))) == ClusterSpec()
    with pytest.raises(ValueError, match="unknown keys"):
        ClusterSpec.from_dict({"gpus": 8})
