"""3D rotary position embedding over (t, h, w), in the released SANA-WM's layout.

The head dimension splits into t / h / w parts: h and w get 2·⌊Dh/6⌋ channels each, t the rest (Dh=112:
40/36/36). Channel pairs (2i, 2i+1) are complex numbers rotated by e^{iθ}, θ = position · θ_base^(-2i/d)
per axis. Frequencies are computed in float32 like the release, whose tables are complex64: a
float64 table would differ from the one the checkpoint was trained with by ~1e-7 per angle, and the
parity tests compare against that table exactly. Frame positions are absolute (``frame_offset`` in
streaming), so a key cached in chunk 3 and a query in chunk 7 see their true distance.

The camera branch rotates only the second half of its heads, with a sub-table: the first
(Dh/2 - 2⌊Dh/12⌋)/2 t-frequencies and ⌊Dh/12⌋ h- and w-frequencies of the full table (``camera_rope``).
"""

from __future__ import annotations

import torch


def _axis_freqs(positions: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    """positions (P,) -> complex64 (P, dim//2) = exp(i · pos · theta^(-2k/dim))."""
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32)[: dim // 2] / dim))
    ang = torch.outer(positions.to(torch.float32), inv)
    return torch.polar(torch.ones_like(ang), ang)


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """(t, h, w) channel split of one head."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def rope_3d(num_frames: int, hw: tuple[int, int], head_dim: int, *, theta: float = 10000.0,
            frame_offset: int = 0, device: torch.device | None = None) -> torch.Tensor:
    """Complex64 table (F·h·w, Dh/2) for F frames of an h×w grid (tokens ordered t, h, w)."""
    h, w = hw
    dt, dh, dw = rope_split(head_dim)
    ft = _axis_freqs(torch.arange(frame_offset, frame_offset + num_frames), dt, theta)
    fh = _axis_freqs(torch.arange(h), dh, theta)
    fw = _axis_freqs(torch.arange(w), dw, theta)
    table = torch.cat([
        ft[:, None, None, :].expand(num_frames, h, w, -1),
        fh[None, :, None, :].expand(num_frames, h, w, -1),
        fw[None, None, :, :].expand(num_frames, h, w, -1),
    ], dim=-1)
    return table.reshape(num_frames * h * w, -1).to(device)


def camera_rope(table: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Sub-table (N, Dh/4) for the RoPE half of camera heads (see the module docstring)."""
    t_full, h_full = head_dim // 2 - 2 * (head_dim // 6), head_dim // 6
    sub = head_dim // 2
    t_sub, hw_sub = sub // 2 - 2 * (sub // 6), sub // 6
    return torch.cat([table[..., :t_sub],
                      table[..., t_full:t_full + hw_sub],
                      table[..., t_full + h_full:t_full + h_full + hw_sub]], dim=-1)


def apply_rope_complex(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of x (..., N, D) by the complex table (N, D/2); norm-preserving.

    Runs in complex64 for half/single inputs (as the release does) and complex128 for float64.
    """
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    xc = torch.view_as_complex(x.to(work).unflatten(-1, (-1, 2)).contiguous())
    out = torch.view_as_real(xc * table.to(xc.dtype)).flatten(-2)
    return out.to(x.dtype)
