"""Cross-attention from video tokens to text features, with RMS q/k norm and a learned null token.

The null key/value is always attendable, so an all-False text mask (the unconditional branch of CFG and
text dropout in training) is well defined instead of a softmax over nothing.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from model.config import NetworkConfig
from model.ops.softmax_attention import attention


class TextCrossAttention(nn.Module):
    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        D, H, Dh = cfg.hidden_dim, cfg.num_heads, cfg.head_dim
        self.H, self.Dh = H, Dh
        self.q = nn.Linear(D, D)
        self.kv = nn.Linear(cfg.text_dim, 2 * D)
        self.q_norm = nn.RMSNorm(Dh, eps=cfg.norm_eps)
        self.k_norm = nn.RMSNorm(Dh, eps=cfg.norm_eps)
        self.null_kv = nn.Parameter(torch.randn(1, 1, 2 * D) * 0.02)
        self.out_proj = nn.Linear(D, D)

    def forward(self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """x (B,F,S,D), text (B,L,Dt), text_mask (B,L) bool -> (B,F,S,D)."""
        B, F_, S, D = x.shape
        L = text.shape[1]
        q = self.q_norm(self.q(x).view(B, F_ * S, self.H, self.Dh).transpose(1, 2))
        kv = torch.cat([self.null_kv.expand(B, 1, -1), self.kv(text)], dim=1)  # (B,1+L,2D)
        k, v = kv.view(B, 1 + L, 2, self.H, self.Dh).permute(2, 0, 3, 1, 4)
        k = self.k_norm(k)
        mask = torch.cat([text_mask.new_ones(B, 1), text_mask.bool()], dim=1)[:, None, None, :]
        out = attention(q, k, v, mask)  # (B,H,F*S,Dh)
        return self.out_proj(out.transpose(1, 2).reshape(B, F_, S, D))
