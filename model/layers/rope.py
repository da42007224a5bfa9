"""3D rotary position embedding over (t, h, w) for video tokens.

The head dimension is split into three even parts (t, h, w); each part rotates pairs of channels by the
token's frame index, row or column. Frame indices are absolute (``frame_offset`` for streaming chunks), so
a key cached in chunk 3 and a query in chunk 7 see their true relative offset.
"""

from __future__ import annotations

import torch


def _axis_angles(positions: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    """positions (P,) -> angles (P, dim//2)."""
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim))
    return positions.to(torch.float64)[:, None] * inv[None, :]


def rope_3d(num_frames: int, hw: tuple[int, int], dims: tuple[int, int, int], *, theta: float = 10000.0,
            frame_offset: int = 0, device: torch.device | None = None,
            dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables of shape (F, S, Dh//2) for F frames of an h×w grid (tokens row-major)."""
    h, w = hw
    t_pos = torch.arange(frame_offset, frame_offset + num_frames, device=device)
    ang_t = _axis_angles(t_pos, dims[0], theta)  # (F, dt/2)
    ang_h = _axis_angles(torch.arange(h, device=device), dims[1], theta)  # (h, dh/2)
    ang_w = _axis_angles(torch.arange(w, device=device), dims[2], theta)  # (w, dw/2)
    F_, S = num_frames, h * w
    ang = torch.cat([
        ang_t[:, None, :].expand(F_, S, -1),
        ang_h[:, None, :].expand(h, w, -1).reshape(1, S, -1).expand(F_, S, -1),
        ang_w[None, :, :].expand(h, w, -1).reshape(1, S, -1).expand(F_, S, -1),
    ], dim=-1)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (2i, 2i+1). x (..., F, S, Dh); cos/sin (F, S, Dh//2). Norm-preserving."""
    x2 = x.unflatten(-1, (-1, 2))
    a, b = x2[..., 0], x2[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
