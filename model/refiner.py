"""Stage-2 long-video refiner (DESIGN.md §4): re-noise stage-1 latents and denoise them in 3 steps.

Paper recipe: re-noise the stage-1 latents to sigma ~= 0.909, denoise along (0.909, 0.725, 0.422, 0) with
the first latent frame kept clean as an anchor, chunk by chunk with a sliding K/V window of 1 sink +
10 recent latent frames, so the cost is linear in video length. The paper's refiner is an LTX-2-based
~17B model; here the refiner is pluggable: any module with the ``SanaWM`` forward signature. Tests use a
tiny ``SanaWM`` with all-softmax blocks (the refiner is a plain full-attention transformer); a real
checkpoint loads from a local directory written by ``LongVideoRefiner.save_pretrained``.

Window implementation: each chunk is denoised by a ``chunk_causal`` forward over
[sink frames, the most recent refined frames, the chunk] (chunk_lens = [context, chunk]); the context
is re-encoded at every step rather than cached. That is the same computation as a K/V window of those
frames (the context frames are clean, sigma 0), bounded in size, hence linear total cost. Choice left
open by the paper: the network numbers frames 0..W-1 inside the window (RoPE), so the sink sits just
before the recent frames rather than at its absolute distance, as in attention-sink streaming LLMs.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model.checkpoint import atomic_directory, load_into, write_state_dict
from model.config import NetworkConfig
from model.sampling import Conditioning, FlowMatchScheduler, draw_chunk_noise, guided_velocity

__all__ = ["LongVideoRefiner", "RefinerConfig", "all_softmax"]


@dataclass(frozen=True)
class RefinerConfig:
    """Refinement schedule and window (paper defaults).

    Attributes:
        start_sigma: noise level the stage-1 latents are re-noised to; must equal ``sigmas[0]``.
        sigmas: denoising schedule ending at 0 (len - 1 network calls per chunk).
        sink_frames: leading latent frames always in the window (frame 0 is the clean anchor).
        recent_frames: most recent refined latent frames kept in the window.
        chunk_frames / first_chunk_frames: chunking (the first chunk holds the anchor + 3 frames).
        guidance_scale: CFG scale (1 = conditional only, as a refiner normally runs).
    """

    start_sigma: float = 0.909
    sigmas: tuple[float, ...] = (0.909, 0.725, 0.422, 0.0)
    sink_frames: int = 1
    recent_frames: int = 10
    chunk_frames: int = 3
    first_chunk_frames: int = 4
    guidance_scale: float = 1.0

    def __post_init__(self) -> None:
        s = tuple(float(v) for v in self.sigmas)
        if len(s) < 2 or s[-1] != 0.0 or any(a <= b for a, b in itertools.pairwise(s)) or not 0 < s[0] <= 1:
            raise ValueError(f"RefinerConfig.sigmas must decrease strictly from (0, 1] to exactly 0, got {self.sigmas}")
        if abs(self.start_sigma - s[0]) > 1e-9:
            raise ValueError(f"RefinerConfig.start_sigma ({self.start_sigma}) must equal sigmas[0] ({s[0]})")
        if self.sink_frames < 1:
            raise ValueError(f"RefinerConfig.sink_frames must be >= 1 (frame 0 is the anchor), got {self.sink_frames}")
        if self.recent_frames < 0:
            raise ValueError(f"RefinerConfig.recent_frames must be >= 0, got {self.recent_frames}")
        if self.chunk_frames < 1 or self.first_chunk_frames < 2:
            raise ValueError(f"RefinerConfig chunk sizes must be >= 1 (first >= 2: anchor + a frame), got "
                             f"{self.chunk_frames} / {self.first_chunk_frames}")

    def chunk_lengths(self, num_frames: int) -> list[int]:
        """[first, c, c, ..., remainder] summing to ``num_frames``."""
        lens = [min(self.first_chunk_frames, num_frames)]
        while sum(lens) < num_frames:
            lens.append(min(self.chunk_frames, num_frames - sum(lens)))
        return lens

    @property
    def max_window_frames(self) -> int:
        """Most latent frames one forward ever sees: sink + recent + one chunk."""
        return max(self.first_chunk_frames, self.sink_frames + self.recent_frames + self.chunk_frames)


def all_softmax(cfg: NetworkConfig) -> NetworkConfig:
    """The same network config with every block softmax (a plain full-attention refiner)."""
    return dataclasses.replace(cfg, softmax_blocks=tuple(range(cfg.num_blocks)))


def _select(camera: Any, idx: torch.Tensor) -> Any:
    """Camera condition for latent frames ``idx`` (any order, possibly non-contiguous)."""
    if camera is None:
        return None
    return camera.select_frames(idx)


class LongVideoRefiner(nn.Module):
    """Pluggable stage-2 refiner around ``net`` (SanaWM forward signature).

    Args:
        net: the refiner network; called as ``net(x, sigma, text, text_mask, camera, mode="chunk_causal",
            chunk_lens=[context, chunk])``.
        cfg: ``RefinerConfig``.
    """

    def __init__(self, net: nn.Module, cfg: RefinerConfig | None = None):
        super().__init__()
        self.net = net
        self.cfg = cfg or RefinerConfig()
        self.peak_window_frames = 0  # largest window of the last refine() call (a bound, checked in tests)

    @classmethod
    def from_network_config(cls, network_cfg: NetworkConfig, cfg: RefinerConfig | None = None,
                            device: str | torch.device = "cpu", seed: int = 0) -> LongVideoRefiner:
        """A random-weight refiner (tests, demos), seeded without touching the global RNG."""
        from model.network import SanaWM

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = SanaWM(network_cfg)
        return cls(net.to(device).eval(), cfg)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path) -> Path:
        """Atomically write ``refiner.json`` (network + refiner configs) and safetensors weights."""
        net_cfg = getattr(self.net, "cfg", None)
        if not isinstance(net_cfg, NetworkConfig):
            raise TypeError("save_pretrained needs a network with a NetworkConfig `.cfg` (e.g. SanaWM)")
        meta = {"network": dataclasses.asdict(net_cfg), "refiner": dataclasses.asdict(self.cfg)}
        with atomic_directory(directory) as tmp:
            (tmp / "refiner.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
            write_state_dict(self.net.state_dict(), tmp)
        return Path(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> LongVideoRefiner:
        """Load a refiner directory from local disk (strict; clear errors for missing parts)."""
        from model.network import SanaWM

        d = Path(directory)
        if not (d / "refiner.json").is_file():
            raise FileNotFoundError(f"refiner directory {str(d)!r} has no refiner.json (missing or not a refiner)")
        meta = json.loads((d / "refiner.json").read_text())
        tup = lambda dct: {k: tuple(v) if isinstance(v, list) else v for k, v in dct.items()}
        with torch.random.fork_rng(devices=[]):  # the random init is overwritten; keep the caller's RNG
            net = SanaWM(NetworkConfig(**tup(meta["network"])))
        load_into(net, d, strict=True)
        return cls(net.to(device).eval(), RefinerConfig(**tup(meta["refiner"])))

    # ------------------------------------------------------------------ refinement
    @torch.no_grad()
    def refine(self, latents: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, camera: Any = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Refine stage-1 latents.

        Args:
            latents: (B,C,F,h,w) stage-1 latents; frame 0 is the clean anchor and is returned unchanged.
            text, text_mask: (B,L,Dt), (B,L) bool.
            camera: CameraCondition for the F latent frames, or None.
            generator: noise source (same seed, same output).
        Returns:
            (B,C,F,h,w) refined latents. Every forward sees at most ``cfg.max_window_frames`` frames.
        """
        if latents.ndim != 5:
            raise ValueError(f"latents must be (B,C,F,h,w), got {tuple(latents.shape)}")
        B, C, F, h, w = latents.shape
        if camera is not None and camera.num_frames != F:
            raise ValueError(f"camera covers {camera.num_frames} latent frames, latents have {F}")
        cfg = self.cfg
        sigmas = list(cfg.sigmas)
        out = latents[:, :, :1].clone()  # refined frames so far; starts with the anchor
        self.peak_window_frames = 0
        a = 0
        for k, n in enumerate(cfg.chunk_lengths(F)):
            b = a + n
            lo = 1 if k == 0 else 0  # frames of this chunk to refine (chunk 0 starts with the anchor)
            noise = draw_chunk_noise(generator, (B, C, n - lo, h, w), latents.device, latents.dtype)
            x = FlowMatchScheduler.add_noise(latents[:, :, a + lo:b], noise, cfg.start_sigma)
            if k == 0:
                ctx_idx: list[int] = []
                x = torch.cat([out, x], dim=2)
            else:
                sink = list(range(min(cfg.sink_frames, a)))
                recent = [i for i in range(max(0, a - cfg.recent_frames), a) if i not in sink]
                ctx_idx = sink + recent
            idx = torch.tensor(ctx_idx + list(range(a, b)), device=latents.device)
            cond = Conditioning(text, text_mask, _select(camera, idx))
            ctx = out[:, :, ctx_idx] if ctx_idx else None
            gen = torch.ones(B, n, device=latents.device)
            gen[:, :lo] = 0.0  # the anchor stays at sigma 0
            lens = [len(ctx_idx), n] if ctx_idx else [n]
            self.peak_window_frames = max(self.peak_window_frames, len(idx))
            for s, s_next in itertools.pairwise(sigmas):
                full = x if ctx is None else torch.cat([ctx, x], dim=2)
                sig = gen * s if ctx is None else torch.cat([gen.new_zeros(B, len(ctx_idx)), gen * s], dim=1)
                v = guided_velocity(self.net, full, sig, cond, cfg.guidance_scale, mode="chunk_causal",
                                    chunk_lens=lens)[:, :, -n:]
                x = FlowMatchScheduler.step(x, v, s, s_next)
                x[:, :, :lo] = latents[:, :, :lo]
            out = torch.cat([out, x[:, :, lo:]], dim=2)
            a = b
        return out
