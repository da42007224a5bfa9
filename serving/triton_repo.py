"""Write a Triton model repository that serves a model bundle through the Python backend.

Layout (standard; the same repository runs in NVIDIA's tritonserver image)::

    <repo>/<name>/config.pbtxt     backend "python", named typed tensors, parameters -> bundle
    <repo>/<name>/1/model.py       serving/adapters/triton_python_model.py, copied verbatim

config.pbtxt is built as a ``inference.ModelConfig`` protobuf (tritonclient ships the schema) and
printed with ``text_format``, so it is valid by construction rather than by string formatting.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from serving.adapters import PYTHON_MODEL_TEMPLATE
from serving.predictor import DEFAULT_LOADER, MODES

# The project checkout holding the `serving` and `model` packages; model.py puts it first on sys.path.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _bundle_hw(bundle_dir: Path) -> tuple[int, int]:
    """(H, W) the bundle generates, read from its ``config.json`` (a ``WorldModelConfig`` dict)."""
    from model.config import WorldModelConfig

    cfg_path = bundle_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"model bundle {bundle_dir} has no config.json (not a save_pretrained bundle?)")
    cfg = WorldModelConfig.from_dict(json.loads(cfg_path.read_text()))
    return cfg.video_height, cfg.video_width


def model_config(
    name: str,
    height: int,
    width: int,
    parameters: dict[str, str],
) -> mc.ModelConfig:
    """The ModelConfig proto: IMAGE [H,W,3] u8, C2W [-1,4,4] f32, INTRINSICS [-1,3,3] f32, SEED [1] i64,
    NUM_FRAMES [1] i32, optional MODE [1] bytes -> VIDEO [-1,H,W,3] u8; one CPU instance; no batching."""
    cfg = mc.ModelConfig(name=name, backend="python", max_batch_size=0)
    for tname, dtype, dims, optional in (
        ("IMAGE", mc.TYPE_UINT8, [height, width, 3], False),
        ("C2W", mc.TYPE_FP32, [-1, 4, 4], False),
        ("INTRINSICS", mc.TYPE_FP32, [-1, 3, 3], False),
        ("SEED", mc.TYPE_INT64, [1], False),
        ("NUM_FRAMES", mc.TYPE_INT32, [1], False),
        ("MODE", mc.TYPE_STRING, [1], True),  # TYPE_STRING is Triton's BYTES
    ):
        cfg.input.add(name=tname, data_type=dtype, dims=dims, optional=optional)
    cfg.output.add(name="VIDEO", data_type=mc.TYPE_UINT8, dims=[-1, height, width, 3])
    # One CPU instance: generation saturates the cores; more instances would only contend.
    cfg.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    for key, value in parameters.items():
        cfg.parameters[key].string_value = value
    return cfg


def build_repository(
    bundle_dir: str | Path,
    repo_dir: str | Path,
    model_name: str = "sana_wm",
    max_frames: int = 65,
    device: str = "cpu",
    default_mode: str = "streaming",
    num_steps: int | None = None,
    loader: str = DEFAULT_LOADER,
    project_root: str | Path = PROJECT_ROOT,
) -> Path:
    """Write ``<repo_dir>/<model_name>/{config.pbtxt, 1/model.py}`` serving ``bundle_dir``; return repo_dir.

    The model directory is assembled beside ``repo_dir`` and renamed into place, so a server scanning
    the repository never sees a half-written model; an existing model of the same name is replaced.
    ``project_root`` is where the adapter finds the ``serving``/``model`` packages ("" = installed ones).
    """
    bundle_dir = Path(bundle_dir).resolve()
    repo_dir = Path(repo_dir).resolve()
    if not bundle_dir.is_dir():
        raise FileNotFoundError(f"model bundle directory not found: {bundle_dir}")
    if not model_name or "/" in model_name or model_name.startswith("."):
        raise ValueError(f"model_name must be a plain directory name, got {model_name!r}")
    if default_mode not in MODES:
        raise ValueError(f"default_mode must be one of {MODES}, got {default_mode!r}")
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    height, width = _bundle_hw(bundle_dir)

    params = {
        "repo_root": str(Path(project_root).resolve()) if project_root else "",
        "bundle_dir": str(bundle_dir),
        "max_frames": str(max_frames),
        "device": device,
        "default_mode": default_mode,
        "num_steps": "" if num_steps is None else str(num_steps),
        "loader": loader,
    }
    cfg = model_config(model_name, height, width, params)

    repo_dir.mkdir(parents=True, exist_ok=True)
    # Staged outside repo_dir (Triton would try to load any directory inside it) on the same filesystem.
    tmp = Path(tempfile.mkdtemp(dir=repo_dir.parent, prefix=f".{repo_dir.name}.{model_name}.tmp-"))
    try:
        (tmp / "config.pbtxt").write_text(text_format.MessageToString(cfg))
        (tmp / "1").mkdir()
        shutil.copyfile(PYTHON_MODEL_TEMPLATE, tmp / "1" / "model.py")
        target = repo_dir / model_name
        old = None
        if target.exists():
            old = repo_dir.parent / f".{repo_dir.name}.{model_name}.old-{os.getpid()}"
            os.rename(target, old)
        os.rename(tmp, target)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return repo_dir


def read_model_config(model_dir: str | Path) -> mc.ModelConfig:
    """Parse ``<model_dir>/config.pbtxt`` into a ModelConfig proto (raises on any invalid field)."""
    return text_format.Parse(Path(model_dir, "config.pbtxt").read_text(), mc.ModelConfig())
