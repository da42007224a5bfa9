"""UCPE camera encoding of branch A: per-ray world-to-ray transforms applied to attention features.

Each latent token gets a rigid transform P_i (world -> the local frame of its viewing ray: z along the
ray, x perpendicular to the ray and the camera's y axis), built from the raymap exactly as the released
SANA-WM builds it. A head's channels split in two halves:

    first half  (groups of 4): q̃ = P_iᵀ q,  k̃ = P_j⁻¹ k,  ṽ = P_j⁻¹ v,  out = P_i õ
    second half (complex pairs): RoPE with a sub-table of the block's 3D RoPE (conjugate on the output)

so q̃ᵀk̃ = qᵀ P_i P_j⁻¹ k and the output depend only on RELATIVE ray poses. Translations make P⁻¹ stretch
features, so each transformed tensor is scaled back under its pre-transform RMS (``downscale_to_rms``);
the GDN camera path further divides β by the key's remaining energy inflation (see the mixer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.layers.rope import apply_rope_complex


def rigid_inverse(T: torch.Tensor) -> torch.Tensor:
    """Closed-form inverse of rigid transforms (..., 4, 4)."""
    Rt = T[..., :3, :3].transpose(-1, -2)
    out = torch.zeros_like(T)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -(Rt @ T[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def world_to_ray_matrices(raymap: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Per-token world->ray transforms (B, F*h*w, 4, 4) from a raymap (B, F, 20) on an h×w latent grid.

    Pinhole rays through the integer grid points (the release fixes the unified-camera-model ξ at 0, for
    which its unprojection reduces to normalise(K⁻¹[u, v, 1])). Frame: z = world ray, x = normalise(
    camera y × z), y = z × x; translation −Rᵀc. Runs in the raymap's dtype, as the reference does.
    """
    B, F_, _ = raymap.shape
    h, w = hw
    c2w = raymap[..., :16].reshape(B, F_, 4, 4)
    fx, fy, cx, cy = raymap[..., 16:20].unbind(-1)  # (B, F) each
    v, u = torch.meshgrid(torch.arange(h, dtype=raymap.dtype, device=raymap.device),
                          torch.arange(w, dtype=raymap.dtype, device=raymap.device), indexing="ij")
    x = (u - cx[..., None, None]) / fx[..., None, None]  # (B, F, h, w)
    y = (v - cy[..., None, None]) / fy[..., None, None]
    d_cam = torch.stack([x, y, torch.ones_like(x)], -1)
    R, t = c2w[..., :3, :3], c2w[..., :3, 3]
    z_ray = F.normalize(torch.einsum("bfij,bfhwj->bfhwi", R, d_cam), dim=-1, eps=1e-6)
    cam_y = R[..., :, 1][:, :, None, None, :].expand_as(z_ray)
    x_ray = F.normalize(torch.cross(cam_y, z_ray, dim=-1), dim=-1, eps=1e-6)
    y_ray = F.normalize(torch.cross(z_ray, x_ray, dim=-1), dim=-1, eps=1e-6)
    R_w2l = torch.stack([x_ray, y_ray, z_ray], dim=-2)  # rows = ray axes in world coordinates
    P = torch.zeros(B, F_, h, w, 4, 4, dtype=raymap.dtype, device=raymap.device)
    P[..., :3, :3] = R_w2l
    P[..., :3, 3] = -torch.einsum("bfhwij,bfj->bfhwi", R_w2l, t)
    P[..., 3, 3] = 1.0
    return P.reshape(B, F_ * h * w, 4, 4)


@dataclass
class RayTransforms:
    """What every block's camera branch needs, built once per forward.

    P, P_inv (B, N, 4, 4) world->ray transforms of the N tokens and their inverses; rope (N, Dh/4) complex
    RoPE sub-table for the rotated half of the camera heads.
    """

    P: torch.Tensor
    P_inv: torch.Tensor
    rope: torch.Tensor

    @classmethod
    def build(cls, raymap: torch.Tensor, hw: tuple[int, int], rope: torch.Tensor) -> RayTransforms:
        P = world_to_ray_matrices(raymap, hw)
        return cls(P=P, P_inv=rigid_inverse(P), rope=rope)


def ucpe_transform(x: torch.Tensor, M: torch.Tensor, rope: torch.Tensor, inverse_rope: bool = False) -> torch.Tensor:
    """Apply per-token 4×4 matrices to the first half of each head and RoPE to the second half.

    x (B,H,N,Dh); M (B,N,4,4); rope (N, Dh/4) complex. Returns (B,H,N,Dh).
    """
    B, H, N, Dh = x.shape
    half = Dh // 2
    proj, rot = x[..., :half], x[..., half:]
    proj = torch.einsum("bnij,bhnkj->bhnki", M.to(x.dtype), proj.reshape(B, H, N, -1, 4)).reshape(B, H, N, half)
    rot = apply_rope_complex(rot, rope.conj() if inverse_rope else rope)
    return torch.cat([proj, rot], dim=-1)


def downscale_to_rms(reference: torch.Tensor, transformed: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Scale ``transformed`` (…, Dh) per token so its RMS over Dh does not exceed ``reference``'s."""
    ref = reference.square().mean(-1, keepdim=True).add(eps).sqrt()
    out = transformed.square().mean(-1, keepdim=True).add(eps).sqrt()
    return transformed * (ref / out.clamp_min(eps)).clamp(max=1.0)
