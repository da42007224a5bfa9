"""Camera geometry for SANA-WM's dual-branch camera control (DESIGN.md §3).

Conventions (shared with the annotation pipeline and the trajectory DSL):
  * Poses are camera-to-world 4x4 matrices ``c2w`` in OpenCV axes: +X right, +Y down, +Z forward.
    Translations are metres; ``relative_to_first`` re-expresses a trajectory in frame 0's camera frame
    without rescaling, so the model sees metric motion.
  * Intrinsics ``K`` are 3x3 pixel matrices ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` in the
    *pixel-corner* convention used by COLMAP: the image covers the continuous square
    [0, W] x [0, H], and pixel (row i, col j) has its centre at (u, v) = (j + 0.5, i + 0.5). With this
    convention resizing an image by a factor scales every entry of the first two rows by that factor
    (no half-pixel shifts), and a centred principal point is simply (W/2, H/2).

What the network consumes (``CameraCondition``, the released SANA-WM's two camera tensors):
  * Branch A, ``raymap`` (B, F, 20): per latent frame the relative camera-to-world pose and the latent-
    scale intrinsics; the network turns it into one world-to-ray transform per token (UCPE).
  * Branch B, ``plucker`` (B, F, 6*ts, h, w): for each of the ts raw frames behind a latent frame, the
    per-pixel Plücker ray (unit world direction d, moment o x d) at latent resolution.
  Rays go through integer grid points (u, v) = (j, i) at latent resolution, as in the release's
  ``prepare_camera`` (see ``ray_directions``).

Everything here is pure torch; numpy arrays are accepted and converted. Geometry is computed in float64
(poses with large translations lose millimetres in float32) and returned in the input's floating dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "CameraCondition",
    "camera_condition",
    "latent_frame_groups",
    "look_at",
    "plucker_rays",
    "ray_directions",
    "relative_to_first",
    "rescale_intrinsics",
    "rotation_angle",
    "se3_inverse",
    "so3_exp",
    "validate_trajectory",
]

ArrayLike = Any  # torch.Tensor | np.ndarray | nested sequences of numbers


# --------------------------------------------------------------------------------------------------
# conversions
# --------------------------------------------------------------------------------------------------

def _as_tensor(x: ArrayLike, what: str) -> torch.Tensor:
    """Tensor view of ``x``; integer input becomes float64, non-real input is refused."""
    if isinstance(x, torch.Tensor):
        t = x
    else:
        arr = np.asarray(x)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise ValueError(f"{what} must be a numeric array, got dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr)
        if not arr.flags.writeable:
            arr = arr.copy()  # torch.from_numpy warns on read-only arrays (e.g. a frozen Trajectory's)
        t = torch.from_numpy(arr)
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{what} must be a real floating array, got dtype {t.dtype}")
    if not t.is_floating_point():
        t = t.to(torch.float64)
    return t


def _out_dtype(t: torch.Tensor) -> torch.dtype:
    # Half-precision inputs still get float32 outputs: ray geometry in fp16 is too coarse to be useful.
    return t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32


def _hw(hw: Sequence[int], what: str) -> tuple[int, int]:
    if len(hw) != 2 or any(int(v) != v or int(v) <= 0 for v in hw):
        raise ValueError(f"{what} must be two positive integers (height, width), got {tuple(hw)}")
    return int(hw[0]), int(hw[1])


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------

def _checked(c2w: ArrayLike, K: ArrayLike, name: str, atol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and return (c2w (N,4,4), K (N,3,3)) as float64 tensors on the input device."""
    c = _as_tensor(c2w, f"{name}: c2w")
    k = _as_tensor(K, f"{name}: intrinsics")
    if c.ndim != 3 or tuple(c.shape[1:]) != (4, 4):
        raise ValueError(f"{name}: c2w must have shape (N, 4, 4), got {tuple(c.shape)}")
    n = c.shape[0]
    if n == 0:
        raise ValueError(f"{name}: trajectory has no frames (N == 0)")
    if k.ndim == 2 and tuple(k.shape) == (3, 3):
        k = k.expand(n, 3, 3)
    elif k.ndim != 3 or tuple(k.shape[1:]) != (3, 3):
        raise ValueError(f"{name}: intrinsics must have shape (N, 3, 3) or (3, 3), got {tuple(k.shape)}")
    elif k.shape[0] != n:
        raise ValueError(f"{name}: c2w has {n} frames but intrinsics has {k.shape[0]}")
    c = c.detach().to(torch.float64)
    k = k.detach().to(torch.float64)

    def first_bad(mask: torch.Tensor) -> int:
        return int(torch.nonzero(mask)[0, 0])

    for arr, what in ((c, "c2w"), (k, "intrinsics")):
        bad = ~torch.isfinite(arr).flatten(1).all(dim=1)
        if bad.any():
            i = first_bad(bad)
            raise ValueError(f"{name}: frame {i}: {what} contains NaN or inf ({int(bad.sum())} bad frames)")

    last = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64, device=c.device)
    bad = (c[:, 3, :] - last).abs().amax(dim=1) > atol
    if bad.any():
        i = first_bad(bad)
        raise ValueError(f"{name}: frame {i}: c2w last row must be [0, 0, 0, 1], got {c[i, 3].tolist()}")

    R = c[:, :3, :3]
    eye = torch.eye(3, dtype=torch.float64, device=c.device)
    err = (R.transpose(-1, -2) @ R - eye).abs().flatten(1).amax(dim=1)
    bad = err > atol
    if bad.any():
        i = first_bad(bad)
        raise ValueError(f"{name}: frame {i}: c2w rotation is not orthonormal "
                         f"(max |R^T R - I| = {float(err[i]):.3g} > atol {atol})")
    det = torch.linalg.det(R)
    bad = (det - 1.0).abs() > atol
    if bad.any():
        i = first_bad(bad)
        raise ValueError(f"{name}: frame {i}: c2w rotation has det {float(det[i]):+.4f}; a proper rotation "
                         f"needs det +1 (det -1 is a reflection, e.g. a flipped axis convention)")

    fx, fy = k[:, 0, 0], k[:, 1, 1]
    bad = (fx <= 0) | (fy <= 0)
    if bad.any():
        i = first_bad(bad)
        raise ValueError(f"{name}: frame {i}: intrinsics need positive focal lengths, "
                         f"got fx={float(fx[i])}, fy={float(fy[i])}")
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64, device=k.device)
    bad = ((k[:, 2, :] - bottom).abs().amax(dim=1) > atol) | (k[:, 1, 0].abs() > atol)
    if bad.any():
        i = first_bad(bad)
        raise ValueError(f"{name}: frame {i}: intrinsics must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]]; "
                         f"got lower rows {k[i, 1:].tolist()}")
    return c, k


def validate_trajectory(c2w: ArrayLike, K: ArrayLike, *, name: str = "trajectory", atol: float = 1e-3) -> None:
    """Check a camera trajectory; raise ``ValueError`` naming the problem and the first bad frame.

    Args:
        c2w: (N, 4, 4) camera-to-world poses (OpenCV axes, metres), torch or numpy.
        K: (N, 3, 3) pixel intrinsics, or one (3, 3) shared by all frames.
        name: prefix for error messages (a file name, "batch item 3", ...).
        atol: tolerance for the last row, orthonormality, det = +1 and K's lower rows.

    Checks: shapes and ndim, N > 0, matching N, finite values, last row [0, 0, 0, 1], orthonormal
    rotation with det +1, fx > 0 and fy > 0, K's lower rows [0, fy, cy] / [0, 0, 1].
    """
    _checked(c2w, K, name, atol)


# --------------------------------------------------------------------------------------------------
# SE(3) / SO(3) helpers
# --------------------------------------------------------------------------------------------------

def se3_inverse(T: ArrayLike) -> torch.Tensor:
    """Inverse of rigid transforms (..., 4, 4) via [R^T, -R^T t] (exact, unlike a general inverse)."""
    T = _as_tensor(T, "se3_inverse input")
    if T.shape[-2:] != (4, 4):
        raise ValueError(f"se3_inverse expects (..., 4, 4), got {tuple(T.shape)}")
    Rt = T[..., :3, :3].transpose(-1, -2)
    out = torch.zeros_like(T)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -(Rt @ T[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def relative_to_first(c2w: ArrayLike) -> torch.Tensor:
    """Re-express poses (..., N, 4, 4) in frame 0's camera frame: ``inv(c2w[0]) @ c2w``.

    The result has ``c2w'[0] = I``; relative transforms ``inv(c2w[i]) @ c2w[j]`` and metric distances are
    unchanged (no normalisation of the translation scale).
    """
    c = _as_tensor(c2w, "relative_to_first input")
    if c.ndim < 3 or c.shape[-2:] != (4, 4) or c.shape[-3] == 0:
        raise ValueError(f"relative_to_first expects (..., N, 4, 4) with N >= 1, got {tuple(c.shape)}")
    c64 = c.to(torch.float64)
    out = se3_inverse(c64[..., :1, :, :]) @ c64
    return out.to(_out_dtype(c))


def _hat(w: torch.Tensor) -> torch.Tensor:
    """Skew-symmetric matrices (..., 3, 3) with hat(w) @ v = w x v."""
    z = torch.zeros_like(w[..., 0])
    return torch.stack([
        torch.stack([z, -w[..., 2], w[..., 1]], -1),
        torch.stack([w[..., 2], z, -w[..., 0]], -1),
        torch.stack([-w[..., 1], w[..., 0], z], -1),
    ], -2)


def so3_exp(omega: ArrayLike) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) from axis-angle vectors (..., 3) (angle = norm, radians).

    Uses ``torch.linalg.matrix_exp`` of the skew matrix, which is accurate near zero angle where the
    textbook Rodrigues formula divides by the angle.
    """
    w = _as_tensor(omega, "so3_exp input")
    if w.shape[-1:] != (3,):
        raise ValueError(f"so3_exp expects (..., 3), got {tuple(w.shape)}")
    return torch.linalg.matrix_exp(_hat(w.to(torch.float64))).to(_out_dtype(w))


def rotation_angle(R: ArrayLike) -> torch.Tensor:
    """Geodesic angle (radians, in [0, pi]) of rotations (..., 3, 3); ``R`` may also be (..., 4, 4).

    Uses atan2(|axis part|, cos part) rather than arccos((tr - 1) / 2), which loses precision near 0
    and pi.
    """
    r = _as_tensor(R, "rotation_angle input")
    if r.shape[-2:] not in ((3, 3), (4, 4)):
        raise ValueError(f"rotation_angle expects (..., 3, 3) or (..., 4, 4), got {tuple(r.shape)}")
    r = r[..., :3, :3].to(torch.float64)
    cos = (r.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0
    axis = torch.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], -1)
    sin = axis.norm(dim=-1) / 2.0
    return torch.atan2(sin, cos)


def look_at(eye: ArrayLike, target: ArrayLike, up: ArrayLike = (0.0, -1.0, 0.0)) -> torch.Tensor:
    """Camera-to-world (4, 4) for a camera at ``eye`` looking at ``target`` (OpenCV axes).

    ``up`` is the world's up direction; OpenCV's +Y points down, so the default up is (0, -1, 0) and
    ``look_at((0,0,0), (0,0,1))`` is the identity.
    """
    e = _as_tensor(eye, "look_at eye").to(torch.float64).reshape(-1)
    t = _as_tensor(target, "look_at target").to(torch.float64).reshape(-1)
    u = _as_tensor(up, "look_at up").to(torch.float64).reshape(-1)
    if e.numel() != 3 or t.numel() != 3 or u.numel() != 3:
        raise ValueError("look_at: eye, target and up must each have 3 components")
    z = t - e
    if z.norm() < 1e-12:
        raise ValueError("look_at: eye and target coincide")
    z = z / z.norm()
    x = torch.linalg.cross(-u, z)  # camera +X = down x forward (right-handed, +Y down)
    if x.norm() < 1e-9 * max(1.0, float(u.norm())):
        raise ValueError("look_at: up direction is parallel to the viewing direction")
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    out = torch.eye(4, dtype=torch.float64)
    out[:3, 0], out[:3, 1], out[:3, 2], out[:3, 3] = x, y, z, e
    return out


# --------------------------------------------------------------------------------------------------
# intrinsics and rays
# --------------------------------------------------------------------------------------------------

def rescale_intrinsics(K: ArrayLike, src_hw: Sequence[int], dst_hw: Sequence[int]) -> torch.Tensor:
    """Intrinsics (..., 3, 3) for an image resized from ``src_hw`` to ``dst_hw`` (height, width).

    Pixel-corner convention (see module docstring): x' = x * W'/W and y' = y * H'/H, so row 0
    (fx, skew, cx) scales by the width ratio and row 1 (fy, cy) by the height ratio; row 2 is kept.
    """
    k = _as_tensor(K, "rescale_intrinsics K")
    if k.shape[-2:] != (3, 3):
        raise ValueError(f"rescale_intrinsics expects K of shape (..., 3, 3), got {tuple(k.shape)}")
    (sh, sw), (dh, dw) = _hw(src_hw, "src_hw"), _hw(dst_hw, "dst_hw")
    scale = torch.tensor([dw / sw, dh / sh, 1.0], dtype=torch.float64, device=k.device)
    return (k.to(torch.float64) * scale[:, None]).to(_out_dtype(k))


def ray_directions(K: ArrayLike, hw: Sequence[int]) -> torch.Tensor:
    """Camera-frame unit ray directions (N, h, w, 3) through the grid points (u, v) = (j, i).

    ``K`` is (N, 3, 3) or (3, 3) at resolution ``hw``. The grid samples integer pixel coordinates, as the
    released SANA-WM's ``prepare_camera`` does at latent resolution: the checkpoint was trained on exactly
    these rays, so following the release (not the pixel-centre convention) keeps its weights valid.
    Returned in float64.
    """
    k = _as_tensor(K, "ray_directions K").to(torch.float64)
    if k.ndim == 2:
        k = k[None]
    if k.ndim != 3 or k.shape[-2:] != (3, 3):
        raise ValueError(f"ray_directions expects K of shape (N, 3, 3), got {tuple(k.shape)}")
    h, w = _hw(hw, "hw")
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=k.device),
                          torch.arange(w, dtype=torch.float64, device=k.device), indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], -1)  # (h, w, 3) homogeneous grid points
    # K^-1 via a triangular solve: K is upper triangular, so this is exact and never forms an inverse.
    d = torch.linalg.solve_triangular(k[:, None], pix.reshape(1, -1, 3, 1).expand(k.shape[0], -1, 3, 1),
                                      upper=True)[..., 0]
    d = d / d.norm(dim=-1, keepdim=True)
    return d.reshape(k.shape[0], h, w, 3)


def plucker_rays(c2w: ArrayLike, K: ArrayLike, hw: Sequence[int]) -> torch.Tensor:
    """Per-pixel Plücker rays (N, 6, h, w): channels 0-2 the world-space unit direction d, 3-5 the
    moment o x d, with o the camera centre in metres.

    Args:
        c2w: (N, 4, 4) camera-to-world poses.
        K: (N, 3, 3) intrinsics already expressed at resolution ``hw`` (see ``rescale_intrinsics``).
        hw: (h, w) of the ray grid.
    """
    c, k = _checked(c2w, K, "plucker_rays", atol=1e-3)
    dtype = _out_dtype(_as_tensor(c2w, "c2w"))
    d_cam = ray_directions(k, hw)  # (N, h, w, 3)
    R, o = c[:, :3, :3], c[:, :3, 3]
    d = torch.einsum("nij,nhwj->nhwi", R, d_cam)
    m = torch.linalg.cross(o[:, None, None, :].expand_as(d), d, dim=-1)
    return torch.cat([d, m], -1).permute(0, 3, 1, 2).contiguous().to(dtype)


# --------------------------------------------------------------------------------------------------
# the network's camera input
# --------------------------------------------------------------------------------------------------

RAYMAP_DIM = 20  # flattened relative c2w (16) + fx, fy, cx, cy at latent scale (4)


@dataclass(frozen=True)
class CameraCondition:
    """Camera input of the network for B videos of F latent frames on an h x w latent grid.

    The two tensors are exactly what the released SANA-WM consumes (``SanaWMTransformer3DModel``'s
    ``camera_conditions`` and ``chunk_plucker``), in our frame-major layout:

    Attributes:
        raymap: (B, F, 20) per latent frame, the row-major flattened camera-to-world pose relative to raw
            frame 0 followed by (fx, fy, cx, cy) at latent resolution. Drives branch A (UCPE attention);
            the network derives its per-ray matrices from it.
        plucker: (B, F, 6*ts, h, w) Plücker rays of the ts raw frames behind each latent frame; channel
            ``slot * 6 + c`` is component c of raw frame ``slot`` (branch B).
    """

    raymap: torch.Tensor
    plucker: torch.Tensor

    def __post_init__(self) -> None:
        r, p = self.raymap, self.plucker
        if not (isinstance(p, torch.Tensor) and isinstance(r, torch.Tensor)):
            raise TypeError("CameraCondition.raymap and .plucker must be torch tensors")
        if p.ndim != 5 or p.shape[2] % 6 != 0:
            raise ValueError(f"CameraCondition.plucker must be (B, F, 6*ts, h, w), got {tuple(p.shape)}")
        if r.ndim != 3 or r.shape[-1] != RAYMAP_DIM:
            raise ValueError(f"CameraCondition.raymap must be (B, F, {RAYMAP_DIM}), got {tuple(r.shape)}")
        if r.shape[:2] != p.shape[:2]:
            raise ValueError(f"CameraCondition: raymap {tuple(r.shape)} and plucker {tuple(p.shape)} disagree "
                             f"on batch or frames")

    @property
    def num_frames(self) -> int:
        """Latent frames F."""
        return self.plucker.shape[1]

    @property
    def temporal_stride(self) -> int:
        """Raw frames per latent frame (ts = plucker channels / 6)."""
        return self.plucker.shape[2] // 6

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> CameraCondition:
        """Copy on ``device`` and/or in floating ``dtype``."""
        return CameraCondition(self.raymap.to(device=device, dtype=dtype),
                               self.plucker.to(device=device, dtype=dtype))

    def slice_frames(self, start: int, stop: int) -> CameraCondition:
        """Condition for latent frames [start, stop) (e.g. one chunk at streaming inference)."""
        if not 0 <= start < stop <= self.num_frames:
            raise ValueError(f"slice_frames: need 0 <= start < stop <= {self.num_frames}, got [{start}, {stop})")
        return CameraCondition(self.raymap[:, start:stop], self.plucker[:, start:stop])

    def select_frames(self, index: torch.Tensor) -> CameraCondition:
        """Condition for the latent frames ``index`` (1-D long tensor), in that order."""
        return CameraCondition(self.raymap[:, index], self.plucker[:, index])

    def select_batch(self, index: torch.Tensor | slice) -> CameraCondition:
        """Condition for the batch items ``index``."""
        return CameraCondition(self.raymap[index], self.plucker[index])

    def held_still(self) -> CameraCondition:
        """The same cameras held at frame 0's pose: identity relative pose in every latent frame, each
        latent frame's own intrinsics (raymap[..., 16:]) in all its ts Plücker slots. The "no camera
        motion" input of camera guidance (``model.sampling``). Shapes as ``self``: raymap (B,F,20),
        plucker (B,F,6*ts,h,w); equal to ``camera_condition`` of identity poses when K is constant."""
        B, F = self.raymap.shape[:2]
        h, w = self.plucker.shape[-2:]
        intr = self.raymap[..., 16:].to(torch.float64)  # (B,F,4) fx, fy, cx, cy at latent scale
        K = torch.zeros(B * F, 3, 3, dtype=torch.float64, device=intr.device)
        K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2] = intr.reshape(B * F, 4).unbind(-1)
        K[:, 2, 2] = 1.0
        eye = torch.eye(4, dtype=torch.float64, device=intr.device).expand(B * F, 4, 4)
        rays = plucker_rays(eye, K, (h, w)).reshape(B, F, 6, h, w).repeat(1, 1, self.temporal_stride, 1, 1)
        raymap = torch.cat([eye.reshape(B, F, 16), intr], dim=-1)
        return CameraCondition(raymap.to(self.raymap.dtype), rays.to(self.plucker.dtype))

    @staticmethod
    def cat(items: Sequence[CameraCondition]) -> CameraCondition:
        """Concatenate along the batch (e.g. [cond; uncond] for classifier-free guidance)."""
        return CameraCondition(torch.cat([c.raymap for c in items]), torch.cat([c.plucker for c in items]))

    def diffusers_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(camera_conditions (B,F,20), chunk_plucker (B,6*ts,F,h,w)) in the reference's layout."""
        return self.raymap, self.plucker.permute(0, 2, 1, 3, 4)


def latent_frame_groups(num_latent_frames: int, temporal_stride: int, num_raw_frames: int | None = None,
                        ) -> torch.Tensor:
    """Raw frame indices (F, ts) whose Plücker rays fill each latent frame's ts slots.

    Following the release's ``prepare_camera``: latent frame f >= 1 takes raw frames ts*f - ts + 1 .. ts*f
    (the frames its causal-VAE latent summarises); latent frame 0 takes raw frames 0 .. ts-1, a window
    that starts at the clip. Indices past the last raw frame repeat it. The last column of f >= 1 is the
    raw frame ts*f whose pose the raymap carries.
    """
    if num_latent_frames < 1 or temporal_stride < 1:
        raise ValueError(f"need F >= 1 and ts >= 1, got F={num_latent_frames}, ts={temporal_stride}")
    n = num_raw_frames if num_raw_frames is not None else 1 + temporal_stride * (num_latent_frames - 1)
    f = torch.arange(num_latent_frames)[:, None]
    slot = torch.arange(temporal_stride)[None, :]
    start = (temporal_stride * f - (temporal_stride - 1)).clamp_min(0)
    return (start + slot).clamp_max(n - 1)


def camera_condition(
    c2w: ArrayLike,
    K: ArrayLike,
    image_hw: Sequence[int],
    latent_hw: Sequence[int],
    temporal_stride: int,
    *,
    dtype: torch.dtype | None = None,
) -> CameraCondition:
    """Build the network's camera input from raw-frame poses (the release's ``prepare_camera``, batched).

    Args:
        c2w: (B, N, 4, 4) camera-to-world poses per raw frame (any reference frame, metres).
        K: (B, N, 3, 3) intrinsics at ``image_hw`` (or (B, 3, 3) shared by all frames of an item).
        image_hw: (H, W) pixel size the intrinsics refer to.
        latent_hw: (h, w) latent grid; intrinsics are rescaled to it.
        temporal_stride: ts raw frames per latent frame; N must equal 1 + ts*(F-1).
        dtype: output dtype; default the input's floating dtype (float32 for non-float32/64 input).

    Returns:
        ``CameraCondition`` with ``raymap`` (B, F, 20) and ``plucker`` (B, F, 6*ts, h, w).

    Poses are made relative to each item's frame 0 (metric, no rescaling). The raymap of latent frame f
    carries raw frame ts*f — the newest frame its causal latent summarises (frame 0 for the conditioning
    latent). Geometry runs in float64 and is cast at the end.
    """
    c = _as_tensor(c2w, "camera_condition c2w")
    k = _as_tensor(K, "camera_condition K")
    if c.ndim != 4 or tuple(c.shape[-2:]) != (4, 4):
        raise ValueError(f"camera_condition: c2w must be (B, N, 4, 4), got {tuple(c.shape)}")
    if k.ndim not in (3, 4) or tuple(k.shape[-2:]) != (3, 3) or k.shape[0] != c.shape[0]:
        raise ValueError(f"camera_condition: K must be (B, N, 3, 3) or (B, 3, 3) with B={c.shape[0]}, "
                         f"got {tuple(k.shape)}")
    ts = int(temporal_stride)
    if ts != temporal_stride or ts < 1:
        raise ValueError(f"camera_condition: temporal_stride must be a positive integer, got {temporal_stride}")
    B, N = c.shape[:2]
    if B == 0:
        raise ValueError("camera_condition: empty batch (B == 0)")
    if (N - 1) % ts != 0 or N < 1:
        lo = 1 + ts * max(0, (N - 1) // ts)
        raise ValueError(f"camera_condition: N = {N} raw frames, but a causal VAE with temporal stride {ts} "
                         f"needs N == 1 + {ts}*(F-1) for an integer F (e.g. {lo} or {lo + ts})")
    F = 1 + (N - 1) // ts
    h, w = _hw(latent_hw, "latent_hw")
    _hw(image_hw, "image_hw")
    out_dtype = dtype or _out_dtype(c)

    cs, ks = [], []
    for b in range(B):
        cb, kb = _checked(c[b], k[b], f"camera_condition batch item {b}", atol=1e-3)
        cs.append(cb)
        ks.append(kb)
    c64 = relative_to_first(torch.stack(cs))  # (B, N, 4, 4) float64
    k64 = rescale_intrinsics(torch.stack(ks), image_hw, latent_hw)

    pl = plucker_rays(c64.reshape(B * N, 4, 4), k64.reshape(B * N, 3, 3), (h, w)).reshape(B, N, 6, h, w)
    groups = latent_frame_groups(F, ts, N).to(c.device)  # (F, ts)
    plucker = pl[:, groups].reshape(B, F, ts * 6, h, w)  # channel = slot * 6 + component

    frames = torch.arange(F, device=c.device) * ts
    kf = k64[:, frames]
    intr = torch.stack([kf[..., 0, 0], kf[..., 1, 1], kf[..., 0, 2], kf[..., 1, 2]], dim=-1)  # (B, F, 4)
    raymap = torch.cat([c64[:, frames].reshape(B, F, 16), intr], dim=-1)
    return CameraCondition(raymap.to(out_dtype), plucker.to(out_dtype))
