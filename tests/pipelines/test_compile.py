"""Compiled KFP IR of the cluster form: DAG edges, GPU requests, node selectors, PVC, the TrainJob spec."""

from __future__ import annotations

import json

import pytest
import yaml

from pipelines.cluster import default_settings
from pipelines.compile import compile_all
from pipelines.dags import GPU_STEPS, PipelineMeta, build_pipeline

# Annotation fans out: annotate-plan -> for-loop-1 (a sub-DAG of annotate-group tasks) -> annotate-merge,
# whose shards training reads. The held-out split is ingest-2 -> annotate (one batch task), read only by
# evaluate; the vae step fits on the training shards and train encodes with it.
FULL_EDGES = {("annotate-plan", "ingest"), ("for-loop-1", "annotate-plan"), ("for-loop-1", "ingest"),
              ("annotate-merge", "for-loop-1"), ("annotate", "ingest-2"),
              ("vae", "annotate-merge"), ("train", "vae"),
              ("train", "annotate-merge"), ("distill", "train"), ("distill", "annotate-merge"),
              ("quantize", "distill"), ("quantize", "annotate-merge"), ("evaluate", "quantize"),
              ("evaluate", "annotate"), ("evaluate", "train"), ("evaluate", "distill"), ("register", "evaluate"),
              ("register", "quantize"), ("deploy", "register")}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("ir")
    paths = compile_all(out, default_settings(), PipelineMeta(version="9.9.9", git_sha="abc1234"))
    return {p.name: list(yaml.safe_load_all(p.read_text())) for p in paths}


def _tasks(docs):
    return docs[0]["root"]["dag"]["tasks"]


def _container_tasks(docs):
    """(name, task) of every task that runs a container, including those inside ParallelFor sub-DAGs."""
    comps = docs[0]["components"]
    stack, out = [_tasks(docs)], []
    while stack:
        for name, t in stack.pop().items():
            comp = comps[t["componentRef"]["name"]]
            if "dag" in comp:
                stack.append(comp["dag"]["tasks"])
            else:
                out.append((name, t))
    return out


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
    tasks = _container_tasks(docs)
    assert {"annotate-plan", "annotate-group", "annotate-merge"} <= {name for name, _ in tasks}
    for name, t in tasks:
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


@pytest.mark.parametrize("name", ["data", "full"])
def test_annotate_fans_out_over_a_parallel_for(compiled, name):
    docs = compiled[f"sana-wm-{name}-v9.9.9+gabc1234.yaml"]
    tasks, comps = _tasks(docs), docs[0]["components"]
    loop = tasks["for-loop-1"]
    # The loop iterates over the plan's list output, at most the cluster's parallelism at once.
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--annotate-plan-Output"
    assert loop["inputs"]["parameters"]["pipelinechannel--annotate-plan-Output"]["taskOutputParameter"] == {
        "outputParameterKey": "Output", "producerTask": "annotate-plan"}
    assert loop["iteratorPolicy"]["parallelismLimit"] == default_settings().annotate_parallelism
    assert comps["comp-annotate-plan"]["outputDefinitions"]["parameters"]["Output"]["parameterType"] == "LIST"
    # Inside: one annotate-group per item, fed the loop item as its clip ids.
    body = comps[loop["componentRef"]["name"]]["dag"]
    group = body["tasks"]["annotate-group"]
    assert group["inputs"]["parameters"]["ids"]["componentInputParameter"].endswith("-loop-item")
    assert group["inputs"]["parameters"]["workers"]["runtimeValue"]["constant"] == default_settings().annotate_workers
    # Collected: the loop exposes the groups' shards as one artifact list, which the merge consumes.
    (key,) = body["outputs"]["artifacts"]
    assert body["outputs"]["artifacts"][key]["artifactSelectors"] == [
        {"outputArtifactKey": "shards", "producerSubtask": "annotate-group"}]
    assert comps[loop["componentRef"]["name"]]["outputDefinitions"]["artifacts"][key]["isArtifactList"] is True
    merge = tasks["annotate-merge"]
    assert merge["inputs"]["artifacts"]["parts"]["taskOutputArtifact"] == {
        "outputArtifactKey": key, "producerTask": "for-loop-1"}
    assert comps["comp-annotate-merge"]["inputDefinitions"]["artifacts"]["parts"]["isArtifactList"] is True
    assert merge["taskInfo"]["name"] == "annotate"  # the UI still shows one "annotate" step with the shards
    root_params = docs[0]["root"]["inputDefinitions"]["parameters"]
    assert root_params["annotate_groups"]["defaultValue"] == 2
    assert tasks["annotate-plan"]["inputs"]["parameters"]["groups"] == {"componentInputParameter": "annotate_groups"}


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
