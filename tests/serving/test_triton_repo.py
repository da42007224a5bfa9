"""The model repository: config.pbtxt parses as Triton's ModelConfig with the contract's tensors."""

from __future__ import annotations

import ast

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from serving.adapters import PYTHON_MODEL_TEMPLATE
from serving.triton_repo import build_repository, read_model_config
from tests.serving.conftest import H, W


@pytest.fixture()
def repo(bundle, tmp_path):
    bundle_dir, loader = bundle
    return build_repository(bundle_dir, tmp_path / "repo", model_name="wm", max_frames=9, loader=loader)


def test_config_pbtxt_declares_the_contract_tensors(repo, bundle):
    cfg = read_model_config(repo / "wm")  # text_format.Parse: fails on any unknown field or bad enum
    assert (cfg.name, cfg.backend, cfg.max_batch_size) == ("wm", "python", 0)
    inputs = {t.name: (t.data_type, list(t.dims), t.optional) for t in cfg.input}
    assert inputs == {
        "IMAGE": (mc.TYPE_UINT8, [H, W, 3], False),
        "C2W": (mc.TYPE_FP32, [-1, 4, 4], False),
        "INTRINSICS": (mc.TYPE_FP32, [-1, 3, 3], False),
        "SEED": (mc.TYPE_INT64, [1], False),
        "NUM_FRAMES": (mc.TYPE_INT32, [1], False),
        "MODE": (mc.TYPE_STRING, [1], True),
    }
    assert [(t.name, t.data_type, list(t.dims)) for t in cfg.output] == [("VIDEO", mc.TYPE_UINT8, [-1, H, W, 3])]
    assert [(g.kind, g.count) for g in cfg.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 1)]
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params["bundle_dir"] == str(bundle[0].resolve())
    assert params["max_frames"] == "9"


def test_model_py_is_the_adapter_with_the_backend_entry_points(repo):
    source = (repo / "wm" / "1" / "model.py").read_text()
    assert source == PYTHON_MODEL_TEMPLATE.read_text()
    classes = {n.name: n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)}
    methods = {f.name for f in classes["TritonPythonModel"].body if isinstance(f, ast.FunctionDef)}
    assert {"initialize", "execute", "finalize"} <= methods


def test_rebuild_replaces_in_place_and_leaves_no_staging_dirs(repo, bundle):
    bundle_dir, loader = bundle
    build_repository(bundle_dir, repo, model_name="wm", max_frames=5, loader=loader)
    assert read_model_config(repo / "wm").parameters["max_frames"].string_value == "5"
    assert sorted(p.name for p in repo.iterdir()) == ["wm"]
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
