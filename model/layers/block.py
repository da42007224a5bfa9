"""One hybrid DiT block (release: ``SanaVideoMSCamCtrlBlock``). The mixer (GDN or softmax) is chosen in
``__init__``; ``forward`` never branches on it.

    x += gate_msa · mixer(LN(x)·(1+scale_msa) + shift_msa)         (camera branch A inside the mixer)
    x += plucker_proj(plucker tokens)                               (camera branch B)
    x += cross_attn(x, text)
    x += gate_mlp · ffn(LN(x)·(1+scale_mlp) + shift_mlp)
The six modulations are the shared adaLN-single output (per latent frame) plus this block's table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from model.config import ChunkConfig, NetworkConfig
from model.layers.cross_attention import TextCrossAttention
from model.layers.ffn import GLUMBConvTemp
from model.layers.self_attention import GDNMixer, GDNState, SoftmaxMixer
from model.layers.ucpe import RayTransforms


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
        self.norm1 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.attn = SoftmaxMixer(cfg, chunks) if self.is_softmax else GDNMixer(cfg, scan_backend)
        self.cross_attn = TextCrossAttention(cfg)
        self.mlp = GLUMBConvTemp(cfg)
        self.scale_shift_table = nn.Parameter(torch.randn(6, D) / D ** 0.5)
        self.plucker_proj = nn.Linear(D, D) if cfg.plucker_branch else None
        if self.plucker_proj is not None:
            # Zero-initialised (our init): a fresh branch B leaves the base model unchanged.
            nn.init.zeros_(self.plucker_proj.weight)
            nn.init.zeros_(self.plucker_proj.bias)

    def empty_state(self) -> BlockState:
        return BlockState(mixer=self.attn.empty_state() if self.is_softmax else GDNState())

    def forward(self, x: torch.Tensor, t_mod: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                rope: torch.Tensor, hw: tuple[int, int], rays: RayTransforms | None,
                plucker: torch.Tensor | None, mode: str, chunk_lens: list[int] | None,
                state: BlockState | None = None) -> tuple[torch.Tensor, BlockState | None]:
        """x (B,F,S,D); t_mod (B,F,6,D); text (B,L,D) embedded; plucker (B,F,S,D) or None -> (x, state)."""
        B, F_, S, D = x.shape
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = (t_mod + self.scale_shift_table).unsqueeze(3).unbind(2)
        streaming = state is not None
        h = self.norm1(x) * (1 + scale_a) + shift_a
        a, mixer_state = self.attn(h, rope, rays, mode, chunk_lens, state.mixer if streaming else None)
        x = x + gate_a * a
        if plucker is not None and self.plucker_proj is not None:
            x = x + self.plucker_proj(plucker)
        x = x + self.cross_attn(x.reshape(B, F_ * S, D), text, text_mask).view(B, F_, S, D)
        h = self.norm2(x) * (1 + scale_m) + shift_m
        conv_lens = None if mode == "bidirectional" else chunk_lens
        f, tail = self.mlp(h, hw, conv_lens, state.ffn_tail if streaming else None)
        x = x + gate_m * f
        return x, (BlockState(mixer=mixer_state, ffn_tail=tail) if streaming else None)
