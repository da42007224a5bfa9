"""Pluggable monocular metric-depth models (the scale source when a clip has no sensor depth).

The pose estimator only needs "an RGB frame in, a metric depth map out", so any model fits behind the
`DepthModel` protocol. `load_hf_depth_model` wraps a transformers ``depth-estimation`` pipeline loaded from a
LOCAL directory (e.g. a Depth-Anything-V2 *metric* checkpoint); nothing is ever downloaded: model and image
processor are loaded with ``local_files_only=True``, and a missing path, a folder that is not a
depth-estimation checkpoint, or a Depth-Anything checkpoint trained for *relative* depth (no metres, so no
scale) is a clear error naming the path and the problem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["DepthModel", "HFDepthModel", "load_hf_depth_model"]


@runtime_checkable
class DepthModel(Protocol):
    """Anything that maps one RGB frame to metric depth.

    ``__call__(frame uint8 (H,W,3)) -> depth float32 (H,W)`` in metres along the optical axis (z-depth);
    values <= 0 or non-finite mean "no estimate" for that pixel.
    """

    def __call__(self, frame: np.ndarray) -> np.ndarray: ...


@dataclass
class HFDepthModel:
    """A transformers ``depth-estimation`` pipeline behind the `DepthModel` protocol.

    ``predicted_depth`` of metric checkpoints is in metres; it is resized to the input frame's (H, W).
    """

    pipe: object

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        import torch
        from PIL import Image

        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"depth model expects uint8 (H,W,3), got {frame.dtype} {frame.shape}")
        out = self.pipe(Image.fromarray(frame))
        pred = out["predicted_depth"]
        pred_t = pred if isinstance(pred, torch.Tensor) else torch.as_tensor(np.asarray(pred))
        pred_t = pred_t.reshape(1, 1, *pred_t.shape[-2:]).float()
        # The model runs at its own resolution; bring it back to the frame grid for per-pixel lookups.
        up = torch.nn.functional.interpolate(pred_t, size=frame.shape[:2], mode="bilinear", align_corners=False)
        return up[0, 0].numpy().astype(np.float32)


def load_hf_depth_model(path: str | os.PathLike, device: str = "cpu") -> HFDepthModel:
    """Load a metric monocular depth model from a local transformers checkpoint directory.

    The directory needs ``config.json`` of a depth-estimation architecture (``AutoModelForDepthEstimation``:
    Depth Anything, DPT, ZoeDepth, GLPN, ...), its weights and a ``preprocessor_config.json``.
    Raises ``FileNotFoundError`` naming the path when it (or its config.json) does not exist, ``ValueError``
    naming the path and the reason when it is not a loadable depth-estimation checkpoint or declares
    ``depth_estimation_type: relative`` (relative depth has no metric scale).
    """
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(
            f"depth model path {str(p)!r} does not exist or is not a directory; pass a local transformers "
            "checkpoint (config.json + weights) of a metric depth model, downloads are disabled"
        )
    if not (p / "config.json").is_file():
        raise FileNotFoundError(
            f"depth model path {str(p)!r} has no config.json: not a transformers checkpoint (save one with "
            "model.save_pretrained(dir) and image_processor.save_pretrained(dir))"
        )
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForDepthEstimation, pipeline

    try:
        config = AutoConfig.from_pretrained(p, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ValueError(f"depth model path {str(p)!r}: config.json is not a transformers config ({e})") from e
    if getattr(config, "depth_estimation_type", None) == "relative":
        raise ValueError(
            f"depth model path {str(p)!r} is a relative-depth checkpoint (depth_estimation_type='relative'): "
            "its output has no metric scale; use a metric checkpoint (depth_estimation_type='metric')"
        )
    # Model and processor are loaded here, not by name inside pipeline(): the pipeline would pass
    # local_files_only twice (TypeError in transformers 5), and loading them ourselves gives errors that name
    # which part of the folder is wrong.
    try:
        model = AutoModelForDepthEstimation.from_pretrained(p, local_files_only=True)
    except ValueError as e:  # "Unrecognized configuration class ...": a model, but not a depth model
        raise ValueError(
            f"depth model path {str(p)!r} holds a {type(config).__name__} ({config.model_type!r}), which is not a "
            f"depth-estimation architecture: {e}"
        ) from e
    except OSError as e:  # config present, weights missing or unreadable
        raise ValueError(f"depth model path {str(p)!r}: could not load the model weights ({e})") from e
    try:
        processor = AutoImageProcessor.from_pretrained(p, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"depth model path {str(p)!r} has no usable image processor (preprocessor_config.json): {e}"
        ) from e
    pipe = pipeline("depth-estimation", model=model.eval(), image_processor=processor, device=device)
    return HFDepthModel(pipe=pipe)
