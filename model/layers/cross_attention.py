"""Cross-attention from video tokens to text features (release: ``MultiHeadCrossAttention``).

q = RMSNorm(q_linear(x)), k = RMSNorm(k), both over the whole hidden width; softmax over the valid
text tokens. Beyond the release: a text whose mask has NO valid token (the unconditional branch of
classifier-free guidance, text dropout in training) contributes exactly zero instead of the NaN a
softmax over nothing would give.
"""

from __future__ import annotations

import torch
from torch import nn

from model.config import NetworkConfig
from model.ops.softmax_attention import attention


class TextCrossAttention(nn.Module):
    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        D = cfg.hidden_dim
        self.H = cfg.resolved_cross_heads
        self.Dh = D // self.H
        self.q_linear = nn.Linear(D, D)
        self.kv_linear = nn.Linear(D, 2 * D)
        self.proj = nn.Linear(D, D)
        self.q_norm = nn.RMSNorm(D, eps=cfg.norm_eps)
        self.k_norm = nn.RMSNorm(D, eps=cfg.norm_eps)

    def forward(self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """x (B,N,D) tokens, text (B,L,D) embedded text, text_mask (B,L) bool -> (B,N,D)."""
        B, N, D = x.shape
        L = text.shape[1]
        q = self.q_norm(self.q_linear(x)).view(B, N, self.H, self.Dh).transpose(1, 2)
        k, v = self.kv_linear(text).view(B, L, 2, D).unbind(2)
        k = self.k_norm(k).view(B, L, self.H, self.Dh).transpose(1, 2)
        v = v.reshape(B, L, self.H, self.Dh).transpose(1, 2)
        mask = text_mask.bool()
        has_text = mask.any(dim=1)  # (B,)
        safe = mask | ~has_text[:, None]  # an empty row attends somewhere; its output is zeroed below
        out = attention(q, k, v, safe[:, None, None, :]).transpose(1, 2).reshape(B, N, D)
        out = out * has_text.to(out.dtype)[:, None, None]
        return self.proj(out)
