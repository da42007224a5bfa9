"""Softmax attention over video tokens: masks for chunk-causal attention and a bounded K/V cache.

Chunk-causal visibility (used in training AND streaming so the two see exactly the same context): a query
in chunk c sees every token of chunk c, the first ``sink`` chunks, and the ``recent`` chunks right before c.
Streaming keeps exactly those chunks in a :class:`ChunkKVCache`, so its memory is bounded by
(sink + recent) chunks whatever the video length. Attention itself goes through
``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient kernels on GPU, math on CPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


def chunk_ids(chunk_lens: list[int], device: torch.device | None = None) -> torch.Tensor:
    """Chunk index of every latent frame: (F,) long, e.g. [4, 3] -> [0,0,0,0,1,1,1]."""
    return torch.repeat_interleave(torch.arange(len(chunk_lens), device=device),
                                   torch.tensor(chunk_lens, device=device))


def chunk_causal_mask(chunk_lens: list[int], tokens_per_frame: int, *, sink_chunks: int = 1,
                      recent_chunks: int | None = 2, device: torch.device | None = None) -> torch.Tensor:
    """Boolean attention mask (True = may attend) of shape (F*S, F*S) for chunk-causal attention.

    ``recent_chunks=None`` means unbounded causal context (every earlier chunk visible).
    """
    cid = chunk_ids(chunk_lens, device)  # (F,)
    qc, kc = cid[:, None], cid[None, :]
    allowed = kc == qc
    if recent_chunks is None:
        allowed |= kc < qc
    else:
        allowed |= (kc < qc) & (kc >= qc - recent_chunks)
        allowed |= (kc < qc) & (kc < sink_chunks)
    return allowed.repeat_interleave(tokens_per_frame, 0).repeat_interleave(tokens_per_frame, 1)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              scale: float | None = None) -> torch.Tensor:
    """Multi-head softmax attention. q (B,H,Lq,D), k/v (B,H,Lk,D), mask (Lq,Lk) or (B,1,1,Lk) bool or None,
    scale None = 1/√D -> (B,H,Lq,D)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


@dataclass
class ChunkKVCache:
    """K/V of past chunks for one attention path: the first ``sink`` chunks plus the ``recent`` latest.

    Each entry is a (k, v) pair of shape (B,H,L_chunk,D). ``append`` returns a NEW cache (the old one is
    untouched), so a sampler can run several denoising steps against the same context and keep only the
    cache from the clean pass.
    """

    sink: int = 1
    recent: int = 2
    sink_chunks: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    recent_chunks: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> ChunkKVCache:
        sink, recent = list(self.sink_chunks), list(self.recent_chunks)
        if len(sink) < self.sink:
            sink.append((k, v))
        else:
            recent = (recent + [(k, v)])[-self.recent:]
        return ChunkKVCache(self.sink, self.recent, sink, recent)

    def keys_values(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Concatenated cached (k, v), each (B,H,L_cached,D), or None when empty."""
        entries = self.sink_chunks + self.recent_chunks
        if not entries:
            return None
        return torch.cat([e[0] for e in entries], dim=2), torch.cat([e[1] for e in entries], dim=2)

    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for e in self.sink_chunks + self.recent_chunks for t in e)
