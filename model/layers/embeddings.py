"""Input embeddings: timesteps (adaLN-single, per LATENT FRAME so chunks may sit at different noise
levels — the basis of diffusion forcing and streaming), text, latent and Plücker patch embeddings.

Names and numerics follow the release: the sinusoidal timestep features are computed in float32
(diffusers ``Timesteps(256, flip_sin_to_cos=True)``: [cos | sin]), then ``t_embedder`` (linear_1, SiLU,
linear_2) and the shared ``t_block`` (SiLU, Linear → 6·D) in the model's dtype.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from model.layers.pointwise import ConvShapedLinear


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """t (...,) timesteps in [0, 1000] -> (..., dim) float32 [cos | sin] features."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    args = t.float()[..., None] * torch.exp(exponent)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepMLP(nn.Module):
    """Sinusoid (float32) -> Linear -> SiLU -> Linear; keys ``linear_1``, ``linear_2``."""

    def __init__(self, hidden: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.linear_1 = nn.Linear(freq_dim, hidden)
        self.linear_2 = nn.Linear(hidden, hidden)

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        """timesteps (...,) in [0, 1000] -> (..., D)."""
        f = sinusoidal_embedding(timesteps, self.freq_dim).to(self.linear_1.weight.dtype)
        return self.linear_2(nn.functional.silu(self.linear_1(f)))


class CaptionMLP(nn.Module):
    """Text features (B,L,Dt) -> (B,L,D): fc1, tanh-GELU, fc2 (release: ``y_embedder.y_proj``)."""

    def __init__(self, text_dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(text_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(y), approximate="tanh"))


class PatchEmbed3D(nn.Module):
    """(B,C,F,h,w) -> tokens (B,F,h·w,D) through a 1×1×1 conv under ``proj`` (patch size 1; the release's
    ``Conv3d`` layout, computed as a linear over channels)."""

    def __init__(self, in_channels: int, hidden: int) -> None:
        super().__init__()
        self.proj = ConvShapedLinear(in_channels, hidden, conv_dims=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, F_, h, w = x.shape
        return self.proj(x.permute(0, 2, 3, 4, 1).reshape(B, F_, h * w, C))
