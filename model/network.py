"""SANA-WM stage-1 network: a hybrid frame-wise-GDN / softmax diffusion transformer over video latents.

State-dict compatible with the released model (diffusers ``SanaWMTransformer3DModel``, parameter names
and shapes key for key) and equal to it in bidirectional mode (parity tests in float64). Input latents
(B,C,F,h,w) with patch size 1 become F frames of S = h·w tokens. Every block gets a per-frame adaLN
modulation from the timestep, 3D RoPE, camera branch A (UCPE) inside self-attention, Plücker branch B
after it, text cross-attention and the GLU-conv FFN. Output: the flow-matching velocity.

Three ways to run the same weights:
  * ``forward(mode="bidirectional")``  — whole clip, full context (the release's forward).
  * ``forward(mode="chunk_causal", chunk_lens=[4,3,3,...])`` — the streaming student's attention pattern:
    full inside a chunk, causal across chunks (softmax: sink + 2 recent chunks).
  * ``forward_chunk(..., state)`` — streaming, one chunk at a time; GDN blocks carry a D×D state per
    head, softmax blocks a sink + 2 recent chunks of K/V, temporal convs a few frames of tail, so memory
    does not grow with video length. Over a whole sequence it equals ``chunk_causal`` (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from model.config import ChunkConfig, NetworkConfig
from model.layers.block import BlockState, HybridBlock
from model.layers.embeddings import CaptionMLP, PatchEmbed3D, TimestepMLP
from model.layers.rope import camera_rope, rope_3d
from model.layers.ucpe import RayTransforms

TIMESTEP_SCALE = 1000.0  # sigma in [0, 1] <-> the release's timesteps in [0, 1000]


@dataclass
class StreamState:
    """Everything a streaming rollout carries between chunks. ``frame_offset`` = latent frames consumed."""

    blocks: list[BlockState] = field(default_factory=list)
    frame_offset: int = 0

    def num_bytes(self) -> int:
        return sum(b.num_bytes() for b in self.blocks)


class _CaptionEmbedder(nn.Module):
    """Holds ``y_proj`` so the keys read ``y_embedder.y_proj.fc1…`` as in the release."""

    def __init__(self, text_dim: int, hidden: int) -> None:
        super().__init__()
        self.y_proj = CaptionMLP(text_dim, hidden)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.y_proj(y)


class _FinalLayer(nn.Module):
    """LayerNorm, per-frame shift/scale from the timestep embedding + table, linear to latent channels."""

    def __init__(self, hidden: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, out_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(2, hidden) / hidden ** 0.5)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x (B,F,S,D), emb (B,F,D) -> (B,F,S,C)."""
        shift, scale = (self.scale_shift_table + emb.unsqueeze(2)).unsqueeze(3).unbind(2)  # (B,F,1,D)
        return self.linear(self.norm_final(x) * (1 + scale) + shift)


class SanaWM(nn.Module):
    """The hybrid DiT. See the module docstring for shapes and modes."""

    def __init__(self, cfg: NetworkConfig, chunks: ChunkConfig | None = None, scan_backend: str = "torch") -> None:
        super().__init__()
        self.cfg = cfg
        self.chunks = chunks or ChunkConfig()
        D = cfg.hidden_dim
        self.t_embedder = TimestepMLP(D, cfg.timestep_freq_dim)
        self.attention_y_norm = nn.RMSNorm(D, eps=cfg.qk_norm_eps)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D))
        self.x_embedder = PatchEmbed3D(cfg.latent_channels, D)
        self.y_embedder = _CaptionEmbedder(cfg.text_dim, D)
        # Plücker embedder: default (random) init. Only each block's ``plucker_proj`` starts at zero, so a
        # fresh branch B adds nothing yet still learns: with the embedder at zero too, both gradients are
        # products with the other's zeros and the branch stays dead for ever (measured: a 1000-step base
        # trained its biases only, and generations ignored the camera).
        self.plucker_embedder = PatchEmbed3D(cfg.plucker_channels, D)
        # The release keeps a 3-channel absolute-map embedder it never calls when the chunk-Plücker branch
        # is on (as in every released config); kept so its checkpoint loads strictly.
        self.raymap_embedder = PatchEmbed3D(3, D)
        self.blocks = nn.ModuleList(HybridBlock(cfg, i, self.chunks, scan_backend) for i in range(cfg.num_blocks))
        self.final_layer = _FinalLayer(D, cfg.latent_channels)

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
            P = self.cfg.plucker_channels
            if camera.plucker.shape != (B, F_, P, h, w):
                raise ValueError(f"camera.plucker must be (B,F,{P},h,w)=({B},{F_},{P},{h},{w}) "
                                 f"(6 x temporal_stride {self.cfg.temporal_stride}), got {tuple(camera.plucker.shape)}")
            if camera.raymap.shape[:2] != (B, F_):
                raise ValueError(f"camera.raymap must be (B,F,20)=({B},{F_},20), got {tuple(camera.raymap.shape)}")

    def _run(self, x, sigma, text, text_mask, camera, mode, chunk_lens, frame_offset, states):
        B, C, F_, h, w = x.shape
        dtype = self.x_embedder.proj.weight.dtype
        tokens = self.x_embedder(x.to(dtype))  # (B,F,S,D)
        emb = self.t_embedder(sigma * TIMESTEP_SCALE)  # (B,F,D)
        t_mod = self.t_block(emb).unflatten(-1, (6, -1))  # (B,F,6,D)
        rope = rope_3d(F_, (h, w), self.cfg.head_dim, theta=self.cfg.rope_theta, frame_offset=frame_offset,
                       device=x.device)
        rays, plucker = None, None
        if camera is not None:
            if self.cfg.camera_branch:
                rays = RayTransforms.build(camera.raymap.to(x.device, dtype), (h, w),
                                           camera_rope(rope, self.cfg.head_dim))
            if self.cfg.plucker_branch:
                plucker = self.plucker_embedder(camera.plucker.to(x.device, dtype).transpose(1, 2))
        y = self.attention_y_norm(self.y_embedder(text.to(dtype)))
        new_states = []
        for i, block in enumerate(self.blocks):
            tokens, st = block(tokens, t_mod, y, text_mask, rope, (h, w), rays, plucker, mode, chunk_lens,
                               states[i] if states is not None else None)
            new_states.append(st)
        out = self.final_layer(tokens, emb)  # (B,F,S,C)
        return out.view(B, F_, h, w, C).permute(0, 4, 1, 2, 3), new_states

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                camera=None, mode: str = "bidirectional", chunk_lens: list[int] | None = None) -> torch.Tensor:
        """Velocity for a whole clip.

        x (B,C,F,h,w); sigma (B,F) in [0,1] (timestep / 1000); text (B,L,Dt); text_mask (B,L) bool; camera:
        ``CameraCondition`` (raymap (B,F,20), plucker (B,F,6·ts,h,w)) or None; mode "bidirectional" |
        "chunk_causal" (chunk_lens defaults to the config's [4,3,3,…]). Returns v (B,C,F,h,w).
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

        gdn = ("beta_proj", "gate_proj", "A_log", "dt_bias", "conv_k.")
        for name, p in self.named_parameters():
            n = p.numel()
            if name.startswith("blocks."):
                rest = name.split(".", 2)[2]
                if rest.startswith("attn.") and ("_cam" in rest):
                    add("camera branch A (UCPE q/k/v/out, norms, conv)", n)
                elif rest.startswith("attn.") and any(rest.startswith(f"attn.{g}") for g in gdn):
                    add("GDN gates + short conv", n)
                elif rest.startswith("attn."):
                    add("self-attention (qkv/norms/gate/proj)", n)
                elif rest.startswith("plucker_proj"):
                    add("camera branch B (per-block Plücker linears)", n)
                elif rest.startswith("cross_attn."):
                    add("text cross-attention", n)
                elif rest.startswith("mlp."):
                    add("FFN (GLU-MBConv + temporal conv)", n)
                else:
                    add("adaLN tables", n)
            elif name.startswith(("t_embedder", "t_block")):
                add("timestep embedder + adaLN-single", n)
            elif name.startswith("y_embedder") or name.startswith("attention_y_norm"):
                add("caption projection", n)
            elif name.startswith(("plucker_embedder", "raymap_embedder")):
                add("camera embedders (Plücker patch embed, unused raymap embed)", n)
            else:
                add("patch embed / final layer", n)
        groups["total"] = sum(p.numel() for p in self.parameters())
        return groups
