"""Self-attention mixers of the hybrid DiT: frame-wise Gated DeltaNet and softmax attention, each with the
UCPE camera branch A inside, in the released SANA-WM's parameter layout.

Both share one layout — ``qkv`` (no bias), ``q_norm``/``k_norm`` (RMSNorm over the whole hidden width),
``output_gate`` (SiLU), ``proj``, the GDN gates ``beta_proj``/``gate_proj``/``A_log``/``dt_bias`` and the
unused ``recall_gate`` buffer, and the camera branch ``{q,k,v}_proj_cam``, ``q_norm_cam``/``k_norm_cam``,
``out_proj_cam``; GDN blocks add the short convs ``conv_k``/``conv_k_cam``. So one checkpoint loads into
either kind, and the released ``SanaWMTransformer3DModel`` state dict loads into ours key for key.

Shapes: x (B,F,S,D) tokens of F latent frames with S tokens each; heads H × Dh; N = F·S.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ChunkConfig, NetworkConfig
from model.layers.rope import apply_rope_complex
from model.layers.temporal_conv import BidirectionalShortConv
from model.layers.ucpe import RayTransforms, downscale_to_rms, ucpe_transform
from model.ops.gdn import get_scan_backend
from model.ops.softmax_attention import ChunkKVCache, attention, chunk_causal_mask

# silu(b) == 1 at this bias: a freshly initialised output gate is fully open (our init; the release
# trains from its own). Only the init: the forward is the release's.
_GATE_OPEN_BIAS = 1.2784645


def camera_sdpa_scale(head_dim: int) -> float:
    """Softmax scale of the softmax camera branch: 1/√(padded head dim).

    The release zero-pads camera heads to a FlashAttention width (32/64/128/256) before
    ``scaled_dot_product_attention``, whose default scale then uses the PADDED width (1/√128 for Dh=112).
    The checkpoint was trained with that temperature, so we keep it.
    """
    if head_dim in (32, 64, 128, 256) or head_dim >= 256:
        return head_dim ** -0.5
    return (128 if head_dim <= 128 else 256) ** -0.5


@dataclass
class GDNState:
    """Carried between streaming chunks: delta-rule states and the short-conv tails of pre-conv keys.

    num/cam (B,H,Dh,Dh) numerator states of the main and camera paths, den (B,H,Dh,1) normaliser,
    k_tail/cam_k_tail (B,K-1,S,D). None = zeros (start of video).
    """

    num: torch.Tensor | None = None
    den: torch.Tensor | None = None
    cam: torch.Tensor | None = None
    k_tail: torch.Tensor | None = None
    cam_k_tail: torch.Tensor | None = None

    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in
                   (self.num, self.den, self.cam, self.k_tail, self.cam_k_tail) if t is not None)


@dataclass
class SoftmaxState:
    """K/V caches (sink + recent chunks) for the main and the camera path."""

    kv: ChunkKVCache
    cam_kv: ChunkKVCache

    def num_bytes(self) -> int:
        return self.kv.num_bytes() + self.cam_kv.num_bytes()


class _SharedLayout(nn.Module):
    """Parameters common to both mixers (see the module docstring) and their shared helpers."""

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        D, H = cfg.hidden_dim, cfg.num_heads
        self.cfg, self.H, self.Dh = cfg, H, cfg.head_dim
        self.qkv = nn.Linear(D, 3 * D, bias=False)
        self.proj = nn.Linear(D, D)
        self.q_norm = nn.RMSNorm(D, eps=cfg.qk_norm_eps)
        self.k_norm = nn.RMSNorm(D, eps=cfg.qk_norm_eps)
        self.beta_proj = nn.Linear(D, H)
        self.gate_proj = nn.Linear(D, H)
        # Mamba-style decay init, as the release: A ~ U(0, 16), dt ~ logU(1e-3, 0.1), dt_bias = softplus⁻¹(dt).
        self.A_log = nn.Parameter(torch.log(torch.empty(H).uniform_(0, 16)))
        dt = torch.exp(torch.rand(H) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp_min(1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        # Unused by the forward; the released checkpoint carries it, so strict loading needs it.
        self.register_buffer("recall_gate", torch.zeros(1))
        self.output_gate = nn.Linear(D, D)
        nn.init.zeros_(self.output_gate.weight)
        nn.init.constant_(self.output_gate.bias, _GATE_OPEN_BIAS)
        self.q_proj_cam = nn.Linear(D, D)
        self.k_proj_cam = nn.Linear(D, D)
        self.v_proj_cam = nn.Linear(D, D)
        self.out_proj_cam = nn.Linear(D, D)
        # Zero-initialised (our init): a fresh camera branch leaves the base model's output unchanged.
        nn.init.zeros_(self.out_proj_cam.weight)
        nn.init.zeros_(self.out_proj_cam.bias)
        self.q_norm_cam = nn.RMSNorm(D, eps=cfg.qk_norm_eps)
        self.k_norm_cam = nn.RMSNorm(D, eps=cfg.qk_norm_eps)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """(B,F,S,D) -> (B,H,F,S,Dh)."""
        B, F_, S, _ = t.shape
        return t.view(B, F_, S, self.H, self.Dh).permute(0, 3, 1, 2, 4)

    def _merge(self, t: torch.Tensor) -> torch.Tensor:
        """(B,H,F,S,Dh) -> (B,F,S,D)."""
        B, H, F_, S, Dh = t.shape
        return t.permute(0, 2, 3, 1, 4).reshape(B, F_, S, H * Dh)

    @staticmethod
    def _flat(t: torch.Tensor) -> torch.Tensor:
        """(B,H,F,S,Dh) -> (B,H,F·S,Dh)."""
        return t.flatten(2, 3)

    def _to_ray_space(self, q, k, v, rays: RayTransforms):
        """UCPE-encode camera q (by Pᵀ), k and v (by P⁻¹), each scaled back under its own RMS. (B,H,F,S,Dh)."""
        shape = q.shape
        qf, kf, vf = self._flat(q), self._flat(k), self._flat(v)
        qu = ucpe_transform(qf, rays.P.transpose(-1, -2), rays.rope)
        ku = ucpe_transform(kf, rays.P_inv, rays.rope)
        vu = ucpe_transform(vf, rays.P_inv, rays.rope)
        return tuple(downscale_to_rms(r, t).view(shape) for r, t in ((qf, qu), (kf, ku), (vf, vu)))

    def _from_ray_space(self, o: torch.Tensor, rays: RayTransforms) -> torch.Tensor:
        return ucpe_transform(self._flat(o), rays.P, rays.rope, inverse_rope=True).view(o.shape)

    def _output(self, x: torch.Tensor, main: torch.Tensor, cam: torch.Tensor | None) -> torch.Tensor:
        out = self._merge(main)
        if cam is not None:
            out = out + self.out_proj_cam(self._merge(cam))
        return self.proj(out * F.silu(self.output_gate(x)))


class GDNMixer(_SharedLayout):
    """Frame-wise Gated DeltaNet (DESIGN.md §2) with the camera branch sharing β and γ.

    Main path: q, k = ReLU(RMSNorm(·)), keys scaled by 1/√(Dh·S) so ‖Kᵀdiag(β)K‖ ≤ 1; numerator stream on
    RoPE-rotated q/k (the erase term uses the rotated keys it writes with), normaliser stream on unrotated
    keys with values ≡ 1; out = num / (den + ε). Camera path: the same scan on UCPE-encoded q/k/v, no
    normaliser, β divided by the frame's mean key-energy inflation from the transform (≥ 1) so the erase
    term stays bounded. Scans run in at least float32 (the release forces fp32 for recurrent stability).
    """

    def __init__(self, cfg: NetworkConfig, scan_backend: str = "torch") -> None:
        super().__init__(cfg)
        self.conv_k = BidirectionalShortConv(cfg.hidden_dim, cfg.short_conv_kernel)
        self.conv_k_cam = BidirectionalShortConv(cfg.hidden_dim, cfg.short_conv_kernel)
        self.scan = get_scan_backend(scan_backend)

    def _qk(self, x_q, x_k, norm_q, norm_k):
        return F.relu(norm_q(x_q)), F.relu(norm_k(x_k))

    def forward(self, x: torch.Tensor, rope: torch.Tensor, rays: RayTransforms | None, mode: str,
                chunk_lens: list[int] | None, state: GDNState | None = None,
                ) -> tuple[torch.Tensor, GDNState | None]:
        """x (B,F,S,D); rope (N, Dh/2) complex -> (out (B,F,S,D), next state if streaming else None)."""
        B, F_, S, D = x.shape
        streaming = state is not None
        conv_lens = None if mode == "bidirectional" else chunk_lens
        work = torch.promote_types(x.dtype, torch.float32)
        scale = (self.Dh * S) ** -0.5

        beta = torch.sigmoid(self.beta_proj(x)).permute(0, 3, 1, 2).to(work)  # (B,H,F,S)
        rate = torch.exp(self.A_log.to(work))
        decay = torch.exp(-rate * F.softplus(self.gate_proj(x.mean(dim=2)).to(work) + self.dt_bias.to(work)))
        decay = decay.permute(0, 2, 1)  # (B,H,F)

        q, k, v = self.qkv(x).chunk(3, dim=-1)
        k, k_tail = self.conv_k(k, conv_lens, state.k_tail if streaming else None)
        q, k = self._qk(q, k, self.q_norm, self.k_norm)
        q, k, v = self._heads(q), self._heads(k) * scale, self._heads(v)
        q_rot = apply_rope_complex(self._flat(q), rope).view(q.shape)
        k_rot = apply_rope_complex(self._flat(k), rope).view(k.shape)
        kw = dict(mode=mode, chunk_lens=chunk_lens)
        num, num_s = self.scan(q_rot.to(work), k_rot.to(work), v.to(work), beta, decay,
                               initial_state=state.num if streaming else None, **kw)
        ones = v.new_ones(B, self.H, F_, S, 1, dtype=work)
        den, den_s = self.scan(q.to(work), k.to(work), ones, beta, decay,
                               initial_state=state.den if streaming else None, **kw)
        main = (num / (den + self.cfg.gdn_eps)).to(x.dtype)

        cam, cam_s, cam_k_tail = None, None, None
        if rays is not None:
            qc, kc, vc = self.q_proj_cam(x), self.k_proj_cam(x), self.v_proj_cam(x)
            kc, cam_k_tail = self.conv_k_cam(kc, conv_lens, state.cam_k_tail if streaming else None)
            qc, kc = self._qk(qc, kc, self.q_norm_cam, self.k_norm_cam)
            qc, kc, vc = self._heads(qc), self._heads(kc) * scale, self._heads(vc)
            pre = kc.norm(dim=-1).clamp_min(1e-6)
            qu, ku, vu = self._to_ray_space(qc, kc, vc, rays)
            inflation = (ku.norm(dim=-1).clamp_min(1e-6) / pre).square().mean(dim=-1)  # (B,H,F)
            beta_cam = beta / inflation.to(work).clamp_min(1.0).unsqueeze(-1)
            o, cam_s = self.scan(qu.to(work), ku.to(work), vu.to(work), beta_cam, decay,
                                 initial_state=state.cam if streaming else None, **kw)
            cam = self._from_ray_space(o.to(x.dtype), rays)
        out = self._output(x, main, cam)
        if not streaming:
            return out, None
        return out, GDNState(num=num_s, den=den_s, cam=cam_s if cam_s is not None else state.cam,
                             k_tail=k_tail, cam_k_tail=cam_k_tail if cam_k_tail is not None else state.cam_k_tail)


class SoftmaxMixer(_SharedLayout):
    """Softmax attention (main: RMS-normed q/k with 3D RoPE; camera: UCPE-encoded, padded-width scale).

    Bidirectional = full attention; chunk-causal = full inside a chunk plus the sink and
    ``kv_recent_chunks`` earlier chunks, in training as in streaming, so a model never sees more context
    in training than it gets when deployed; streaming keeps exactly those chunks' K/V.
    """

    def __init__(self, cfg: NetworkConfig, chunks: ChunkConfig | None = None) -> None:
        super().__init__(cfg)
        self.chunks = chunks or ChunkConfig()
        self.cam_scale = camera_sdpa_scale(cfg.head_dim)

    def _attend(self, q, k, v, mode, chunk_lens, cache: ChunkKVCache | None, scale: float | None):
        """q/k/v (B,H,F,S,Dh) -> (out (B,H,F,S,Dh), new cache or None)."""
        B, H, F_, S, Dh = q.shape
        qf, kf, vf = (t.reshape(B, H, F_ * S, Dh) for t in (q, k, v))
        if cache is not None:
            past = cache.keys_values()
            keys = kf if past is None else torch.cat([past[0], kf], dim=2)
            vals = vf if past is None else torch.cat([past[1], vf], dim=2)
            return attention(qf, keys, vals, scale=scale).view(B, H, F_, S, Dh), cache.append(kf, vf)
        mask = None
        if mode == "chunk_causal":
            mask = chunk_causal_mask(chunk_lens, S, sink_chunks=self.chunks.kv_sink_chunks,
                                     recent_chunks=self.chunks.kv_recent_chunks, device=q.device)
        return attention(qf, kf, vf, mask, scale=scale).view(B, H, F_, S, Dh), None

    def forward(self, x: torch.Tensor, rope: torch.Tensor, rays: RayTransforms | None, mode: str,
                chunk_lens: list[int] | None, state: SoftmaxState | None = None,
                ) -> tuple[torch.Tensor, SoftmaxState | None]:
        """x (B,F,S,D); rope (N, Dh/2) complex -> (out (B,F,S,D), next state if streaming else None)."""
        streaming = state is not None
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = self._heads(self.q_norm(q)), self._heads(self.k_norm(k)), self._heads(v)
        q = apply_rope_complex(self._flat(q), rope).view(q.shape)
        k = apply_rope_complex(self._flat(k), rope).view(k.shape)
        main, kv = self._attend(q, k, v, mode, chunk_lens, state.kv if streaming else None, None)
        cam, cam_kv = None, None
        if rays is not None:
            qc = self._heads(self.q_norm_cam(self.q_proj_cam(x)))
            kc = self._heads(self.k_norm_cam(self.k_proj_cam(x)))
            qu, ku, vu = self._to_ray_space(qc, kc, self._heads(self.v_proj_cam(x)), rays)
            o, cam_kv = self._attend(qu, ku, vu, mode, chunk_lens, state.cam_kv if streaming else None,
                                     self.cam_scale)
            cam = self._from_ray_space(o, rays)
        out = self._output(x, main, cam)
        if not streaming:
            return out, None
        return out, SoftmaxState(kv=kv, cam_kv=cam_kv if cam_kv is not None else state.cam_kv)

    def empty_state(self) -> SoftmaxState:
        c = self.chunks
        return SoftmaxState(kv=ChunkKVCache(c.kv_sink_chunks, c.kv_recent_chunks),
                            cam_kv=ChunkKVCache(c.kv_sink_chunks, c.kv_recent_chunks))
