"""FFN of every block: GLU + depthwise 3×3 spatial conv + causal temporal conv (kernel 3), mlp ratio 3.

The temporal conv is CAUSAL (taps t−2, t−1, t): one network then runs bidirectional, chunk-causal and
streaming with identical results inside the past context, and streaming carries only the last k−1 frames
of hidden activations per block (constant memory). Both convs start as identity.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.config import NetworkConfig


class GLUConvFFN(nn.Module):
    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        D, Hm = cfg.hidden_dim, cfg.mlp_hidden_dim
        self.fc1 = nn.Linear(D, 2 * Hm)
        self.dw_conv = nn.Conv2d(Hm, Hm, 3, padding=1, groups=Hm)
        self.t_conv = nn.Parameter(torch.zeros(Hm, cfg.temporal_conv_kernel))
        self.fc2 = nn.Linear(Hm, D)
        with torch.no_grad():
            nn.init.dirac_(self.dw_conv.weight)
            self.dw_conv.bias.zero_()
            self.t_conv[:, -1] = 1.0

    def forward(self, x: torch.Tensor, hw: tuple[int, int], tail: torch.Tensor | None = None,
                streaming: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B,F,S,D) -> (out (B,F,S,D), new tail (B,k-1,S,Hm) if streaming)."""
        B, F_, S, _ = x.shape
        a, b = self.fc1(x).chunk(2, dim=-1)
        h = a * F.silu(b)  # (B,F,S,Hm)
        Hm = h.shape[-1]
        sp = h.reshape(B * F_, *hw, Hm).permute(0, 3, 1, 2)
        h = self.dw_conv(sp).permute(0, 2, 3, 1).reshape(B, F_, S, Hm)
        k = self.t_conv.shape[1]
        if tail is None:
            tail = h.new_zeros(B, k - 1, S, Hm)
        padded = torch.cat([tail, h], dim=1)
        h = sum(self.t_conv[:, j] * padded[:, j:j + F_] for j in range(k))
        out = self.fc2(h)
        return out, (padded[:, padded.shape[1] - (k - 1):] if streaming else None)
