"""TrainJob for the cluster: validated by kubeflow_trainer_api's pydantic models, submitted via CustomObjectsApi."""

from __future__ import annotations

import json

import pytest

from components.train.config import TrainConfig, default_train_config
from components.train.trainjob import ClusterSpec, build_trainjob, submit_trainjob, validate_trainjob


def _job():
    cfg = default_train_config("sana_wm_2b6", 1, deepspeed=True, zero_stage=3)
    return cfg, build_trainjob(cfg, ClusterSpec())


def test_trainjob_validates_with_trainer_api_models():
    cfg, obj = _job()
    model = validate_trainjob(obj)
    assert model.api_version == "trainer.kubeflow.org/v1alpha1" and model.kind == "TrainJob"
    tr = model.spec.trainer
    assert tr.num_nodes == 8 and tr.num_proc_per_node == 8
    assert model.spec.runtime_ref.name == "deepspeed-distributed"
    assert tr.resources_per_node.limits["nvidia.com/gpu"].actual_instance == "8"
    # the pods train exactly the planned config
    i = tr.args.index("--train-config-json")
    assert TrainConfig.from_dict(json.loads(tr.args[i + 1])) == cfg
    assert tr.args[tr.args.index("--zero-stage") + 1] == "3"


def test_unknown_field_is_rejected():
    _, obj = _job()
    obj["spec"]["trainer"]["numNode"] = 8  # typo: the schema would silently drop it
    with pytest.raises(ValueError, match="spec.trainer.numNode"):
        validate_trainjob(obj)
    _, obj = _job()
    obj["spec"]["trainer"]["numNodes"] = "eight"
    with pytest.raises(ValueError, match="invalid"):
        validate_trainjob(obj)


def test_bad_cluster_spec_and_non_deepspeed_config():
    with pytest.raises(ValueError, match="DNS-1123"):
        ClusterSpec(name="Bad_Name")
    with pytest.raises(ValueError, match="deepspeed"):
        build_trainjob(default_train_config("tiny", 1), ClusterSpec())


def test_submit_calls_custom_objects_api():
    _, obj = _job()

    class RecordingApi:  # stands in for the API server only; the call shape is what we check
        def __init__(self):
            self.calls = []

        def create_namespaced_custom_object(self, **kw):
            self.calls.append(kw)
            return kw["body"]

    api = RecordingApi()
    assert submit_trainjob(obj, api=api) is obj
    (call,) = api.calls
    assert call == {"group": "trainer.kubeflow.org", "version": "v1alpha1", "namespace": "sana-wm",
                    "plural": "trainjobs", "body": obj}
    from kubernetes.client import CustomObjectsApi

    assert hasattr(CustomObjectsApi, "create_namespaced_custom_object")
