"""Request validation and generation for serving: pure Python, no Triton imports.

The Triton adapter (``serving/adapters/model_py.tmpl``), a notebook or a batch job all call the same
``Predictor.predict``; only the transport differs. Every bad request raises ``RequestError`` (a
``ValueError``) whose message names the offending input, so the adapter can answer that one request
with an error while the server stays up.

Frame-count policy (chosen, not rounded): the causal VAE only decodes ``1 + temporal_stride * k`` raw
frames, so any other ``num_frames`` is *rejected* with a message that names the two nearest valid
counts. Rounding up would silently need camera poses the client never sent; rounding down would
silently drop frames the client asked for. ``num_frames`` may be smaller than the trajectory length:
``num_frames`` is optional: the video has one frame per pose, and a ``num_frames`` that disagrees with
the number of poses is rejected (it used to silently drop poses). The smallest video is
``1 + temporal_stride`` frames (the conditioning image's latent frame plus one generated latent frame).

``predict`` returns the whole video; ``stream`` yields it chunk by chunk as each chunk is decoded (the
decoupled Triton model sends each as one response), so the first frames arrive after one chunk's work.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from serving.errors import SEED_MAX, RequestError
from serving.request import VideoRequest

MODES = ("streaming", "bidirectional", "few_step")
DEFAULT_LOADER = "serving.predictor:load_pipeline"


def load_pipeline(bundle_dir: str | Path, device: str = "cpu") -> Any:
    """Default loader: a plain bundle through ``WorldModelPipeline.from_pretrained``; a quantized bundle
    (``quant/`` written by the quantize step) through ``model.quant.bundle.load_bundle``, which restores
    the NVFP4 module tree. ModelOpt is imported only in the second case, so plain serving stays light."""
    if (Path(bundle_dir) / "quant" / "quant.json").exists():
        from model.quant.bundle import load_bundle

        return load_bundle(bundle_dir, device=device)
    from model.pipeline import WorldModelPipeline

    return WorldModelPipeline.from_pretrained(bundle_dir, device=device)


def resolve_loader(spec: str) -> Callable[[Path], Any]:
    """Turn ``"package.module:attr.attr"`` into the callable it names (e.g. a ``from_pretrained``).

    The loader is a string so a Triton ``config.pbtxt`` parameter can choose it (a quantized-bundle
    loader, a TensorRT engine wrapper) without touching the adapter.
    """
    module_name, _, attr_path = spec.partition(":")
    if not module_name or not attr_path:
        raise ValueError(f"loader spec must look like 'package.module:attr', got {spec!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"loader {spec!r} resolves to a non-callable {type(obj).__name__}")
    return obj


class Predictor:
    """Validate a camera-controlled generation request and run the world-model pipeline on it.

    Args:
        bundle_dir: a model bundle written by ``WorldModelPipeline.save_pretrained``.
        max_frames: the most raw frames one request may ask for (guards memory and latency).
        device: torch device string the pipeline runs on.
        default_mode: sampling mode when a request names none (``streaming``/``bidirectional``/``few_step``).
        num_steps: denoising steps passed to ``generate`` (None: the bundle's sampler default).
        loader: ``"module:attr"`` of a callable ``(bundle_dir, device=...) -> pipeline``; the pipeline must offer
            ``.config`` (a ``WorldModelConfig``) and ``.generate(...)`` as in docs/INTERFACES.md.
    """

    def __init__(
        self,
        bundle_dir: str | Path,
        max_frames: int = 65,
        device: str = "cpu",
        default_mode: str = "streaming",
        num_steps: int | None = None,
        loader: str = DEFAULT_LOADER,
    ) -> None:
        if default_mode not in MODES:
            raise ValueError(f"default_mode must be one of {MODES}, got {default_mode!r}")
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self.bundle_dir = Path(bundle_dir)
        if not self.bundle_dir.is_dir():
            raise FileNotFoundError(f"model bundle directory not found: {self.bundle_dir}")
        self.max_frames = int(max_frames)
        self.device = device
        self.default_mode = default_mode
        self.num_steps = num_steps
        self.pipeline = resolve_loader(loader)(self.bundle_dir, device=device)
        cfg = self.pipeline.config
        self.height, self.width = int(cfg.video_height), int(cfg.video_width)
        self.temporal_stride = int(cfg.vae.temporal_stride)
        self.fps = float(cfg.fps)
        if self.max_frames < 1 + self.temporal_stride:
            raise ValueError(f"max_frames={self.max_frames} is below the shortest video this model makes "
                             f"(1 + {self.temporal_stride} frames)")

    # --- validation ------------------------------------------------------------------------------
    def valid_frame_counts(self, near: int) -> tuple[int, int]:
        """The valid raw-frame counts (1 + stride*k, k >= 1) just below and just above ``near``."""
        s = self.temporal_stride
        k = (near - 1) // s
        if k < 1:  # below the shortest video: only one candidate
            return 1 + s, 1 + s
        below = 1 + s * k
        return below, below if (near - 1) % s == 0 else below + s

    def validate(self, request: VideoRequest) -> VideoRequest:
        """Check a request; return it normalised: image uint8 (H,W,3), c2w f64 (n,4,4), intrinsics f64
        (n,3,3), seed int, num_frames n (``None`` in means all N poses; a given one must equal N), mode str.

        Raises ``RequestError`` naming the first problem found.
        """
        image = request.image
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise RequestError(f"IMAGE must be a uint8 array, got {getattr(image, 'dtype', type(image))}")
        if image.ndim != 3 or image.shape[2] != 3:
            raise RequestError(f"IMAGE must have shape (H, W, 3), got {image.shape}")
        if image.shape[:2] != (self.height, self.width):
            raise RequestError(
                f"IMAGE is {image.shape[0]}x{image.shape[1]} but this model generates "
                f"{self.height}x{self.width} (HxW); resize the image first"
            )
        c2w = _float_array(request.c2w, "C2W", (4, 4))
        intrinsics = _float_array(request.intrinsics, "INTRINSICS", (3, 3))
        if c2w.shape[0] != intrinsics.shape[0]:
            raise RequestError(
                f"C2W has {c2w.shape[0]} poses but INTRINSICS has {intrinsics.shape[0]}; they must match"
            )
        if not np.isfinite(c2w).all():
            raise RequestError("C2W (trajectory) contains NaN or inf")
        if not np.isfinite(intrinsics).all():
            raise RequestError("INTRINSICS contains NaN or inf")

        n_poses = c2w.shape[0]
        num_frames = n_poses if request.num_frames is None else _as_int(request.num_frames, "NUM_FRAMES")
        if num_frames != n_poses:
            raise RequestError(f"NUM_FRAMES={num_frames} but C2W has {n_poses} poses; they must agree "
                               f"(one frame per pose), or leave NUM_FRAMES out")
        min_frames = 1 + self.temporal_stride  # one latent frame beyond the conditioning image
        if num_frames < min_frames:
            raise RequestError(f"NUM_FRAMES must be >= {min_frames} (1 + {self.temporal_stride}), got {num_frames}")
        if num_frames > self.max_frames:
            raise RequestError(f"NUM_FRAMES={num_frames} is too many frames: this server allows at most "
                               f"{self.max_frames}")
        if (num_frames - 1) % self.temporal_stride:
            below, above = self.valid_frame_counts(num_frames)
            raise RequestError(
                f"NUM_FRAMES={num_frames} is not 1 + {self.temporal_stride}*k (the causal VAE's frame rule); "
                f"nearest valid counts: {below} or {above}"
            )
        c2w, intrinsics = c2w[:num_frames], intrinsics[:num_frames]
        # Geometry checks (rigid rotation, last row, focal > 0) live in model.camera: one definition.
        from model.camera import validate_trajectory

        try:
            validate_trajectory(c2w, intrinsics, name="C2W/INTRINSICS trajectory")
        except ValueError as err:
            raise RequestError(str(err)) from err

        seed = _as_int(request.seed, "SEED")
        if not 0 <= seed <= SEED_MAX:
            raise RequestError(f"SEED must be in [0, 2**63-1], got {seed}")
        mode = self.default_mode if request.mode in (None, "", b"") else request.mode
        if isinstance(mode, bytes):
            mode = mode.decode("utf-8", errors="replace")
        if mode not in MODES:
            raise RequestError(f"MODE must be one of {MODES}, got {mode!r}")
        return VideoRequest(image, c2w, intrinsics, seed, num_frames, mode, request.prompt)

    # --- inference -------------------------------------------------------------------------------
    # predict and stream take one request, as ``VideoRequest``'s fields: (image uint8 (H, W, 3),
    # c2w (N, 4, 4), intrinsics (N, 3, 3), seed=0, num_frames=None, mode=None, prompt="").
    def predict(self, *request: Any, **fields: Any) -> np.ndarray:
        """Generate a video that starts at ``image`` and follows the camera trajectory.

        Args: a ``VideoRequest``'s fields (positional or by name); ``num_frames``, if given, must equal N,
            which must be 1 + temporal_stride*k, k >= 1; ``mode`` None is ``default_mode``.
        Returns:
            uint8 (n, H, W, 3).
        """
        return self._whole(self.validate(VideoRequest(*request, **fields)))

    def _whole(self, r: VideoRequest) -> np.ndarray:
        video = self.pipeline.generate(r.image, r.c2w, r.intrinsics, prompt=r.prompt, seed=r.seed, mode=r.mode,
                                       num_steps=self.num_steps, progress=False)
        video = np.asarray(video)
        expected = (r.num_frames, self.height, self.width, 3)
        # A wrong output is a model bug, not the client's fault: RuntimeError, not RequestError.
        if video.shape != expected or video.dtype != np.uint8:
            raise RuntimeError(f"pipeline returned {video.dtype} {video.shape}, expected uint8 {expected}")
        return video

    def stream(self, *request: Any, **fields: Any) -> Iterator[np.ndarray]:
        """Validate (eagerly: a bad request raises before the first chunk), then yield the video chunk by
        chunk: uint8 (n_k, H, W, 3) pieces whose concatenation is the ``predict`` video. Same arguments
        as ``predict``.

        ``streaming``/``few_step`` run a ``serving.session.StreamingSession`` over the trajectory's
        chunks (``config.chunks.chunk_lengths``); ``bidirectional`` denoises all frames jointly, so it
        yields the whole video once.
        """
        return self._stream(self.validate(VideoRequest(*request, **fields)))

    def _stream(self, r: VideoRequest) -> Iterator[np.ndarray]:
        if r.mode == "bidirectional":
            yield self._whole(r)
            return
        from model.camera import relative_to_first
        from serving.session import StreamingSession

        if not np.allclose(r.intrinsics, r.intrinsics[:1], atol=1e-6):
            # One K per session: a zoom inside a trajectory has no per-chunk form yet.
            yield self._whole(r)
            return
        cfg = self.pipeline.config
        rel = relative_to_first(r.c2w).numpy()
        session = StreamingSession(self.pipeline, r.image, r.intrinsics[0], seed=r.seed, prompt=r.prompt,
                                   mode=r.mode, num_steps=self.num_steps)
        lens = cfg.chunks.chunk_lengths(cfg.vae.num_latent_frames(r.num_frames))
        start = 1  # frame 0 is the conditioning image
        for k, f in enumerate(lens):
            count = self.temporal_stride * (f - 1 if k == 0 else f)
            frames, _ = session.step(c2w=rel[start:start + count], partial=True)
            start += count
            yield frames


def _float_array(x: Any, name: str, tail: tuple[int, int]) -> np.ndarray:
    """Check a (N, *tail) floating array and return it as float64."""
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        raise RequestError(f"{name} must be a float array, got {getattr(x, 'dtype', type(x))}")
    if x.ndim != 3 or x.shape[1:] != tail or x.shape[0] < 1:
        raise RequestError(f"{name} must have shape (N, {tail[0]}, {tail[1]}) with N >= 1, got {x.shape}")
    return x.astype(np.float64)


def _as_int(x: Any, name: str) -> int:
    """Accept a Python/NumPy integer or a one-element integer array (the Triton wire form)."""
    arr = np.asarray(x)
    if arr.size != 1 or arr.dtype.kind not in "iu":
        raise RequestError(f"{name} must be one integer, got {arr.dtype} array of shape {arr.shape}")
    return int(arr.reshape(()))
