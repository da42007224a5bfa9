"""FFN of every block (release: ``GLUMBConvTemp``): a gated inverted bottleneck over space, then a
residual dense temporal conv over frames.

    h = SiLU(conv1x1(x))  (C -> 2·Hm)  ->  depthwise 3×3 (2·Hm)  ->  value ⊙ SiLU(gate)  ->  conv1x1 (Hm -> C)
    y = h + t_conv(h)     (taps t-1, t, t+1; mode-aware, see ``temporal_conv``)

Hm = mlp_ratio · C (3 in the paper). Submodule names (``inverted_conv.conv`` …) are the release's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import NetworkConfig
from model.layers.pointwise import ConvShapedLinear
from model.layers.temporal_conv import ResidualTemporalConv


class _Conv(nn.Module):
    """A conv under the attribute ``conv`` (the checkpoint's key layout). 1×1 convs are channels-last
    linears (``ConvShapedLinear``); the depthwise 3×3 stays an ``nn.Conv2d`` on NCHW."""

    def __init__(self, c_in: int, c_out: int, kernel: int, groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        if kernel == 1 and groups == 1:
            self.conv = ConvShapedLinear(c_in, c_out, bias=bias, conv_dims=2)
        else:
            self.conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class GLUMBConvTemp(nn.Module):
    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        C, Hm = cfg.hidden_dim, cfg.mlp_hidden_dim
        self.inverted_conv = _Conv(C, 2 * Hm, 1)
        self.depth_conv = _Conv(2 * Hm, 2 * Hm, 3, groups=2 * Hm)
        self.point_conv = _Conv(Hm, C, 1, bias=False)
        self.t_conv = ResidualTemporalConv(C, cfg.temporal_conv_kernel)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], chunk_lens: list[int] | None = None,
                tail: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B,F,S,C) -> (y (B,F,S,C), temporal-conv tail (B,1,S,C) for streaming)."""
        B, F_, S, C = x.shape
        h = F.silu(self.inverted_conv(x))  # (B,F,S,2Hm), 1x1 conv as a linear
        h = h.reshape(B * F_, *hw, -1).permute(0, 3, 1, 2)
        h = self.depth_conv(h).permute(0, 2, 3, 1)  # (B*F,h,w,2Hm)
        value, gate = h.chunk(2, dim=-1)
        h = self.point_conv(value * F.silu(gate)).reshape(B, F_, S, C)
        return self.t_conv(h, chunk_lens, tail)
