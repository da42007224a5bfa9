"""Self-attention mixers of the hybrid DiT: frame-wise Gated DeltaNet and softmax attention.

Both share one parameter layout — ``qkv``, ``q_norm``/``k_norm`` (RMSNorm over head_dim), ``gate`` (SiLU
output gate), ``out_proj`` — plus camera branch A (``cam_qkv``, ``cam_q_norm``/``cam_k_norm``, ``cam_out``,
zero-initialised). GDN adds only its gates (``beta_proj``, ``gamma_proj``, ``A_log``, ``dt_bias``) and the
K-only short conv (``k_conv``); a softmax checkpoint therefore loads into a GDN block with just those new
parameters at their linear-attention initialisation (and vice versa with ``strict=False``).

Shapes: x (B,F,S,D) tokens of F latent frames with S tokens each; heads H × Dh.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.config import ChunkConfig, NetworkConfig
from model.layers.camera_transform import RayFrames, apply_ray_matrix
from model.layers.rope import apply_rope
from model.ops.gdn import get_scan_backend
from model.ops.softmax_attention import ChunkKVCache, attention, chunk_causal_mask

# silu(b) == 1 at this bias: the output gate starts fully open (DESIGN.md §2 init).
_GATE_OPEN_BIAS = 1.2784645
_BETA_INIT_BIAS = 4.0  # sigmoid(4) ≈ 0.98: β ≈ 1


@dataclass
class GDNState:
    """Carried between streaming chunks: delta-rule states and the short-conv tail of raw keys.

    num (B,2H,D,D) numerator states (main | camera), den (B,2H,D,1) normaliser states,
    conv (B,K-1,S,D_model) the last K-1 frames of pre-conv keys. None = zeros (start of video).
    """

    num: torch.Tensor | None = None
    den: torch.Tensor | None = None
    conv: torch.Tensor | None = None

    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.num, self.den, self.conv) if t is not None)


@dataclass
class SoftmaxState:
    """K/V caches (sink + recent chunks) for the main and the camera path."""

    kv: ChunkKVCache
    cam_kv: ChunkKVCache

    def num_bytes(self) -> int:
        return self.kv.num_bytes() + self.cam_kv.num_bytes()


class _SharedLayout(nn.Module):
    """Parameters common to both mixers, and the camera branch A."""

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        D, H, Dh = cfg.hidden_dim, cfg.num_heads, cfg.head_dim
        self.cfg, self.H, self.Dh = cfg, H, Dh
        self.qkv = nn.Linear(D, 3 * D)
        self.q_norm = nn.RMSNorm(Dh, eps=cfg.norm_eps)
        self.k_norm = nn.RMSNorm(Dh, eps=cfg.norm_eps)
        self.gate = nn.Linear(D, D)
        self.out_proj = nn.Linear(D, D)
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, _GATE_OPEN_BIAS)
        if cfg.camera_branch:
            self.cam_qkv = nn.Linear(D, 3 * D)
            self.cam_q_norm = nn.RMSNorm(Dh, eps=cfg.norm_eps)
            self.cam_k_norm = nn.RMSNorm(Dh, eps=cfg.norm_eps)
            self.cam_out = nn.Linear(D, D)
            # Zero-initialised: a fresh camera branch leaves the base model's output unchanged.
            nn.init.zeros_(self.cam_out.weight)
            nn.init.zeros_(self.cam_out.bias)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """(B,F,S,D) -> (B,H,F,S,Dh)."""
        B, F_, S, _ = t.shape
        return t.view(B, F_, S, self.H, self.Dh).permute(0, 3, 1, 2, 4)

    def _merge(self, t: torch.Tensor) -> torch.Tensor:
        """(B,H,F,S,Dh) -> (B,F,S,D)."""
        B, H, F_, S, Dh = t.shape
        return t.permute(0, 2, 3, 1, 4).reshape(B, F_, S, H * Dh)

    def _output(self, x: torch.Tensor, main: torch.Tensor, cam: torch.Tensor | None) -> torch.Tensor:
        g = F.silu(self.gate(x))
        out = self.out_proj(self._merge(main) * g)
        if cam is not None:
            out = out + self.cam_out(self._merge(cam) * g)
        return out


class GDNMixer(_SharedLayout):
    """Frame-wise Gated DeltaNet (DESIGN.md §2) with camera branch A sharing β and γ.

    Numerator stream: RoPE-rotated q/k (rotation is orthogonal, so the rotated keys keep the erase term's
    spectral bound); the erase term uses the same rotated keys it writes with — our documented choice for the
    detail the paper leaves open. Normaliser stream: unrotated keys with values ≡ 1. Camera stream: keys and
    values moved into each ray's frame (UCPE); a rigid transform with translation does change key norms, so
    the transformed keys are RMS-renormalised before the 1/√(D·S) scale to keep ‖Kᵀ diag β K‖ ≤ 1.
    """

    def __init__(self, cfg: NetworkConfig, scan_backend: str = "torch") -> None:
        super().__init__(cfg)
        D, H = cfg.hidden_dim, cfg.num_heads
        self.beta_proj = nn.Linear(D, H)
        self.gamma_proj = nn.Linear(D, H)
        nn.init.normal_(self.beta_proj.weight, std=1e-3)
        nn.init.constant_(self.beta_proj.bias, _BETA_INIT_BIAS)
        nn.init.normal_(self.gamma_proj.weight, std=1e-3)
        nn.init.zeros_(self.gamma_proj.bias)
        # γ = exp(−exp(A_log)·softplus(·+dt_bias)) ≈ exp(−0.01·0.69) ≈ 0.993 at init: almost no decay.
        self.A_log = nn.Parameter(torch.full((H,), math.log(0.01)))
        self.dt_bias = nn.Parameter(torch.zeros(H))
        # Causal depthwise conv along time on K only; identity at init (last tap = 1).
        self.k_conv = nn.Parameter(torch.zeros(D, cfg.short_conv_kernel))
        with torch.no_grad():
            self.k_conv[:, -1] = 1.0
        self.scan = get_scan_backend(scan_backend)

    def _short_conv(self, k: torch.Tensor, tail: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Causal conv over frames. k (B,F,S,D), tail (B,K-1,S,D)|None -> (k_conv, new tail)."""
        Kk = self.k_conv.shape[1]
        if tail is None:
            tail = k.new_zeros(k.shape[0], Kk - 1, *k.shape[2:])
        padded = torch.cat([tail, k], dim=1)
        F_ = k.shape[1]
        out = sum(self.k_conv[:, j] * padded[:, j:j + F_] for j in range(Kk))
        return out, padded[:, padded.shape[1] - (Kk - 1):]

    def _scale(self, S: int) -> float:
        return 1.0 / math.sqrt(self.Dh * S)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], rays: RayFrames | None,
                mode: str, chunk_lens: list[int] | None, state: GDNState | None = None,
                ) -> tuple[torch.Tensor, GDNState | None]:
        """x (B,F,S,D) -> (out (B,F,S,D), next state if streaming else None)."""
        B, F_, S, D = x.shape
        streaming = state is not None
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        k, conv_tail = self._short_conv(k, state.conv if streaming else None)
        q = self.q_norm(F.relu(self._heads(q)))
        k = self.k_norm(F.relu(self._heads(k))) * self._scale(S)
        v = self._heads(v)
        beta = torch.sigmoid(self.beta_proj(x)).permute(0, 3, 1, 2)  # (B,H,F,S)
        dt = F.softplus(self.gamma_proj(x.mean(dim=2)) + self.dt_bias)  # (B,F,H)
        gamma = torch.exp(-torch.exp(self.A_log) * dt).permute(0, 2, 1)  # (B,H,F)

        cos, sin = rope
        q_num, k_num, v_num, q_den, k_den = [apply_rope(q, cos, sin)], [apply_rope(k, cos, sin)], [v], [q], [k]
        use_cam = rays is not None and self.cfg.camera_branch
        if use_cam:
            cq, ck, cv = self.cam_qkv(x).chunk(3, dim=-1)
            cq = self.cam_q_norm(F.relu(self._heads(cq)))
            ck = self.cam_k_norm(F.relu(self._heads(ck)))
            ck_t = apply_ray_matrix(ck, rays.T)
            ck_t = ck_t * torch.rsqrt(ck_t.pow(2).mean(-1, keepdim=True) + self.cfg.norm_eps) * self._scale(S)
            q_num.append(apply_ray_matrix(cq, rays.T_inv_t))
            k_num.append(ck_t)
            v_num.append(apply_ray_matrix(self._heads(cv), rays.T))
            q_den.append(cq)
            k_den.append(ck * self._scale(S))
        n = len(q_num)
        cat = lambda ts: torch.cat(ts, dim=1)  # noqa: E731  (streams side by side as extra heads)
        beta_n, gamma_n = beta.repeat(1, n, 1, 1), gamma.repeat(1, n, 1)
        num, num_state = self.scan(cat(q_num), cat(k_num), cat(v_num), beta_n, gamma_n, mode=mode,
                                   chunk_lens=chunk_lens, initial_state=state.num if streaming else None)
        ones = v.new_ones(B, self.H * n, F_, S, 1)
        den, den_state = self.scan(cat(q_den), cat(k_den), ones, beta_n, gamma_n, mode=mode,
                                   chunk_lens=chunk_lens, initial_state=state.den if streaming else None)
        # Normaliser clamp: q, k ≥ 0 keep qᵀz ≥ 0 at init; the clamp guards the rare negative drift.
        o = num / den.clamp_min(self.cfg.gdn_eps)
        main = o[:, :self.H]
        cam = apply_ray_matrix(o[:, self.H:], rays.T_inv) if use_cam else None
        out = self._output(x, main, cam)
        if not streaming:
            return out, None
        return out, GDNState(num=num_state, den=den_state, conv=conv_tail)


class SoftmaxMixer(_SharedLayout):
    """Softmax attention: full 3D (bidirectional), chunk-causal mask, or streaming with a bounded K/V cache.

    Chunk-causal visibility is sink + ``kv_recent_chunks`` earlier chunks + the own chunk, in training as in
    streaming, so a model never sees more context in training than it gets when deployed.
    """

    def __init__(self, cfg: NetworkConfig, chunks: ChunkConfig | None = None) -> None:
        super().__init__(cfg)
        self.chunks = chunks or ChunkConfig()

    def _attend(self, q, k, v, mode, chunk_lens, S, cache: ChunkKVCache | None):
        """q/k/v (B,H,F,S,Dh) -> (out (B,H,F,S,Dh), new cache or None)."""
        B, H, F_, _, Dh = q.shape
        qf, kf, vf = (t.reshape(B, H, F_ * S, Dh) for t in (q, k, v))
        if cache is not None:
            past = cache.keys_values()
            keys = kf if past is None else torch.cat([past[0], kf], dim=2)
            vals = vf if past is None else torch.cat([past[1], vf], dim=2)
            out = attention(qf, keys, vals)
            new_cache = cache.append(kf, vf)
        else:
            mask = None
            if mode == "chunk_causal":
                mask = chunk_causal_mask(chunk_lens, S, sink_chunks=self.chunks.kv_sink_chunks,
                                         recent_chunks=self.chunks.kv_recent_chunks, device=q.device)
            out = attention(qf, kf, vf, mask)
            new_cache = None
        return out.view(B, H, F_, S, Dh), new_cache

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], rays: RayFrames | None,
                mode: str, chunk_lens: list[int] | None, state: SoftmaxState | None = None,
                ) -> tuple[torch.Tensor, SoftmaxState | None]:
        """x (B,F,S,D) -> (out (B,F,S,D), next state if streaming else None)."""
        S = x.shape[2]
        streaming = state is not None
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        cos, sin = rope
        q = apply_rope(self.q_norm(self._heads(q)), cos, sin)
        k = apply_rope(self.k_norm(self._heads(k)), cos, sin)
        main, kv = self._attend(q, k, self._heads(v), mode, chunk_lens, S, state.kv if streaming else None)
        cam, cam_kv = None, None
        if rays is not None and self.cfg.camera_branch:
            cq, ck, cv = self.cam_qkv(x).chunk(3, dim=-1)
            cq = apply_ray_matrix(self.cam_q_norm(self._heads(cq)), rays.T_inv_t)
            ck = apply_ray_matrix(self.cam_k_norm(self._heads(ck)), rays.T)
            cv = apply_ray_matrix(self._heads(cv), rays.T)
            cam, cam_kv = self._attend(cq, ck, cv, mode, chunk_lens, S, state.cam_kv if streaming else None)
            cam = apply_ray_matrix(cam, rays.T_inv)
        out = self._output(x, main, cam)
        if not streaming:
            return out, None
        return out, SoftmaxState(kv=kv, cam_kv=cam_kv if cam_kv is not None else state.cam_kv)

    def empty_state(self) -> SoftmaxState:
        c = self.chunks
        return SoftmaxState(kv=ChunkKVCache(c.kv_sink_chunks, c.kv_recent_chunks),
                            cam_kv=ChunkKVCache(c.kv_sink_chunks, c.kv_recent_chunks))
