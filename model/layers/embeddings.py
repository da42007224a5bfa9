"""Input embeddings and adaLN-single timestep conditioning (per LATENT FRAME, so chunks may sit at
different noise levels — the basis of diffusion forcing and streaming)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """t (...,) -> (..., dim) sin/cos features."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """σ (B,F) in [0,1] -> embedding (B,F,D) and the shared adaLN modulation (B,F,6,D)."""

    def __init__(self, hidden: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.mlp(sinusoidal_embedding(sigma * 1000.0, self.freq_dim).to(self.mlp[0].weight.dtype))
        mod = self.t_block(emb).unflatten(-1, (6, -1))
        return emb, mod
