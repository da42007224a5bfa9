"""Compiled KFP IR of the cluster form, read as an operator would deploy it: DAG edges, GPU requests, node
selectors, PVC, tracking env, security context, parameter descriptions, and the TrainJob the train
launcher would submit for the IR's parameters (rebuilt from the IR alone, through the kubeflow SDK)."""

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
    assert "train" not in GPU_STEPS  # its GPUs belong to the TrainJob; the task only launches it
    for name, t in tasks:
        ex = t["componentRef"]["name"].replace("comp-", "exec-")
        res = executors[ex]["container"].get("resources", {})
        assert res["resourceCpuLimit"] and res["resourceMemoryLimit"] and res["resourceCpuRequest"], name
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


def _executor(docs, task):
    return task["componentRef"]["name"].replace("comp-", "exec-")


def test_every_task_gets_the_tracking_uri_and_runs_non_root(compiled):
    for fname, docs in compiled.items():
        k8s = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        executors = docs[0]["deploymentSpec"]["executors"]
        for name, t in _container_tasks(docs):
            if "importer" in executors[_executor(docs, t)]:
                continue  # run by KFP itself, not one of our containers
            cfg = k8s[_executor(docs, t)]
            (env,) = cfg["configMapAsEnv"]
            assert env["configMapName"] == "sana-wm-tracking" and not env["optional"], (fname, name)
            assert env["keyToEnv"] == [{"configMapKey": "MLFLOW_TRACKING_URI", "envVar": "MLFLOW_TRACKING_URI"}]
            sc = cfg["securityContext"]
            assert sc["runAsNonRoot"] is True and int(sc["runAsUser"]) > 0, (fname, name)


def test_every_pipeline_parameter_is_described(compiled):
    for fname, docs in compiled.items():
        for pname, spec in docs[0]["root"]["inputDefinitions"]["parameters"].items():
            assert len(spec.get("description", "")) > 10, (fname, pname)


@pytest.mark.parametrize("fname", ["sana-wm-full-v9.9.9+gabc1234.yaml", "sana-wm-train-to-serve-v9.9.9+gabc1234.yaml"])
def test_serving_capacity_is_a_run_parameter_the_deploy_task_reads(compiled, fname):
    from components.common.defaults import default

    docs = compiled[fname]
    root = docs[0]["root"]["inputDefinitions"]["parameters"]
    wired = {"device": ("serve_device", "deploy.device"), "instance_count": ("serve_instances", "deploy.instance_count"),
             "max_sessions_per_instance": ("serve_max_sessions", "deploy.max_sessions_per_instance")}
    inputs = _tasks(docs)["deploy"]["inputs"]["parameters"]
    for arg, (param, key) in wired.items():
        assert inputs[arg] == {"componentInputParameter": param}, arg  # the UI's value, not a compiled constant
        assert root[param]["defaultValue"] == default(key)
    command = json.dumps(docs[0]["deploymentSpec"]["executors"]["exec-deploy"]["container"])
    for flag in ("--device", "--instance-count", "--max-sessions-per-instance"):
        assert flag in command  # the component body hands them to the CLI

def test_train_is_a_retried_cpu_launcher(compiled):
    docs = compiled["sana-wm-full-v9.9.9+gabc1234.yaml"]
    task = _tasks(docs)["train"]
    res = docs[0]["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert "accelerator" not in res and res["resourceCpuLimit"] == "2"
    k8s = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert "nodeSelector" not in k8s
    assert task["retryPolicy"]["maxRetryCount"] >= 1
    params = task["inputs"]["parameters"]
    assert params["cluster"]["runtimeValue"]["constant"] is True
    # named after the run and the task, resolved by KFP at run time: a retry re-attaches
    assert params["kfp_run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert params["kfp_task_name"]["runtimeValue"]["constant"] == "{{$.pipeline_task_name}}"


def trainjob_from_ir(docs, arguments=None, run_id="7d7c0c1e-run", task_name="train"):
    """The TrainJob the train task of this IR submits for a run with ``arguments`` (as the launcher does)."""
    from components.train.launcher import plan
    from components.train.trainjob import render_trainjob

    root = docs[0]["root"]["inputDefinitions"]["parameters"]
    values = {}
    for key, spec in _tasks(docs)["train"]["inputs"]["parameters"].items():
        if "componentInputParameter" in spec:
            p = spec["componentInputParameter"]
            values[key] = (arguments or {}).get(p, root[p].get("defaultValue"))
        else:
            values[key] = spec["runtimeValue"]["constant"]
    placeholders = {"{{$.pipeline_job_uuid}}": run_id, "{{$.pipeline_task_name}}": task_name}
    values = {k: placeholders.get(v, v) if isinstance(v, str) else v for k, v in values.items()}
    req = plan(preset=values["preset"], steps=int(values["steps"]), lr=float(values["lr"]),
               checkpoint_every=int(values["checkpoint_every"]), stages_json=values["stages_json"],
               cluster_json=values["cluster_spec"], kfp_run_id=values["kfp_run_id"],
               kfp_task_name=values["kfp_task_name"], tracking={"MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    return render_trainjob(req)


@pytest.mark.parametrize("arguments", [None, {"preset": "sana_wm_2b6", "steps": 1200, "checkpoint_every": 100},
                                       {"preset": "small", "steps": 300, "lr": 3e-4},
                                       {"stages_json": json.dumps([{"latent_frames": 3, "steps": 40},
                                                                   {"latent_frames": 6, "steps": 60}])}])
def test_trainjob_trains_what_the_pipeline_parameters_say(compiled, arguments):
    from components.train.config import paper_stages
    from components.train.trainjob import trainer_config, trainer_pod_spec, validate_trainjob

    docs = compiled["sana-wm-full-v9.9.9+gabc1234.yaml"]
    job = trainjob_from_ir(docs, arguments)
    validate_trainjob(job)  # Trainer v1alpha1 models, nothing dropped
    cfg = trainer_config(job)
    args = arguments or {}
    root = docs[0]["root"]["inputDefinitions"]["parameters"]
    assert cfg.preset == args.get("preset", root["preset"]["defaultValue"])
    assert cfg.checkpoint_every == args.get("checkpoint_every", root["checkpoint_every"]["defaultValue"])
    if "stages_json" in args:
        assert [(s.latent_frames, s.steps) for s in cfg.stages] == [(3, 40), (6, 60)]
    elif cfg.preset == "sana_wm_2b6":
        assert [s.latent_frames for s in cfg.stages] == [s.latent_frames for s in paper_stages()]
        want = args.get("steps") or sum(s.steps for s in paper_stages())
        assert cfg.total_steps == want
    else:
        assert len(cfg.stages) == 1 and cfg.total_steps == args["steps"] and cfg.stages[0].lr == args["lr"]
    tr = job["spec"]["trainer"]
    assert tr["args"][tr["args"].index("--steps") + 1] == str(cfg.total_steps)
    assert job["spec"]["runtimeRef"]["name"] == "torch-distributed" and tr["command"][0] == "torchrun"
    assert tr["numNodes"] == 8 and tr["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 8
    pod = trainer_pod_spec(job)
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "sana-wm-data"}} in pod["volumes"]
    assert {"name": "data", "mountPath": "/data"} in pod["containers"][0]["volumeMounts"]
    assert tr["args"][tr["args"].index("--out") + 1] == "/data/runs/7d7c0c1e-run/teacher"  # per KFP run
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"} in tr["env"]


def test_cluster_defaults_are_the_paper_schedule_and_local_defaults_stay_small(compiled):
    root = compiled["sana-wm-full-v9.9.9+gabc1234.yaml"][0]["root"]["inputDefinitions"]["parameters"]
    assert root["preset"]["defaultValue"] == "sana_wm_2b6" and root["steps"]["defaultValue"] == 0
    import tempfile
    from pathlib import Path

    from kfp import compiler

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.yaml"
        compiler.Compiler().compile(build_pipeline("full"), str(p))
        local = yaml.safe_load(p.read_text())["root"]["inputDefinitions"]["parameters"]
    from components.common.defaults import default

    assert local["preset"]["defaultValue"] == "small" and local["steps"]["defaultValue"] == default("train.steps")
    assert local["init_bundle"]["defaultValue"] == default("train.init")
    assert root["init_bundle"]["defaultValue"] == ""  # the local base bundle is not the cluster's default


def test_local_form_has_no_kubernetes_parts():
    import tempfile
    from pathlib import Path

    from kfp import compiler

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.yaml"
        compiler.Compiler().compile(build_pipeline("full"), str(p))
        docs = list(yaml.safe_load_all(p.read_text()))
    assert len(docs) == 1  # no platform (Kubernetes) document
    params = _tasks(docs)["train"]["inputs"]["parameters"]
    assert "cluster" not in params  # the component default (False): train in the task's own process
    assert docs[0]["components"]["comp-train"]["inputDefinitions"]["parameters"]["cluster"]["defaultValue"] is False


def test_unknown_pipeline_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown pipeline 'nope'"):
        build_pipeline("nope")
