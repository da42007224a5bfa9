"""UCPE-style relative camera encoding: per-ray rigid 4×4 transforms applied to attention features.

Each token carries a per-ray frame T_i (camera-to-world composed with the rotation taking +Z onto the
token's ray, from ``model.camera.ray_transforms``). Head channels are grouped in 4-vectors and

    q̃_i = T_i^{-T} q_i,   k̃_j = T_j k_j,   ṽ_j = T_j v_j,   o_i = T_i^{-1} õ_i,

so q̃_iᵀ k̃_j = q_iᵀ (T_i^{-1} T_j) k_j and o_i = Σ_j a_ij (T_i^{-1} T_j) v_j depend only on RELATIVE ray
poses: re-expressing every pose in another world frame changes nothing (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def rigid_inverse(T: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid transforms (..., 4, 4) without a general matrix inverse."""
    R, t = T[..., :3, :3], T[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    top = torch.cat([Rt, -Rt @ t], dim=-1)
    bottom = T[..., 3:, :].new_zeros(T.shape[:-2] + (1, 4))
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], dim=-2)


@dataclass
class RayFrames:
    """Precomputed per-ray matrices for one forward: each (B,F,S,4,4)."""

    T: torch.Tensor
    T_inv: torch.Tensor
    T_inv_t: torch.Tensor  # T^{-T}

    @classmethod
    def from_transforms(cls, T: torch.Tensor, translation_scale: float = 1.0) -> "RayFrames":
        T = T.clone()
        T[..., :3, 3] = T[..., :3, 3] * translation_scale
        T_inv = rigid_inverse(T)
        return cls(T=T, T_inv=T_inv, T_inv_t=T_inv.transpose(-1, -2))


def apply_ray_matrix(x: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """Apply per-token 4×4 matrices to every 4-channel group. x (B,H,F,S,Dh), M (B,F,S,4,4) -> same as x."""
    xg = x.unflatten(-1, (-1, 4))  # (B,H,F,S,G,4)
    return torch.einsum("bfsij,bhfsgj->bhfsgi", M.to(x.dtype), xg).flatten(-2)
