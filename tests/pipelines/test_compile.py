"""Compiled KFP IR of the cluster form: DAG edges, GPU requests, node selectors, PVC, the TrainJob spec."""

from __future__ import annotations

import json

import pytest
import yaml

from pipelines.cluster import default_settings
from pipelines.compile import compile_all
from pipelines.dags import GPU_STEPS, PipelineMeta, build_pipeline

FULL_EDGES = {("annotate", "ingest"), ("train", "annotate"), ("distill", "train"), ("distill", "annotate"),
              ("quantize", "distill"), ("quantize", "annotate"), ("evaluate", "quantize"),
              ("evaluate", "annotate"), ("register", "evaluate"),
              ("register", "quantize"), ("deploy", "register")}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("ir")
    paths = compile_all(out, default_settings(), PipelineMeta(version="9.9.9", git_sha="abc1234"))
    return {p.name: list(yaml.safe_load_all(p.read_text())) for p in paths}


def _tasks(docs):
    return docs[0]["root"]["dag"]["tasks"]


def test_versioned_file_names_and_description(compiled):
    assert sorted(compiled) == ["sana-wm-data-v9.9.9+gabc1234.yaml", "sana-wm-full-v9.9.9+gabc1234.yaml",
                                "sana-wm-train-to-serve-v9.9.9+gabc1234.yaml"]
    info = compiled["sana-wm-full-v9.9.9+gabc1234.yaml"][0]["pipelineInfo"]
    assert "9.9.9" in info["description"] and "abc1234" in info["description"]
    assert "v9.9.9+gabc1234" in info["displayName"]


def test_full_dag_edges(compiled):
    tasks = _tasks(compiled["sana-wm-full-v9.9.9+gabc1234.yaml"])
    edges = set()
    for name, t in tasks.items():
        for inp in t.get("inputs", {}).get("artifacts", {}).values():
            edges.add((name, inp["taskOutputArtifact"]["producerTask"]))
        for inp in t.get("inputs", {}).get("parameters", {}).values():
            if "taskOutputParameter" in inp:
                edges.add((name, inp["taskOutputParameter"]["producerTask"]))
    assert edges == FULL_EDGES


def test_gpu_node_selector_and_pvc_per_task(compiled):
    docs = compiled["sana-wm-full-v9.9.9+gabc1234.yaml"]
    executors = docs[0]["deploymentSpec"]["executors"]
    k8s = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    tasks = _tasks(docs)
    for name, t in tasks.items():
        ex = t["componentRef"]["name"].replace("comp-", "exec-")
        res = executors[ex]["container"].get("resources", {})
        if name in GPU_STEPS:
            assert res["accelerator"]["resourceType"] == "nvidia.com/gpu"
            assert res["accelerator"]["resourceCount"] == "1"
            assert k8s[ex]["nodeSelector"]["labels"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        else:
            assert "accelerator" not in res and "nodeSelector" not in k8s[ex]
        assert k8s[ex]["pvcMount"][0]["mountPath"] == "/data"
        assert executors[ex]["container"]["image"].endswith(":" + __import__("components.common.paths",
                                                                             fromlist=["x"]).PACKAGE_VERSION)


def test_trainjob_spec_is_in_the_ir(compiled):
    tasks = _tasks(compiled["sana-wm-full-v9.9.9+gabc1234.yaml"])
    params = tasks["train"]["inputs"]["parameters"]
    assert params["cluster"]["runtimeValue"]["constant"] is True
    job = json.loads(params["trainjob_spec"]["runtimeValue"]["constant"])
    assert job["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and job["kind"] == "TrainJob"
    trainer = job["spec"]["trainer"]
    assert job["spec"]["runtimeRef"]["name"] == "deepspeed-distributed"
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (8, 8)
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"


def test_local_form_has_no_kubernetes_parts():
    import tempfile
    from pathlib import Path

    from kfp import compiler

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.yaml"
        compiler.Compiler().compile(build_pipeline("full"), str(p))
        docs = list(yaml.safe_load_all(p.read_text()))
    assert len(docs) == 1  # no platform (Kubernetes) document
    assert "false" in json.dumps(_tasks(docs)["train"]["inputs"]["parameters"]["cluster"]).lower()


def test_unknown_pipeline_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown pipeline 'nope'"):
        build_pipeline("nope")
