"""Write a Triton model repository that serves a model bundle through the Python backend.

Layout (standard; the same repository runs in NVIDIA's tritonserver image)::

    <repo>/<name>/            decoupled one-shot model: one response per chunk (gRPC streaming)
    <repo>/<name>_video/      the same request answered with the whole video at once (HTTP route)
    <repo>/<name>_session/    stateful interactive sessions (sequence batching, state in the model)

each holding ``config.pbtxt`` (backend "python", named typed tensors, parameters -> bundle) and
``1/model.py`` (an adapter from ``serving/adapters``, copied verbatim, with ``sana_wm_bootstrap.py``).

config.pbtxt is built as a ``inference.ModelConfig`` protobuf (tritonclient ships the schema) and
printed with ``text_format``, so it is valid by construction rather than by string formatting.

Placement (``placement``): ``device="cuda[:i]"`` gives ``KIND_GPU`` instance groups (on GPU i), ``"cpu"``
``KIND_CPU``; ``"auto"`` picks CUDA when this machine has it. A quantized (NVFP4) bundle is served where
it was built (``model.quant.bundle.build_device``): a CUDA-built one on ``KIND_GPU`` -- refused on a host
without CUDA, since its ModelOpt kernels assert CUDA -- and the CPU fake-quant reference on ``KIND_CPU``;
a ``device`` naming the other kind is refused. With ``device=None`` the bundle decides (plain: CPU).

Sessions: ``instance_count`` instances per model. Each session instance is its own stub process with its
own sessions, holding at most ``max_sessions`` (per instance), so the server holds
``instance_count * max_sessions``; both numbers and the product are model parameters, for clients.
Triton gets ``max_sessions + spare_slots`` sequence slots per instance (``max_candidate_sequences`` is
per instance), so a START beyond an instance's limit reaches the model and is refused there instead of
evicting a live sequence (see ``adapters/triton_session_model.py``).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from serving.adapters import BOOTSTRAP, PYTHON_MODEL_TEMPLATE, SESSION_MODEL_TEMPLATE, STREAM_MODEL_TEMPLATE
from serving.predictor import DEFAULT_LOADER, MODES

# The project checkout holding the `serving` and `model` packages; model.py puts it first on sys.path.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
MODEL_KINDS = ("stream", "video", "session")
SUFFIX = {"stream": "", "video": "_video", "session": "_session"}
VIDEO_MAX_FRAMES = 65  # one HTTP response holds the whole raw video: keep it to seconds
STREAM_MAX_SECONDS = 60.0  # the decoupled model's cap: a minute of video, sent chunk by chunk


@dataclass(frozen=True)
class BundleInfo:
    """What the repository needs from the bundle's ``config.json``."""

    height: int
    width: int
    fps: float
    temporal_stride: int
    first_chunk_poses: int  # poses a session's START sends (frame 0 excluded)
    chunk_poses: int  # poses every later session request sends

    def minute_of_frames(self, seconds: float = STREAM_MAX_SECONDS) -> int:
        """The most raw frames of the form 1 + stride*k within ``seconds`` of video."""
        k = max(1, math.floor(seconds * self.fps / self.temporal_stride))
        return 1 + self.temporal_stride * k


def _bundle_info(bundle_dir: Path) -> BundleInfo:
    from model.config import WorldModelConfig

    cfg_path = bundle_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"model bundle {bundle_dir} has no config.json (not a save_pretrained bundle?)")
    cfg = WorldModelConfig.from_dict(json.loads(cfg_path.read_text()))
    ts = cfg.vae.temporal_stride
    return BundleInfo(cfg.video_height, cfg.video_width, float(cfg.fps), ts,
                      ts * (cfg.chunks.first_chunk_frames - 1), ts * cfg.chunks.chunk_frames)


def _bundle_hw(bundle_dir: Path) -> tuple[int, int]:
    """(H, W) the bundle generates, read from its ``config.json`` (a ``WorldModelConfig`` dict)."""
    info = _bundle_info(bundle_dir)
    return info.height, info.width


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU here, else ``cpu``; other values are checked and kept."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not (device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:<index>' or 'auto', got {device!r}")
    return device


class PlacementError(ValueError):
    """The bundle cannot be served on the requested device or on this host (the message says why)."""


def placement(bundle_dir: str | Path, device: str | None = None, cuda_available: bool | None = None) -> str:
    """The torch device the bundle's Triton instances run on (its kind is the instance-group kind).

    Args:
        bundle_dir: a model bundle; a quantized one records the device kind it was built on.
        device: ``cpu`` / ``cuda[:i]`` / ``auto``, or None: where the bundle belongs (a quantized bundle
            where it was built, a plain one on the CPU).
        cuda_available: whether this host has CUDA (None: ask torch); config generation needs no GPU.
    Raises:
        PlacementError: a CUDA-built quantized bundle on a host without CUDA, or a ``device`` of the
            other kind than the quantized bundle was built on.
    """
    from model.quant.bundle import build_device

    def has_cuda() -> bool:
        if cuda_available is not None:
            return cuda_available
        import torch

        return torch.cuda.is_available()

    built_on = build_device(bundle_dir)
    if built_on is None:  # plain bundle: the caller's choice
        if device is None:
            return "cpu"
        return ("cuda" if has_cuda() else "cpu") if device == "auto" else resolve_device(device)
    if device is not None and device != "auto":
        resolved = resolve_device(device)
        if resolved.split(":")[0] != built_on:
            raise PlacementError(
                f"quantized bundle {bundle_dir} was built on {built_on} and is served where it was built, "
                f"not on device={device!r}; " + ("serve it on a CUDA host (device='cuda' or 'auto')" if
                                                 built_on == "cuda" else "serve it with device='cpu' (it holds "
                                                 "the CPU fake-quant reference) or quantize on CUDA"))
    else:
        resolved = built_on
    if built_on == "cuda" and not has_cuda():
        raise PlacementError(f"quantized bundle {bundle_dir} was built on CUDA (ModelOpt NVFP4 kernels, which "
                             f"assert CUDA) but this host has no CUDA device: deploy it on a GPU host")
    return resolved


def _instance_group(cfg: mc.ModelConfig, device: str, count: int) -> None:
    if device.startswith("cuda"):
        group = cfg.instance_group.add(kind=mc.ModelInstanceGroup.KIND_GPU, count=count)
        if ":" in device:
            group.gpus.append(int(device.split(":")[1]))
    else:
        cfg.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=count)


def _add_inputs(cfg: mc.ModelConfig, specs) -> None:
    for tname, dtype, dims, optional in specs:
        cfg.input.add(name=tname, data_type=dtype, dims=dims, optional=optional)


def _oneshot_inputs(height: int, width: int):
    return (
        ("IMAGE", mc.TYPE_UINT8, [height, width, 3], False),
        ("C2W", mc.TYPE_FP32, [-1, 4, 4], False),
        ("INTRINSICS", mc.TYPE_FP32, [-1, 3, 3], False),
        ("SEED", mc.TYPE_INT64, [1], False),
        ("NUM_FRAMES", mc.TYPE_INT32, [1], True),  # optional; when sent it must equal the pose count
        ("MODE", mc.TYPE_STRING, [1], True),  # TYPE_STRING is Triton's BYTES
    )


def model_config(
    name: str,
    height: int,
    width: int,
    parameters: dict[str, str],
    device: str = "cpu",
    instance_count: int = 1,
) -> mc.ModelConfig:
    """The one-shot, whole-video ModelConfig (HTTP route): IMAGE [H,W,3] u8, C2W [-1,4,4] f32, INTRINSICS
    [-1,3,3] f32, SEED [1] i64, optional NUM_FRAMES [1] i32 and MODE [1] bytes -> VIDEO [-1,H,W,3] u8."""
    cfg = mc.ModelConfig(name=name, backend="python", max_batch_size=0)
    _add_inputs(cfg, _oneshot_inputs(height, width))
    cfg.output.add(name="VIDEO", data_type=mc.TYPE_UINT8, dims=[-1, height, width, 3])
    _instance_group(cfg, device, instance_count)
    for key, value in parameters.items():
        cfg.parameters[key].string_value = value
    return cfg


def stream_model_config(name: str, height: int, width: int, parameters: dict[str, str], device: str = "cpu",
                        instance_count: int = 1) -> mc.ModelConfig:
    """The decoupled one-shot ModelConfig: the same inputs, one response per chunk (VIDEO + CHUNK_INDEX)."""
    cfg = model_config(name, height, width, parameters, device, instance_count)
    cfg.output.add(name="CHUNK_INDEX", data_type=mc.TYPE_INT32, dims=[1])
    cfg.model_transaction_policy.decoupled = True
    return cfg


def session_model_config(name: str, height: int, width: int, parameters: dict[str, str], device: str = "cpu",
                         instance_count: int = 1, slots: int = 8, idle_us: int = 60_000_000) -> mc.ModelConfig:
    """The stateful session ModelConfig: sequence batching (START/END/CORRID, oldest strategy with
    ``slots`` candidate sequences per instance, ``idle_us`` idle limit), all data inputs optional."""
    cfg = mc.ModelConfig(name=name, backend="python", max_batch_size=0)
    _add_inputs(cfg, (
        ("IMAGE", mc.TYPE_UINT8, [height, width, 3], True),
        ("INTRINSICS", mc.TYPE_FP32, [3, 3], True),
        ("SEED", mc.TYPE_INT64, [1], True),
        ("MODE", mc.TYPE_STRING, [1], True),
        ("PROMPT", mc.TYPE_STRING, [1], True),
        ("ACTION", mc.TYPE_STRING, [1], True),
        ("C2W", mc.TYPE_FP32, [-1, 4, 4], True),
    ))
    cfg.output.add(name="FRAMES", data_type=mc.TYPE_UINT8, dims=[-1, height, width, 3])
    cfg.output.add(name="CHUNK_INDEX", data_type=mc.TYPE_INT32, dims=[1])
    cfg.output.add(name="POSES", data_type=mc.TYPE_FP32, dims=[-1, 4, 4])
    sb = cfg.sequence_batching
    sb.max_sequence_idle_microseconds = idle_us
    C = mc.ModelSequenceBatching.Control
    for tname, kind in (("START", C.CONTROL_SEQUENCE_START), ("END", C.CONTROL_SEQUENCE_END)):
        ctl = sb.control_input.add(name=tname).control.add(kind=kind)
        ctl.fp32_false_true.extend([0.0, 1.0])
    sb.control_input.add(name="CORRID").control.add(kind=C.CONTROL_SEQUENCE_CORRID, data_type=mc.TYPE_UINT64)
    sb.oldest.max_candidate_sequences = slots
    sb.oldest.max_queue_delay_microseconds = 0
    _instance_group(cfg, device, instance_count)
    for key, value in parameters.items():
        cfg.parameters[key].string_value = value
    return cfg


def _install(repo_dir: Path, model_name: str, cfg: mc.ModelConfig, template: Path) -> None:
    """Write one model directory and swap it into ``repo_dir`` (replacing any old one) in one rename."""
    from model.atomic import atomic_dir

    # Staged outside repo_dir (Triton would try to load any directory inside it) on the same filesystem.
    with atomic_dir(repo_dir / model_name, stage_in=repo_dir.parent) as tmp:
        (tmp / "config.pbtxt").write_text(text_format.MessageToString(cfg))
        (tmp / "1").mkdir()
        shutil.copyfile(template, tmp / "1" / "model.py")
        shutil.copyfile(BOOTSTRAP, tmp / "1" / BOOTSTRAP.name)


def build_repository(
    bundle_dir: str | Path,
    repo_dir: str | Path,
    model_name: str = "sana_wm",
    max_frames: int | None = None,
    device: str | None = None,
    default_mode: str | None = None,
    num_steps: int | None = None,
    loader: str = DEFAULT_LOADER,
    project_root: str | Path = PROJECT_ROOT,
    *,
    models: tuple[str, ...] = MODEL_KINDS,
    max_video_frames: int = VIDEO_MAX_FRAMES,
    instance_count: int = 1,
    max_sessions: int = 4,
    spare_slots: int | None = None,
    idle_timeout_s: float = 60.0,
    session_mode: str | None = None,
    cuda_available: bool | None = None,
) -> Path:
    """Write the models of ``models`` serving ``bundle_dir`` into ``repo_dir``; return repo_dir.

    Args:
        model_name: base name: ``<name>`` (stream), ``<name>_video`` (whole video), ``<name>_session``.
        max_frames: raw-frame cap of the decoupled model (default: a minute of video at the bundle's fps).
        max_video_frames: raw-frame cap of the whole-video (HTTP) model: its response holds every frame.
        device: ``cpu`` / ``cuda[:i]`` / ``auto`` / None (the bundle decides); decides the instance-group
            kind too (see ``placement``: a quantized bundle is served where it was built).
        cuda_available: whether this host has CUDA (None: ask torch); only ``placement`` reads it.
        instance_count: instances per model (each loads the bundle; on CPU one saturates the cores).
        max_sessions: live sessions per session-model instance; the server holds
            ``instance_count * max_sessions``.
        spare_slots: Triton sequence slots per instance beyond ``max_sessions`` (default
            ``max(2, max_sessions)``).
        idle_timeout_s: a session idle this long is dropped (Triton's idle limit is set a little longer).
        default_mode, session_mode: the sampler of requests / sessions that name no MODE; None = the bundle's
            own (``model.pipeline.sampler_mode_of``: ``few_step`` for a distilled student, quantized or not,
            ``streaming`` for a teacher).
        project_root: where the adapters find the ``serving``/``model`` packages ("" = installed ones).

    Each model directory is assembled beside ``repo_dir`` and renamed into place, so a server scanning
    the repository never sees a half-written model; an existing model of the same name is replaced.
    """
    from model.pipeline import sampler_mode_of
    from serving.session import SESSION_MODES

    bundle_dir = Path(bundle_dir).resolve()
    repo_dir = Path(repo_dir).resolve()
    if not bundle_dir.is_dir():
        raise FileNotFoundError(f"model bundle directory not found: {bundle_dir}")
    if not model_name or "/" in model_name or model_name.startswith("."):
        raise ValueError(f"model_name must be a plain directory name, got {model_name!r}")
    bundle_mode = sampler_mode_of(json.loads((bundle_dir / "metadata.json").read_text())
                                  if (bundle_dir / "metadata.json").is_file() else None)
    default_mode = bundle_mode if default_mode is None else default_mode
    session_mode = bundle_mode if session_mode is None else session_mode
    if default_mode not in MODES:
        raise ValueError(f"default_mode must be one of {MODES}, got {default_mode!r}")
    if session_mode not in SESSION_MODES:
        raise ValueError(f"session_mode must be one of {SESSION_MODES}, got {session_mode!r}")
    unknown = [m for m in models if m not in MODEL_KINDS]
    if unknown or not models:
        raise ValueError(f"models must be a non-empty subset of {MODEL_KINDS}, got {models!r}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if max_video_frames < 1:
        raise ValueError(f"max_video_frames must be >= 1, got {max_video_frames}")
    if instance_count < 1:
        raise ValueError(f"instance_count must be >= 1, got {instance_count}")
    if max_sessions < 1:
        raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
    spare = max(2, max_sessions) if spare_slots is None else int(spare_slots)
    if spare < 1:
        raise ValueError(f"spare_slots must be >= 1 (a START beyond the limit needs a free Triton slot to be "
                         f"refused instead of evicting a live session), got {spare_slots}")
    if not idle_timeout_s > 0:
        raise ValueError(f"idle_timeout_s must be > 0, got {idle_timeout_s}")
    info = _bundle_info(bundle_dir)
    device = placement(bundle_dir, device, cuda_available)
    h, w = info.height, info.width

    common = {
        "repo_root": str(Path(project_root).resolve()) if project_root else "",
        "bundle_dir": str(bundle_dir),
        "device": device,
        "default_mode": default_mode,
        "num_steps": "" if num_steps is None else str(num_steps),
        "loader": loader,
    }
    repo_dir.mkdir(parents=True, exist_ok=True)
    if "stream" in models:
        params = {**common, "max_frames": str(max_frames or info.minute_of_frames())}
        _install(repo_dir, model_name, stream_model_config(model_name, h, w, params, device, instance_count),
                 STREAM_MODEL_TEMPLATE)
    if "video" in models:
        name = model_name + SUFFIX["video"]
        params = {**common, "max_frames": str(max_video_frames)}
        _install(repo_dir, name, model_config(name, h, w, params, device, instance_count), PYTHON_MODEL_TEMPLATE)
    if "session" in models:
        name = model_name + SUFFIX["session"]
        # fps and chunk sizes are for clients (get_model_config), so they can turn a timeline into chunks.
        params = {**common, "max_sessions": str(max_sessions), "instance_count": str(instance_count),
                  "max_live_sessions": str(instance_count * max_sessions),
                  "idle_timeout_s": repr(float(idle_timeout_s)),
                  "session_mode": session_mode, "fps": repr(info.fps),
                  "first_chunk_poses": str(info.first_chunk_poses), "chunk_poses": str(info.chunk_poses)}
        # Triton forgets an idle sequence a little after the model drops it: a late request then gets the
        # model's "unknown session" error rather than reaching a slot whose state is gone.
        idle_us = int(idle_timeout_s * 1e6 + max(1e6, 0.1 * idle_timeout_s * 1e6))
        _install(repo_dir, name, session_model_config(name, h, w, params, device, instance_count,
                                                      slots=max_sessions + spare, idle_us=idle_us),
                 SESSION_MODEL_TEMPLATE)
    return repo_dir


def read_model_config(model_dir: str | Path) -> mc.ModelConfig:
    """Parse ``<model_dir>/config.pbtxt`` into a ModelConfig proto (raises on any invalid field)."""
    return text_format.Parse(Path(model_dir, "config.pbtxt").read_text(), mc.ModelConfig())
