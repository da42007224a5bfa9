"""Pluggable monocular metric-depth models (the scale source when a clip has no sensor depth).

The pose estimator only needs "an RGB frame in, a metric depth map out", so any model fits behind the
`DepthModel` protocol. `load_hf_depth_model` wraps a transformers ``depth-estimation`` pipeline loaded from a
LOCAL directory (e.g. a Depth-Anything-V2 *metric* checkpoint); nothing is ever downloaded: a missing path is
a clear error, and the loader forces offline mode.
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

    Raises ``FileNotFoundError`` naming the path when it does not exist (no download fallback).
    """
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(
            f"depth model path {str(p)!r} does not exist or is not a directory; pass a local transformers "
            "checkpoint (config.json + weights) of a metric depth model, downloads are disabled"
        )
    from transformers import pipeline

    # local_files_only: even a local path must never fall through to the hub.
    pipe = pipeline("depth-estimation", model=str(p), device=device, model_kwargs={"local_files_only": True})
    return HFDepthModel(pipe=pipe)
