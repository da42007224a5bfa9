"""The model repository: config.pbtxt parses as Triton's ModelConfig with the contract's tensors."""

from __future__ import annotations

import ast
import shutil

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from serving.adapters import BOOTSTRAP, PYTHON_MODEL_TEMPLATE, SESSION_MODEL_TEMPLATE, STREAM_MODEL_TEMPLATE
from serving.triton_repo import PlacementError, build_repository, placement, read_model_config
from tests.serving.conftest import H, W


@pytest.fixture()
def repo(bundle, tmp_path):
    bundle_dir, loader = bundle
    return build_repository(bundle_dir, tmp_path / "repo", model_name="wm", max_video_frames=9, loader=loader,
                            max_sessions=3, spare_slots=2, idle_timeout_s=30)


ONESHOT_INPUTS = {
    "IMAGE": (mc.TYPE_UINT8, [H, W, 3], False),
    "C2W": (mc.TYPE_FP32, [-1, 4, 4], False),
    "INTRINSICS": (mc.TYPE_FP32, [-1, 3, 3], False),
    "SEED": (mc.TYPE_INT64, [1], False),
    "NUM_FRAMES": (mc.TYPE_INT32, [1], True),  # optional now; the adapter rejects a disagreeing one
    "MODE": (mc.TYPE_STRING, [1], True),
}


def _inputs(cfg):
    return {t.name: (t.data_type, list(t.dims), t.optional) for t in cfg.input}


def test_video_model_declares_the_contract_tensors(repo, bundle):
    cfg = read_model_config(repo / "wm_video")  # text_format.Parse: fails on any unknown field or bad enum
    assert (cfg.name, cfg.backend, cfg.max_batch_size) == ("wm_video", "python", 0)
    assert _inputs(cfg) == ONESHOT_INPUTS
    assert [(t.name, t.data_type, list(t.dims)) for t in cfg.output] == [("VIDEO", mc.TYPE_UINT8, [-1, H, W, 3])]
    assert [(g.kind, g.count) for g in cfg.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 1)]
    assert not cfg.model_transaction_policy.decoupled
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params["bundle_dir"] == str(bundle[0].resolve())
    assert params["max_frames"] == "9"


def test_stream_model_is_decoupled_with_a_minute_cap(repo):
    cfg = read_model_config(repo / "wm")
    assert cfg.model_transaction_policy.decoupled and _inputs(cfg) == ONESHOT_INPUTS
    assert [t.name for t in cfg.output] == ["VIDEO", "CHUNK_INDEX"]
    # a minute at the tiny preset's 8 fps, on the 1 + 4k frame grid
    assert cfg.parameters["max_frames"].string_value == str(1 + 4 * (60 * 8 // 4))


def test_session_model_has_sequence_controls_and_slots_above_the_limit(repo):
    cfg = read_model_config(repo / "wm_session")
    assert cfg.max_batch_size == 0 and all(t.optional for t in cfg.input)
    assert {t.name for t in cfg.input} == {"IMAGE", "INTRINSICS", "SEED", "MODE", "PROMPT", "ACTION", "C2W"}
    assert [t.name for t in cfg.output] == ["FRAMES", "CHUNK_INDEX", "POSES"]
    sb = cfg.sequence_batching
    C = mc.ModelSequenceBatching.Control
    kinds = {c.name: c.control[0].kind for c in sb.control_input}
    assert kinds == {"START": C.CONTROL_SEQUENCE_START, "END": C.CONTROL_SEQUENCE_END,
                     "CORRID": C.CONTROL_SEQUENCE_CORRID}
    assert sb.oldest.max_candidate_sequences == 3 + 2  # limit + spare: a START past the limit reaches the model
    assert sb.max_sequence_idle_microseconds > 30_000_000  # Triton forgets a little after the model reaps
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert (params["max_sessions"], params["idle_timeout_s"]) == ("3", "30.0")
    assert (params["first_chunk_poses"], params["chunk_poses"]) == ("12", "12")


def test_model_py_are_the_adapters_with_the_backend_entry_points(repo):
    for name, template in (("wm", STREAM_MODEL_TEMPLATE), ("wm_video", PYTHON_MODEL_TEMPLATE),
                           ("wm_session", SESSION_MODEL_TEMPLATE)):
        source = (repo / name / "1" / "model.py").read_text()
        assert source == template.read_text()
        assert (repo / name / "1" / BOOTSTRAP.name).read_text() == BOOTSTRAP.read_text()
        classes = {n.name: n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)}
        methods = {f.name for f in classes["TritonPythonModel"].body if isinstance(f, ast.FunctionDef)}
        assert {"initialize", "execute", "finalize"} <= methods


def test_gpu_placement_and_instance_count(bundle, tmp_path):
    repo = build_repository(bundle[0], tmp_path / "gpu", device="cuda:1", instance_count=2, models=("session",))
    cfg = read_model_config(repo / "sana_wm_session")
    assert [(g.kind, g.count, list(g.gpus)) for g in cfg.instance_group] == [(mc.ModelInstanceGroup.KIND_GPU, 2, [1])]
    assert cfg.parameters["device"].string_value == "cuda:1"
    assert sorted(p.name for p in repo.iterdir()) == ["sana_wm_session"]


def test_rebuild_replaces_in_place_and_leaves_no_staging_dirs(repo, bundle):
    bundle_dir, loader = bundle
    build_repository(bundle_dir, repo, model_name="wm", max_video_frames=5, loader=loader)
    assert read_model_config(repo / "wm_video").parameters["max_frames"].string_value == "5"
    assert sorted(p.name for p in repo.iterdir()) == ["wm", "wm_session", "wm_video"]
    assert sorted(p.name for p in repo.parent.iterdir()) == ["repo"]  # no .tmp-/.old- leftovers


def test_bad_arguments_are_named(bundle, tmp_path):
    bundle_dir, _ = bundle
    with pytest.raises(FileNotFoundError, match="bundle directory not found"):
        build_repository(tmp_path / "nope", tmp_path / "repo")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        build_repository(tmp_path, tmp_path / "repo")
    with pytest.raises(ValueError, match="model_name"):
        build_repository(bundle_dir, tmp_path / "repo", model_name="a/b")
    with pytest.raises(ValueError, match="max_frames"):
        build_repository(bundle_dir, tmp_path / "repo", max_frames=0)
    with pytest.raises(ValueError, match="spare_slots must be >= 1"):
        build_repository(bundle_dir, tmp_path / "repo", spare_slots=0)
    with pytest.raises(ValueError, match="device must be"):
        build_repository(bundle_dir, tmp_path / "repo", device="tpu")
    with pytest.raises(ValueError, match="models must be"):
        build_repository(bundle_dir, tmp_path / "repo", models=("ensemble",))


def test_session_limit_is_per_instance_and_slots_stay_above_it(bundle, tmp_path):
    repo = build_repository(bundle[0], tmp_path / "r", models=("session",), instance_count=3, max_sessions=2,
                            spare_slots=1)
    cfg = read_model_config(repo / "sana_wm_session")
    assert [(g.kind, g.count) for g in cfg.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 3)]
    # max_candidate_sequences counts per instance, as the per-instance session limit does
    assert cfg.sequence_batching.oldest.max_candidate_sequences == 2 + 1
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert (params["max_sessions"], params["instance_count"], params["max_live_sessions"]) == ("2", "3", "6")


# --- placement: a quantized bundle is served where it was built --------------------------------------

def _quantized(bundle_dir, tmp_path, built_on):
    """A copy of the tiny bundle with the quantize step's ``quant/quant.json`` (config generation reads
    only that record, never the ModelOpt weights). ``built_on=None``: a bundle from before the record."""
    from model.atomic import write_json

    out = tmp_path / f"q-{built_on}"
    shutil.copytree(bundle_dir, out)
    record = {"mode": "qkv", "hadamard": False, "seed": 0}
    write_json(out / "quant" / "quant.json", record if built_on is None else {**record, "built_on": built_on})
    return out


def _placed(repo):
    cfg = read_model_config(repo / "sana_wm_session")
    return [(g.kind, list(g.gpus)) for g in cfg.instance_group], cfg.parameters["device"].string_value


@pytest.mark.parametrize("built_on", ["cpu", None])
def test_cpu_built_nvfp4_bundle_is_served_on_cpu_instances(bundle, tmp_path, built_on):
    q = _quantized(bundle[0], tmp_path, built_on)
    for device in (None, "auto", "cpu"):  # even on a host with CUDA, "auto" keeps the CPU reference there
        repo = build_repository(q, tmp_path / f"r-{device}", models=("session",), device=device, cuda_available=True)
        assert _placed(repo) == ([(mc.ModelInstanceGroup.KIND_CPU, [])], "cpu")
    with pytest.raises(PlacementError, match="was built on cpu and is served where it was built, not on "
                                             "device='cuda'"):
        build_repository(q, tmp_path / "r-gpu", device="cuda", cuda_available=True)
    assert not (tmp_path / "r-gpu").exists()  # refused before anything was written


def test_cuda_built_nvfp4_bundle_gets_gpu_instances_on_a_cuda_host(bundle, tmp_path):
    q = _quantized(bundle[0], tmp_path, "cuda")
    repo = build_repository(q, tmp_path / "r", models=("session",), cuda_available=True)
    assert _placed(repo) == ([(mc.ModelInstanceGroup.KIND_GPU, [])], "cuda")
    repo = build_repository(q, tmp_path / "r1", models=("session",), device="cuda:1", cuda_available=True)
    assert _placed(repo) == ([(mc.ModelInstanceGroup.KIND_GPU, [1])], "cuda:1")
    with pytest.raises(PlacementError, match="built on cuda .* not on device='cpu'"):
        build_repository(q, tmp_path / "r2", device="cpu", cuda_available=True)


def test_cuda_built_nvfp4_bundle_is_refused_on_a_host_without_cuda(bundle, tmp_path):
    q = _quantized(bundle[0], tmp_path, "cuda")
    for device in (None, "auto", "cuda"):
        with pytest.raises(PlacementError, match="was built on CUDA .* this host has no CUDA device"):
            build_repository(q, tmp_path / "r", device=device, cuda_available=False)
    assert not (tmp_path / "r").exists()
    import torch

    if not torch.cuda.is_available():  # the real probe on this host gives the same answer
        with pytest.raises(PlacementError, match="this host has no CUDA device"):
            placement(q)


def test_an_unknown_build_record_is_named(bundle, tmp_path):
    q = _quantized(bundle[0], tmp_path, "tpu")
    with pytest.raises(ValueError, match="built_on must be one of .*'tpu'"):
        build_repository(q, tmp_path / "r")


def test_requests_and_sessions_sample_as_the_bundle_was_made(bundle, tmp_path):
    # A distilled student (quantized or not) serves its few-step sampler; a teacher its streaming sampler.
    # (The deploy once served the NVFP4 student with the teacher's 20-step sampler: 5x the work.)
    from model.pipeline import WorldModelPipeline, sampler_mode_of

    def modes(repo):
        video = read_model_config(repo / "sana_wm_video").parameters["default_mode"].string_value
        session = read_model_config(repo / "sana_wm_session").parameters["session_mode"].string_value
        return video, session

    models = ("video", "session")
    assert modes(build_repository(bundle[0], tmp_path / "t", models=models)) == ("streaming", "streaming")
    student = tmp_path / "student"
    WorldModelPipeline.from_pretrained(bundle[0]).save_pretrained(student, kind="student")
    assert modes(build_repository(student, tmp_path / "s", models=models)) == ("few_step", "few_step")
    assert modes(build_repository(student, tmp_path / "o", models=models, default_mode="streaming")) == (
        "streaming", "few_step")  # an explicit choice wins
    assert sampler_mode_of({"kind": "quantized", "info": {"source_kind": "student"}}) == "few_step"
    assert sampler_mode_of({"kind": "quantized", "info": {"source_kind": "teacher"}}) == "streaming"
    assert sampler_mode_of({"kind": "quantized", "info": {}}) == "few_step"  # the DAG quantizes the student
