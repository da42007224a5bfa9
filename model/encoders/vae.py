"""Video VAE wrapper: pixels (B,3,N,H,W) in [-1,1] <-> normalised latents (B,C,F,h,w).

Both backends are diffusers' causal video VAEs, so the frame rule is N = 1 + t_stride * (F - 1):
  * ``ltx2`` -> ``AutoencoderKLLTX2Video`` (the LTX-2 video VAE in diffusers 0.42; the paper's stage-1
    latent space). With ``pretrained_path`` the real checkpoint is loaded from a local directory (weights
    are never downloaded); without it a *tiny* configuration of the same class is built from the
    ``VAEConfig`` strides (``tiny_ltx2_kwargs``) and fitted by the pipeline's ``vae`` step
    (``components.vae``), so the CPU presets and the paper preset share one code path;
  * ``wan``  -> ``AutoencoderKLWan`` with a tiny config (random weights unless ``pretrained_path``).

We encode with the posterior *mode* (= mean of the diagonal Gaussian): the world model learns a
deterministic image->latent map, and sampling the posterior would only add noise to the conditioning
frame. Latents are normalised per channel, ``(z - mean) / std``, so the diffusion network sees roughly
unit-variance inputs; the statistics come from the checkpoint (Wan: config lists, LTX-2: buffers).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from model.config import VAEConfig

__all__ = ["VideoVAE", "build_vae", "load_vae", "tiny_ltx2_kwargs"]


class VideoVAE(nn.Module):
    """Thin wrapper that fixes the I/O contract of a diffusers video VAE.

    Args:
        vae: a diffusers ``AutoencoderKLWan`` / ``AutoencoderKLLTX2Video`` (anything whose ``encode``
            returns ``.latent_dist`` and ``decode`` returns ``.sample``).
        cfg: the ``VAEConfig`` it was built from (strides are checked against it by ``build_vae``).
        latents_mean, latents_std: per-channel statistics (C,) used to normalise latents.
    """

    def __init__(self, vae: nn.Module, cfg: VAEConfig, latents_mean: torch.Tensor, latents_std: torch.Tensor):
        super().__init__()
        self.vae = vae
        self.cfg = cfg
        # Non-persistent: the statistics belong to the wrapped VAE's config/buffers, so the state dict of
        # this wrapper is exactly the diffusers model's (prefixed "vae.") and stays loadable by diffusers.
        self.register_buffer("latents_mean", latents_mean.reshape(1, -1, 1, 1, 1).float(), persistent=False)
        self.register_buffer("latents_std", latents_std.reshape(1, -1, 1, 1, 1).float(), persistent=False)

    @property
    def latent_channels(self) -> int:
        return self.cfg.latent_channels

    def _check_pixels(self, pixels: torch.Tensor) -> None:
        if pixels.ndim != 5 or pixels.shape[1] != 3:
            raise ValueError(f"VideoVAE.encode expects pixels (B,3,N,H,W), got shape {tuple(pixels.shape)}")
        n, h, w = pixels.shape[2:]
        self.cfg.num_latent_frames(n)  # raises with the 1 + stride*k rule if N is wrong
        s = self.cfg.spatial_stride
        if h % s or w % s:
            raise ValueError(f"VideoVAE.encode: H, W must be multiples of spatial_stride {s}, got {h}x{w}")

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B,3,N,H,W) in [-1,1] -> normalised latents (B,C,F,H/s,W/s), F = 1 + (N-1)/t_stride."""
        self._check_pixels(pixels)
        dtype = next(self.vae.parameters()).dtype
        z = self.vae.encode(pixels.to(dtype)).latent_dist.mode()
        return (z.float() - self.latents_mean) / self.latents_std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """normalised latents (B,C,F,h,w) -> pixels (B,3,N,H,W) clamped to [-1,1], N = 1 + t_stride*(F-1)."""
        if latents.ndim != 5 or latents.shape[1] != self.cfg.latent_channels:
            raise ValueError(f"VideoVAE.decode expects latents (B,{self.cfg.latent_channels},F,h,w), "
                             f"got shape {tuple(latents.shape)}")
        dtype = next(self.vae.parameters()).dtype
        z = latents.float() * self.latents_std + self.latents_mean
        return self.vae.decode(z.to(dtype)).sample.float().clamp(-1.0, 1.0)

    def save_to(self, directory: str | Path) -> None:
        """Write the diffusers ``config.json`` and safetensors weights into ``directory`` (for bundles;
        the caller makes the enclosing write atomic). ``load_vae`` reads it back without any other files."""
        from model.checkpoint import write_state_dict

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.vae.save_config(str(directory))
        write_state_dict(self.vae.state_dict(), directory)


def _tiny_wan_kwargs(cfg: VAEConfig) -> dict:
    # dim_mult has 4 levels -> 3 spatial halvings (x8); 2 temporal halvings (x4): the Wan 2.1 geometry.
    return {
        "base_dim": cfg.base_dim, "z_dim": cfg.latent_channels, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 1,
        "temperal_downsample": [False, True, True],
        # Random weights have no statistics: identity normalisation (the default lists are 16-d anyway).
        "latents_mean": [0.0] * cfg.latent_channels, "latents_std": [1.0] * cfg.latent_channels,
    }


def _log2(n: int, what: str) -> int:
    if n < 1 or n & (n - 1):
        raise ValueError(f"{what} must be a power of 2 for a tiny AutoencoderKLLTX2Video, got {n}")
    return n.bit_length() - 1


def tiny_ltx2_kwargs(cfg: VAEConfig) -> dict:
    """``AutoencoderKLLTX2Video`` kwargs of a small random-weight VAE with ``cfg``'s strides
    (``cfg.layout`` picks the geometry: ``_patch_ltx2_kwargs`` for "patch", the pyramid below otherwise).

    Geometry: a ``patch_size`` = min(4, s) space-to-depth patchify (what LTX-2 itself does first), then one
    down block per remaining factor of 2, paired as "spatiotemporal" where both axes still need one,
    otherwise "temporal" / "spatial". Widths: the encoder's first stage runs at ``latent_channels`` (the
    class fixes that), block ``i`` outputs ``base_dim * 2**i`` (capped so LTX-2's channel-averaging
    residual of the downsampler stays an integer group). The decoder mirrors the encoder with residual
    upsamplers (depth-to-space shortcut) and upsample factor 1, so no stage loses width on the way up.
    """
    if cfg.layout == "patch":
        return _patch_ltx2_kwargs(cfg)
    s, t, c = cfg.spatial_stride, cfg.temporal_stride, cfg.latent_channels
    patch = min(4, s)
    n_sp, n_t = _log2(s // patch, "spatial_stride / patch_size"), _log2(t, "VAEConfig.temporal_stride")
    n_st = min(n_sp, n_t)
    kinds = ["spatiotemporal"] * n_st + ["temporal"] * (n_t - n_st) + ["spatial"] * (n_sp - n_st)
    prod = {"spatiotemporal": 8, "temporal": 2, "spatial": 4}
    widths, width_in = [], c
    for i, k in enumerate(kinds):
        w = min(cfg.base_dim * 2**i, width_in * prod[k])
        if w % prod[k] or (width_in * prod[k]) % w:
            raise ValueError(f"VAEConfig: tiny LTX-2 block {i} ({k}) cannot map {width_in} -> {w} channels; "
                             f"use powers of 2 for latent_channels ({c}) and base_dim ({cfg.base_dim})")
        widths.append(w)
        width_in = w
    if not kinds:  # stride 1 x patch only: one plain block keeps the class's layout valid
        kinds, widths = ["spatial"], [c]
    n = len(kinds)
    layers = (cfg.num_layers,) * (n + 1)
    return {
        "latent_channels": c, "patch_size": patch, "patch_size_t": 1,
        "block_out_channels": tuple(widths), "down_block_types": ("LTX2VideoDownBlock3D",) * n,
        "layers_per_block": layers, "spatio_temporal_scaling": (True,) * n, "downsample_type": tuple(kinds),
        "decoder_block_out_channels": tuple(widths), "decoder_layers_per_block": layers,
        "decoder_spatio_temporal_scaling": (True,) * n, "decoder_inject_noise": (False,) * (n + 1),
        "upsample_type": tuple(reversed(kinds)),  # the decoder indexes this in its own (reversed) order
        "upsample_residual": (True,) * n, "upsample_factor": (1,) * n, "timestep_conditioning": False,
    }


def _patch_ltx2_kwargs(cfg: VAEConfig) -> dict:
    """The "patch" layout: all spatial compression in LTX-2's own patchify (``patch_size`` = spatial
    stride), then one "temporal" down block per factor 2 of the temporal stride, with no resnet layers.

    Why: every down block's residual path is then an exact temporal space-to-depth (group size 1) and
    every up block's an exact depth-to-space, so the whole VAE is a linear map plus two
    ``PerChannelRMSNorm`` + SiLU stages, which ``components.vae.pca_init`` turns into a PCA autoencoder
    (a constant carrier channel keeps the norms in their linear regime). A randomly initialised deep
    LTX-2 VAE sits on the mean-colour plateau for far longer than a CPU fit lasts (docs: the vae step).
    Encoder widths double per block (C -> 2C -> 4C, lossless); the decoder runs at ``base_dim`` (a
    multiple of 4**blocks: each output frame sees ``base_dim / 4**blocks`` distinct channels).
    """
    s, t, c = cfg.spatial_stride, cfg.temporal_stride, cfg.latent_channels
    n = _log2(t, "VAEConfig.temporal_stride")
    if n < 1:
        raise ValueError("VAEConfig.layout='patch' needs temporal_stride >= 2")
    _log2(s, "VAEConfig.spatial_stride")
    if cfg.base_dim % (2 ** n * 2):
        raise ValueError(f"VAEConfig.layout='patch': base_dim ({cfg.base_dim}) must be a multiple of "
                         f"{2 ** (n + 1)} (two channels per output frame at least)")
    layers = (cfg.num_layers,) * (n + 1)
    return {
        "latent_channels": c, "patch_size": s, "patch_size_t": 1,
        "block_out_channels": tuple(c * 2 ** (i + 1) for i in range(n)),
        "down_block_types": ("LTX2VideoDownBlock3D",) * n, "layers_per_block": layers,
        "spatio_temporal_scaling": (True,) * n, "downsample_type": ("temporal",) * n,
        "decoder_block_out_channels": (cfg.base_dim,) * n, "decoder_layers_per_block": layers,
        "decoder_spatio_temporal_scaling": (True,) * n, "decoder_inject_noise": (False,) * (n + 1),
        "upsample_type": ("temporal",) * n, "upsample_residual": (True,) * n, "upsample_factor": (1,) * n,
        "timestep_conditioning": False,
    }


def _diffusers_class(kind: str) -> type:
    import diffusers

    names = {"wan": "AutoencoderKLWan", "ltx2": "AutoencoderKLLTX2Video"}
    if kind not in names:
        raise ValueError(f"VAEConfig.kind must be one of {sorted(names)}, got {kind!r}")
    return getattr(diffusers, names[kind])


def _stats(vae: nn.Module, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    if kind == "ltx2":  # persistent buffers of the checkpoint
        return vae.latents_mean.detach().float().clone(), vae.latents_std.detach().float().clone()
    c = vae.config
    return torch.tensor(c.latents_mean, dtype=torch.float32), torch.tensor(c.latents_std, dtype=torch.float32)


def _strides(vae: nn.Module, kind: str) -> tuple[int, int, int]:
    """(latent_channels, temporal_stride, spatial_stride) of a built diffusers VAE."""
    c = vae.config
    if kind == "ltx2":
        # Derived from the block layout: diffusers' own *_compression_ratio attributes assume every
        # down block is spatio-temporal, which overstates LTX-2's (spatial, temporal, st, st) layout.
        scaling = c.spatio_temporal_scaling
        if isinstance(scaling, bool):
            scaling = (scaling,) * (len(c.layers_per_block) - 1)
        kinds = [k for k, on in zip(c.downsample_type, scaling) if on]
        t = c.patch_size_t * 2 ** sum(k in ("temporal", "spatiotemporal", "conv") for k in kinds)
        s = c.patch_size * 2 ** sum(k in ("spatial", "spatiotemporal", "conv") for k in kinds)
        return c.latent_channels, t, s
    return c.z_dim, 2 ** sum(bool(b) for b in c.temperal_downsample), 2 ** (len(c.dim_mult) - 1) * (c.patch_size or 1)


def _build_wan(cfg: VAEConfig) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    from diffusers import AutoencoderKLWan

    if cfg.pretrained_path:
        vae = AutoencoderKLWan.from_pretrained(_existing_dir(cfg.pretrained_path, "VAEConfig.pretrained_path"),
                                               low_cpu_mem_usage=False)  # no accelerate here
    else:
        vae = AutoencoderKLWan(**_tiny_wan_kwargs(cfg))
    _check_strides(cfg, *_strides(vae, "wan"), "AutoencoderKLWan")
    return vae, *_stats(vae, "wan")


def _build_ltx2(cfg: VAEConfig) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    from diffusers import AutoencoderKLLTX2Video

    if cfg.pretrained_path:
        vae = AutoencoderKLLTX2Video.from_pretrained(
            _existing_dir(cfg.pretrained_path, "VAEConfig.pretrained_path"), low_cpu_mem_usage=False)  # no accelerate
    else:  # a tiny random-weight LTX-2 VAE; components.vae fits it before the world model trains
        vae = AutoencoderKLLTX2Video(**tiny_ltx2_kwargs(cfg))
    _check_strides(cfg, *_strides(vae, "ltx2"), "AutoencoderKLLTX2Video")
    return vae, *_stats(vae, "ltx2")


def _existing_dir(path: str, field: str) -> str:
    if not Path(path).is_dir():
        raise FileNotFoundError(f"{field}: directory {path!r} does not exist")
    return path


def _check_strides(cfg: VAEConfig, channels: int, t: int, s: int, what: str) -> None:
    got, want = (channels, t, s), (cfg.latent_channels, cfg.temporal_stride, cfg.spatial_stride)
    if got != want:
        raise ValueError(f"{what} has (latent_channels, temporal_stride, spatial_stride) = {got} but "
                         f"VAEConfig asks for {want}")


def build_vae(cfg: VAEConfig, device: str | torch.device = "cpu") -> VideoVAE:
    """Build the configured video VAE as a ``VideoVAE`` in eval mode on ``device``.

    ``device="meta"`` builds without allocating weights (parameter counting); only random-weight
    configs can be built there. Raises ``FileNotFoundError`` naming a missing ``pretrained_path``.
    """
    device = torch.device(device)
    builders = {"wan": _build_wan, "ltx2": _build_ltx2}
    if cfg.kind not in builders:
        raise ValueError(f"VAEConfig.kind must be one of {sorted(builders)}, got {cfg.kind!r}")
    if device.type == "meta":
        if cfg.pretrained_path:
            raise ValueError("build_vae(device='meta') only builds random-weight configs (no pretrained_path)")
        with torch.device("meta"):
            vae, mean, std = builders[cfg.kind](cfg)
    else:
        vae, mean, std = builders[cfg.kind](cfg)
    return VideoVAE(vae, cfg, mean, std).to(device).eval()


def load_vae(directory: str | Path, cfg: VAEConfig, device: str | torch.device = "cpu") -> VideoVAE:
    """Rebuild a VAE written by ``VideoVAE.save_to``: architecture from its ``config.json``, weights
    strictly from its safetensors (``CheckpointMismatchError`` on any key/shape mismatch)."""
    from model.checkpoint import load_into

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"VAE directory {str(directory)!r} has no config.json")
    cls = _diffusers_class(cfg.kind)
    vae = cls.from_config(cls.load_config(str(directory)))
    _check_strides(cfg, *_strides(vae, cfg.kind), cls.__name__)
    load_into(vae, directory, strict=True)
    return VideoVAE(vae, cfg, *_stats(vae, cfg.kind)).to(device).eval()
