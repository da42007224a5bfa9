"""One hybrid DiT block. The mixer (GDN or softmax) is chosen in ``__init__``; ``forward`` never branches on it.

Order (DESIGN.md §2): adaLN → self-attention (with camera branch A inside) → + Plücker branch B →
+ cross-attention to text → adaLN → GLU-conv FFN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from model.config import ChunkConfig, NetworkConfig
from model.layers.camera_transform import RayFrames
from model.layers.cross_attention import TextCrossAttention
from model.layers.ffn import GLUConvFFN
from model.layers.self_attention import GDNMixer, GDNState, SoftmaxMixer


@dataclass
class BlockState:
    """Streaming state of one block: the mixer's state and the FFN temporal-conv tail."""

    mixer: Any
    ffn_tail: torch.Tensor | None = None

    def num_bytes(self) -> int:
        n = self.mixer.num_bytes() if self.mixer is not None else 0
        return n + (self.ffn_tail.numel() * self.ffn_tail.element_size() if self.ffn_tail is not None else 0)


class HybridBlock(nn.Module):
    def __init__(self, cfg: NetworkConfig, index: int, chunks: ChunkConfig | None = None,
                 scan_backend: str = "torch") -> None:
        super().__init__()
        D = cfg.hidden_dim
        self.index = index
        self.is_softmax = cfg.is_softmax_block(index)
        self.norm1 = nn.LayerNorm(D, elementwise_affine=False, eps=cfg.norm_eps)
        self.norm2 = nn.LayerNorm(D, elementwise_affine=False, eps=cfg.norm_eps)
        self.attn = SoftmaxMixer(cfg, chunks) if self.is_softmax else GDNMixer(cfg, scan_backend)
        self.cross_attn = TextCrossAttention(cfg)
        self.ffn = GLUConvFFN(cfg)
        self.scale_shift_table = nn.Parameter(torch.randn(6, D) / D ** 0.5)
        if cfg.plucker_branch:
            # Branch B: zero-initialised so a fresh branch leaves the base model unchanged.
            self.plucker_proj = nn.Linear(D, D)
            nn.init.zeros_(self.plucker_proj.weight)
            nn.init.zeros_(self.plucker_proj.bias)

    def empty_state(self) -> BlockState:
        return BlockState(mixer=self.attn.empty_state() if self.is_softmax else GDNState())

    def forward(self, x: torch.Tensor, t_mod: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                rope: tuple[torch.Tensor, torch.Tensor], hw: tuple[int, int], rays: RayFrames | None,
                plucker: torch.Tensor | None, mode: str, chunk_lens: list[int] | None,
                state: BlockState | None = None) -> tuple[torch.Tensor, BlockState | None]:
        """x (B,F,S,D); t_mod (B,F,6,D); plucker (B,F,S,D) embedded rays or None -> (x, next state)."""
        mods = (t_mod + self.scale_shift_table).unsqueeze(3)  # (B,F,6,1,D)
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = mods.unbind(2)
        streaming = state is not None
        h = self.norm1(x) * (1 + scale_a) + shift_a
        a, mixer_state = self.attn(h, rope, rays, mode, chunk_lens, state.mixer if streaming else None)
        x = x + gate_a * a
        if plucker is not None and hasattr(self, "plucker_proj"):
            x = x + self.plucker_proj(plucker)
        x = x + self.cross_attn(x, text, text_mask)
        h = self.norm2(x) * (1 + scale_m) + shift_m
        f, tail = self.ffn(h, hw, state.ffn_tail if streaming else None, streaming)
        x = x + gate_m * f
        return x, (BlockState(mixer=mixer_state, ffn_tail=tail) if streaming else None)
