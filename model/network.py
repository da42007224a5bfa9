"""SANA-WM stage-1 network: a hybrid frame-wise-GDN / softmax diffusion transformer over video latents.

Input latents (B,C,F,h,w) with patch size 1 become F frames of S = h·w tokens. Every block gets a per-frame
adaLN modulation from σ (B,F), 3D RoPE, camera branch A (per-ray transforms) inside self-attention,
Plücker branch B after it, text cross-attention and a GLU-conv FFN. Output: the flow-matching velocity.

Three ways to run the same weights:
  * ``forward(mode="bidirectional")``  — whole clip, full context (offline quality).
  * ``forward(mode="chunk_causal", chunk_lens=[4,3,3,...])`` — training for autoregressive rollout.
  * ``forward_chunk(..., state)`` — streaming, one chunk at a time; GDN blocks carry a D×D state per head,
    softmax blocks a sink + 2 recent chunks of K/V, so memory does not grow with video length. Over a
    whole sequence it equals ``chunk_causal`` (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from model.config import ChunkConfig, NetworkConfig
from model.layers.block import BlockState, HybridBlock
from model.layers.camera_transform import RayFrames
from model.layers.embeddings import TimestepEmbedder
from model.layers.rope import rope_3d


@dataclass
class StreamState:
    """Everything a streaming rollout carries between chunks. ``frame_offset`` = latent frames consumed."""

    blocks: list[BlockState] = field(default_factory=list)
    frame_offset: int = 0

    def num_bytes(self) -> int:
        return sum(b.num_bytes() for b in self.blocks)


class SanaWM(nn.Module):
    """The hybrid DiT. See the module docstring for shapes and modes."""

    def __init__(self, cfg: NetworkConfig, chunks: ChunkConfig | None = None, scan_backend: str = "torch") -> None:
        super().__init__()
        self.cfg = cfg
        self.chunks = chunks or ChunkConfig()
        D = cfg.hidden_dim
        self.x_embed = nn.Linear(cfg.latent_channels * cfg.patch_size ** 2, D)
        self.t_embedder = TimestepEmbedder(D, cfg.timestep_freq_dim)
        self.plucker_embed = nn.Linear(cfg.plucker_channels, D) if cfg.plucker_branch else None
        self.blocks = nn.ModuleList(HybridBlock(cfg, i, self.chunks, scan_backend) for i in range(cfg.num_blocks))
        self.norm_out = nn.LayerNorm(D, elementwise_affine=False, eps=cfg.norm_eps)
        self.final_scale_shift = nn.Parameter(torch.randn(2, D) / D ** 0.5)
        self.proj_out = nn.Linear(D, cfg.latent_channels * cfg.patch_size ** 2)

    # ------------------------------------------------------------------------------------------------
    def _check_inputs(self, x: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                      camera) -> None:
        if x.dim() != 5 or x.shape[1] != self.cfg.latent_channels:
            raise ValueError(f"latents must be (B,{self.cfg.latent_channels},F,h,w), got {tuple(x.shape)}")
        B, _, F_, h, w = x.shape
        if sigma.shape != (B, F_):
            raise ValueError(f"sigma must be per latent frame (B,F)=({B},{F_}), got {tuple(sigma.shape)}")
        if text.dim() != 3 or text.shape[0] != B or text.shape[2] != self.cfg.text_dim:
            raise ValueError(f"text must be (B,L,{self.cfg.text_dim}) with B={B}, got {tuple(text.shape)}")
        if text_mask.shape != text.shape[:2]:
            raise ValueError(f"text_mask must be (B,L)={tuple(text.shape[:2])}, got {tuple(text_mask.shape)}")
        if camera is not None:
            if camera.plucker.shape[:2] != (B, F_) or tuple(camera.plucker.shape[-2:]) != (h, w):
                raise ValueError(f"camera.plucker must be (B,F,{self.cfg.plucker_channels},h,w)=({B},{F_},"
                                 f"{self.cfg.plucker_channels},{h},{w}), got {tuple(camera.plucker.shape)}")
            if camera.plucker.shape[2] != self.cfg.plucker_channels:
                raise ValueError(f"camera.plucker has {camera.plucker.shape[2]} channels; this network expects "
                                 f"{self.cfg.plucker_channels} (6 x temporal_stride {self.cfg.temporal_stride})")

    def _run(self, x, sigma, text, text_mask, camera, mode, chunk_lens, frame_offset, states):
        B, C, F_, h, w = x.shape
        S = h * w
        dtype = self.x_embed.weight.dtype
        tokens = self.x_embed(x.permute(0, 2, 3, 4, 1).reshape(B, F_, S, C).to(dtype))
        emb, t_mod = self.t_embedder(sigma)
        rope = rope_3d(F_, (h, w), self.cfg.resolved_rope_dims, theta=self.cfg.rope_theta,
                       frame_offset=frame_offset, device=x.device, dtype=dtype)
        rays, plucker = None, None
        if camera is not None:
            if self.cfg.camera_branch:
                rays = RayFrames.from_transforms(camera.rays.to(x.device, dtype))
            if self.plucker_embed is not None:
                p = camera.plucker.to(x.device, dtype)  # (B,F,P,h,w)
                plucker = self.plucker_embed(p.permute(0, 1, 3, 4, 2).reshape(B, F_, S, -1))
        text = text.to(dtype)
        new_states = []
        for i, block in enumerate(self.blocks):
            tokens, st = block(tokens, t_mod, text, text_mask, rope, (h, w), rays, plucker, mode, chunk_lens,
                               states[i] if states is not None else None)
            new_states.append(st)
        shift, scale = (self.final_scale_shift + emb.unsqueeze(2)).unsqueeze(3).unbind(2)  # (B,F,1,D) each
        out = self.proj_out(self.norm_out(tokens) * (1 + scale) + shift)
        v = out.view(B, F_, h, w, C).permute(0, 4, 1, 2, 3)
        return v, new_states

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                camera=None, mode: str = "bidirectional", chunk_lens: list[int] | None = None) -> torch.Tensor:
        """Velocity for a whole clip.

        x (B,C,F,h,w); sigma (B,F) in [0,1]; text (B,L,Dt); text_mask (B,L) bool; camera: CameraCondition with
        plucker (B,F,6·ts,h,w) and rays (B,F,S,4,4), or None; mode "bidirectional" | "chunk_causal"
        (chunk_lens defaults to the config's [4,3,3,…]). Returns v (B,C,F,h,w).
        """
        if mode not in ("bidirectional", "chunk_causal"):
            raise ValueError(f"mode must be 'bidirectional' or 'chunk_causal', got {mode!r}")
        self._check_inputs(x, sigma, text, text_mask, camera)
        if mode == "chunk_causal" and chunk_lens is None:
            chunk_lens = self.chunks.chunk_lengths(x.shape[2])
        v, _ = self._run(x, sigma, text, text_mask, camera, mode, chunk_lens, 0, None)
        return v

    def init_stream_state(self) -> StreamState:
        """An empty streaming state (start of a video)."""
        return StreamState(blocks=[b.empty_state() for b in self.blocks], frame_offset=0)

    def forward_chunk(self, x: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                      camera, state: StreamState) -> tuple[torch.Tensor, StreamState]:
        """Velocity for ONE chunk given the past (streaming). x (B,C,f,h,w), sigma (B,f), camera for these f
        frames. Returns (v (B,C,f,h,w), the state after this chunk). ``state`` itself is never modified, so
        denoising steps can reuse it; keep the returned state only from the pass on the clean chunk.
        """
        self._check_inputs(x, sigma, text, text_mask, camera)
        v, blocks = self._run(x, sigma, text, text_mask, camera, "chunk_causal", [x.shape[2]],
                              state.frame_offset, state.blocks)
        return v, StreamState(blocks=blocks, frame_offset=state.frame_offset + x.shape[2])

    def parameter_breakdown(self) -> dict[str, int]:
        """Parameter count per component (works on the meta device)."""
        groups: dict[str, int] = {}

        def add(name: str, n: int) -> None:
            groups[name] = groups.get(name, 0) + n

        for name, p in self.named_parameters():
            n = p.numel()
            if name.startswith("blocks."):
                rest = name.split(".", 2)[2]
                if rest.startswith("attn.cam_"):
                    add("camera branch A (cam_qkv/norms/out)", n)
                elif rest.startswith("attn.") and any(rest.startswith(f"attn.{g}") for g in
                                                      ("beta_proj", "gamma_proj", "A_log", "dt_bias", "k_conv")):
                    add("GDN gates + short conv", n)
                elif rest.startswith("attn."):
                    add("self-attention (qkv/norms/gate/out)", n)
                elif rest.startswith("plucker_proj"):
                    add("camera branch B (per-block Plücker linears)", n)
                elif rest.startswith("cross_attn."):
                    add("text cross-attention", n)
                elif rest.startswith("ffn."):
                    add("FFN (GLU + dw conv + temporal conv)", n)
                else:
                    add("adaLN tables", n)
            elif name.startswith("t_embedder"):
                add("timestep embedder + adaLN-single", n)
            elif name.startswith("plucker_embed"):
                add("camera branch B (Plücker patch embed)", n)
            else:
                add("patch embed / final layer", n)
        groups["total"] = sum(p.numel() for p in self.parameters())
        return groups
