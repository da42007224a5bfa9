"""The served models' requests in one place: their fields, and their tensors on the wire.

Pure NumPy (no Triton, no torch), so the clients, the predictor and the Python-backend adapters all use it:

* ``WIRE``: every input tensor the models take -> (request field, Triton datatype, NumPy dtype); a
  ``[1]``-shaped scalar for SEED / NUM_FRAMES and for the BYTES strings.
* ``wire_tensors(**inputs)``: ``(name, array, datatype)`` triples for the inputs that are not None (the
  clients turn them into ``InferInput``s of either protocol).
* ``VideoRequest``: a one-shot request (``<name>`` streamed, ``<name>_video`` whole); the predictor
  validates it, the clients send its ``tensors()``, the adapters rebuild it with ``fields_from_wire``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# tensor name -> (VideoRequest field or None for session-only inputs, Triton datatype, NumPy dtype)
WIRE: dict[str, tuple[str | None, str, Any]] = {
    "IMAGE": ("image", "UINT8", np.uint8),
    "C2W": ("c2w", "FP32", np.float32),
    "INTRINSICS": ("intrinsics", "FP32", np.float32),
    "SEED": ("seed", "INT64", np.int64),
    "NUM_FRAMES": ("num_frames", "INT32", np.int32),
    "MODE": ("mode", "BYTES", np.object_),
    "PROMPT": ("prompt", "BYTES", np.object_),
    "ACTION": (None, "BYTES", np.object_),
}
_SCALARS = ("SEED", "NUM_FRAMES")  # sent as shape [1]


def wire_tensor(name: str, value: Any) -> tuple[str, np.ndarray, str]:
    """``(name, array, datatype)`` of input ``name`` holding ``value``.

    Floats are sent as FP32 (the models' declared type); IMAGE must already be uint8, since casting a
    float image would silently wrap or truncate its values. Strings become one UTF-8 BYTES element.
    """
    if name not in WIRE:
        raise ValueError(f"unknown input tensor {name!r}; the models take {sorted(WIRE)}")
    _, datatype, dtype = WIRE[name]
    if datatype == "BYTES":
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        return name, np.array([raw], dtype=np.object_), datatype
    if name in _SCALARS:
        return name, np.array([value], dtype=dtype), datatype
    if name == "IMAGE" and np.asarray(value).dtype != np.uint8:
        raise ValueError(f"IMAGE must be a uint8 array (H, W, 3), got {np.asarray(value).dtype}")
    return name, np.ascontiguousarray(value, dtype=dtype), datatype


def wire_tensors(**inputs: Any) -> list[tuple[str, np.ndarray, str]]:
    """``wire_tensor`` of every keyword (a tensor name) whose value is not None, in the order given."""
    return [wire_tensor(name, value) for name, value in inputs.items() if value is not None]


@dataclass(frozen=True)
class VideoRequest:
    """A one-shot generation request.

    Fields:
        image: uint8 (H, W, 3) first frame, the model's pixel size.
        c2w: (N, 4, 4) camera-to-world poses, OpenCV axes, metres (FP32 on the wire).
        intrinsics: (N, 3, 3) pixel intrinsics (FP32 on the wire).
        seed: noise seed in [0, 2**63-1]; the same seed gives the same video.
        num_frames: optional; when given it must equal N (the server rejects any other value).
        mode: sampling mode (``streaming`` / ``bidirectional`` / ``few_step``); None: the server's default.
        prompt: text; read by in-process callers only (the one-shot models declare no PROMPT input).
    """

    image: Any
    c2w: Any
    intrinsics: Any
    seed: Any = 0
    num_frames: Any = None
    mode: Any = None
    prompt: Any = ""

    def tensors(self) -> list[tuple[str, np.ndarray, str]]:
        """The request's input tensors (``wire_tensor`` triples); unset optional fields are left out."""
        return wire_tensors(IMAGE=self.image, C2W=self.c2w, INTRINSICS=self.intrinsics, SEED=self.seed,
                            NUM_FRAMES=self.num_frames, MODE=self.mode, PROMPT=self.prompt or None)


def fields_from_wire(get: Callable[[str], np.ndarray | None]) -> dict[str, Any]:
    """``VideoRequest`` keyword arguments from a one-shot request's tensors; ``get(name)`` returns an
    input's array or None when the client did not send it (absent inputs -> None)."""
    fields: dict[str, Any] = {}
    for name in ("IMAGE", "C2W", "INTRINSICS", "SEED", "NUM_FRAMES", "MODE"):
        value = get(name)
        if name == "MODE" and value is not None:
            value = value.reshape(-1)[0]  # BYTES arrive as an object array of bytes
        fields[WIRE[name][0]] = value
    return fields
