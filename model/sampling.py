"""Flow-matching scheduler and samplers (diffusers-style: the network knows nothing about sampling).

Conventions (docs/INTERFACES.md): sigma in [0, 1], 1 = pure noise;
    x_sigma = (1 - sigma) * x0 + sigma * noise,      velocity v = noise - x0,
so x0 = x_sigma - sigma * v and one Euler step from sigma to sigma' is x <- x + (sigma' - sigma) * v.
A shift s > 1 spends more steps at high noise: sigma' = s*sigma / (1 + (s - 1)*sigma) (SD3 / SANA).

Samplers (DESIGN.md §4), all conditioned on a clean image latent as latent frame 0 (sigma 0 throughout):
  * ``sample_bidirectional`` - every frame denoised jointly, Euler + classifier-free guidance (CFG);
  * ``sample_chunk_causal``  - autoregressive streaming rollout: chunk k is denoised given the network's
    stream state of chunks < k, then one clean pass (sigma = 0) on the result extends the state. Memory
    is constant in video length (GDN state + bounded softmax K/V in the network);
  * ``sample_chunk_causal_reference`` - the same rollout without streaming state: each step reruns the
    full prefix in ``chunk_causal`` mode. Quadratic cost, used to test that streaming equals it;
  * ``sample_few_step`` - the distilled student: chunk-causal streaming with a short sigma list.

CFG batches the conditional and unconditional passes in one forward (batch 2B); "unconditional" is the
same text with an all-False mask (the network's cross-attention then adds nothing: no text).
Camera guidance (beyond the reference, off at 1): one more branch in the same forward, the same cameras
held still at frame 0 (``CameraCondition.held_still``), and v = v_text_cfg + (g_cam - 1)(v_c - v_still),
which amplifies what the camera changes in the velocity. It needs no training change: the network has
seen static and moving cameras. Measured on the small preset's held-out clips: the commanded turns are
followed more often (step-5250 base, seed 0: turn -62 deg -> -64 deg recovered at g_cam 1.5, +5 deg at 1; step-9250
base, 12 clips: commanded yaw sign on 6/10 clips at 1.5, 9/10 at 2; see the small preset). Noise is drawn per
chunk, in chunk order, from the caller's ``torch.Generator`` on the CPU, so every sampler sees the same
noise for the same seed whatever the device, and streaming and reference rollouts are comparable.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = [
    "Conditioning",
    "FlowMatchScheduler",
    "Guidance",
    "draw_chunk_noise",
    "guided_velocity",
    "sample_bidirectional",
    "sample_chunk_causal",
    "sample_chunk_causal_reference",
    "sample_few_step",
]


def _bcast(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Broadcast sigma () / (B,) / (B,F) against x (B,C,F,h,w)."""
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.ndim == 0:
        return s
    if s.ndim == 1:
        return s.view(-1, 1, 1, 1, 1)
    if s.ndim == 2:
        return s[:, None, :, None, None]
    raise ValueError(f"sigma must be a scalar, (B,) or (B,F), got shape {tuple(s.shape)}")


class FlowMatchScheduler:
    """Rectified-flow schedule with a time shift.

    Args:
        shift: flow shift (paper: 9.8 at inference, about 10 for training); 1 = no shift.
    """

    def __init__(self, shift: float = 1.0):
        if not shift > 0:
            raise ValueError(f"FlowMatchScheduler.shift must be > 0, got {shift}")
        self.shift = float(shift)

    def shift_sigma(self, s: torch.Tensor) -> torch.Tensor:
        """Apply the shift map elementwise; fixes 0 and 1 and is monotonic increasing."""
        return self.shift * s / (1.0 + (self.shift - 1.0) * s)

    def sigmas(self, num_steps: int) -> torch.Tensor:
        """(num_steps + 1,) float32 sigmas from exactly 1 down to exactly 0 (shifted uniform grid)."""
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        # float64 grid so the endpoints survive the shift exactly before the cast
        return self.shift_sigma(torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)).float()

    @staticmethod
    def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """x_sigma = (1 - sigma) x0 + sigma noise; x0, noise (B,C,F,h,w), sigma scalar / (B,) / (B,F)."""
        s = _bcast(sigma, x0)
        return (1.0 - s) * x0 + s * noise

    @staticmethod
    def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Training target v = noise - x0 (B,C,F,h,w)."""
        return noise - x0

    @staticmethod
    def predict_x0(x: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """x0 = x_sigma - sigma v."""
        return x - _bcast(sigma, x) * v

    @staticmethod
    def step(x: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor | float,
             sigma_next: torch.Tensor | float) -> torch.Tensor:
        """One Euler step of dx/dsigma = v from sigma to sigma_next (scalars, (B,) or (B,F))."""
        return x + (_bcast(sigma_next, x) - _bcast(sigma, x)) * v

    def sample_training_sigmas(self, shape: Sequence[int], generator: torch.Generator | None = None,
                               logit_mean: float = 0.0, logit_std: float = 1.0,
                               device: torch.device | str = "cpu") -> torch.Tensor:
        """Logit-normal sigmas (SD3) of ``shape`` (e.g. (B,F) per frame), then shifted; float32 in (0, 1)."""
        gdev = generator.device if generator is not None else "cpu"
        u = torch.randn(tuple(shape), generator=generator, device=gdev) * logit_std + logit_mean
        return self.shift_sigma(torch.sigmoid(u)).to(device)

    # INTERFACES.md name for the same thing
    sample_timesteps = sample_training_sigmas


@dataclass
class Conditioning:
    """What the network is conditioned on besides the latents.

    Attributes:
        text: (B, L, Dt) text features.
        text_mask: (B, L) bool, True = real token.
        camera: ``model.camera.CameraCondition`` for all F latent frames, or None.
    """

    text: torch.Tensor
    text_mask: torch.Tensor
    camera: Any = None

    def camera_slice(self, start: int, stop: int) -> Any:
        return None if self.camera is None else self.camera.slice_frames(start, stop)


@dataclass(frozen=True)
class Guidance:
    """Which guidance branches run beside the conditional one, as batch items [cond; text-uncond?; still?].

    ``text`` g (CFG, branch on when g != 1), ``camera`` g_cam (branch on when != 1). ``batch`` repeats a
    (B,...) tensor per branch, ``text_batch``/``camera_batch`` build the branches' inputs, ``combine``
    turns the network's (copies*B,...) output into the guided (B,...) velocity. The samplers and the
    serving session both go through it, so a streaming state holds one row block per branch.
    """

    text: float
    camera: float
    use_text: bool
    use_camera: bool

    @property
    def copies(self) -> int:
        return 1 + self.use_text + self.use_camera

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x] * self.copies) if self.copies > 1 else x

    def text_batch(self, text: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        masks = [mask] + ([torch.zeros_like(mask)] if self.use_text else []) + ([mask] if self.use_camera else [])
        return self.batch(text), torch.cat(masks) if len(masks) > 1 else mask

    def camera_batch(self, cam: Any) -> Any:
        if cam is None or self.copies == 1:
            return cam
        items = [cam] * (1 + self.use_text) + ([cam.held_still()] if self.use_camera else [])
        return type(cam).cat(items)

    def combine(self, v: torch.Tensor) -> torch.Tensor:
        if self.copies == 1:
            return v
        parts = v.chunk(self.copies)
        # lerp(u, c, 1) == c exactly, so guidance 1 reproduces the conditional velocity bit for bit
        out = torch.lerp(parts[1], parts[0], self.text) if self.use_text else parts[0]
        if self.use_camera:
            out = out + (self.camera - 1.0) * (parts[0] - parts[-1])
        return out

    @classmethod
    def of(cls, guidance_scale: float, camera_guidance: float, has_camera: bool,
           always_batch: bool = False) -> Guidance:
        """The branches for CFG ``guidance_scale`` and ``camera_guidance`` (``always_batch``: the text branch
        even at g == 1, for tests of the batched path)."""
        if not math.isfinite(camera_guidance) or camera_guidance < 0:
            raise ValueError(f"camera_guidance must be finite and >= 0 (1 = off), got {camera_guidance}")
        use_camera = camera_guidance != 1.0
        if use_camera and not has_camera:
            raise ValueError(f"camera_guidance {camera_guidance} needs a camera condition (the camera is None)")
        return cls(float(guidance_scale), float(camera_guidance), always_batch or guidance_scale != 1.0, use_camera)


def guided_velocity(net: nn.Module, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning,
                    guidance_scale: float, mode: str = "bidirectional", chunk_lens: list[int] | None = None,
                    always_batch: bool = False, camera_guidance: float = 1.0) -> torch.Tensor:
    """Guided velocity from ONE forward: CFG v_u + g (v_c - v_u), plus (g_cam - 1)(v_c - v_still) with
    ``camera_guidance`` g_cam != 1 (v_still: the cameras held at frame 0, ``CameraCondition.held_still``).

    x (B,C,F,h,w), sigma (B,F) -> (B,C,F,h,w). With g == g_cam == 1 only the conditional pass runs unless
    ``always_batch`` (tests use it to check the batched path).
    """
    g = Guidance.of(guidance_scale, camera_guidance, cond.camera is not None, always_batch)
    text, mask = g.text_batch(cond.text, cond.text_mask)
    v = net(g.batch(x), g.batch(sigma), text, mask, g.camera_batch(cond.camera), mode=mode, chunk_lens=chunk_lens)
    return g.combine(v)


def draw_chunk_noise(generator: torch.Generator | None, shape: Sequence[int], device: torch.device,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise of ``shape`` drawn on the generator's device (CPU by default), moved to ``device``."""
    gdev = generator.device if generator is not None else "cpu"
    return torch.randn(tuple(shape), generator=generator, device=gdev, dtype=torch.float32).to(device, dtype)


def _check_inputs(cond_latent: torch.Tensor, num_frames: int, cond: Conditioning) -> None:
    if cond_latent.ndim != 5 or cond_latent.shape[2] != 1:
        raise ValueError(f"cond_latent must be the clean image latent (B,C,1,h,w), got {tuple(cond_latent.shape)}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if cond.camera is not None and cond.camera.num_frames != num_frames:
        raise ValueError(f"camera covers {cond.camera.num_frames} latent frames but num_frames is {num_frames}")
    if cond.text.shape[0] != cond_latent.shape[0] or cond.text_mask.shape != cond.text.shape[:2]:
        raise ValueError(f"text {tuple(cond.text.shape)} / text_mask {tuple(cond.text_mask.shape)} do not match "
                         f"batch {cond_latent.shape[0]}")


def _all_noise(generator: torch.Generator | None, cond_latent: torch.Tensor,
               chunk_lens: list[int]) -> list[torch.Tensor]:
    """Noise for the frames to generate, one tensor per chunk, in chunk order (chunk 0 excludes frame 0)."""
    B, C, _, h, w = cond_latent.shape
    lens = [chunk_lens[0] - 1] + list(chunk_lens[1:])
    return [draw_chunk_noise(generator, (B, C, n, h, w), cond_latent.device, cond_latent.dtype) for n in lens]


@torch.no_grad()
def sample_bidirectional(net: nn.Module, cond_latent: torch.Tensor, num_frames: int, cond: Conditioning, *,
                         num_steps: int, guidance_scale: float, shift: float,
                         generator: torch.Generator | None = None, chunk_lens: list[int] | None = None,
                         progress: bool = False, camera_guidance: float = 1.0) -> torch.Tensor:
    """Denoise all frames jointly with Euler + CFG (and camera guidance, see the module docstring).

    Args:
        net: ``SanaWM``-like module (forward signature of docs/INTERFACES.md).
        cond_latent: (B,C,1,h,w) clean latent of the conditioning image (frame 0, never noised).
        num_frames: F latent frames to return (including frame 0).
        cond: text and camera for all F frames.
        chunk_lens: only used to draw noise in the same chunk order as the chunk-causal samplers;
            default one chunk.
    Returns:
        (B,C,F,h,w) latents with ``out[:, :, :1] == cond_latent``.
    """
    _check_inputs(cond_latent, num_frames, cond)
    lens = chunk_lens or [num_frames]
    noise = _all_noise(generator, cond_latent, lens)
    x = torch.cat([cond_latent, *noise], dim=2)
    B = x.shape[0]
    sigmas = FlowMatchScheduler(shift).sigmas(num_steps).tolist()
    frame_is_gen = torch.ones(B, num_frames, device=x.device)
    frame_is_gen[:, 0] = 0.0  # frame 0 stays at sigma 0: it is the clean image condition
    for s, s_next in tqdm(list(itertools.pairwise(sigmas)), desc="denoise", disable=not progress):
        v = guided_velocity(net, x, frame_is_gen * s, cond, guidance_scale, mode="bidirectional",
                            camera_guidance=camera_guidance)
        x = FlowMatchScheduler.step(x, v, s, s_next)
        x[:, :, :1] = cond_latent
    return x


def _chunk_bounds(lens: list[int]) -> list[tuple[int, int]]:
    ends = [sum(lens[: i + 1]) for i in range(len(lens))]
    return [(e - n, e) for n, e in zip(lens, ends)]


def _denoise_chunk(call: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x_chunk: torch.Tensor,
                   clean_prefix: int, sigmas: Sequence[float], generator: torch.Generator | None,
                   stochastic: bool) -> torch.Tensor:
    """Denoise one chunk (B,C,f,h,w) along ``sigmas``; its first ``clean_prefix`` frames stay at sigma 0.

    ``call(x_chunk, sigma (B,f)) -> v (B,C,f,h,w)``. Euler steps, or (``stochastic``) the few-step
    distilled rule: predict x0, then re-noise it to the next sigma with fresh noise (self-forcing / DMD).
    """
    B, _, f = x_chunk.shape[:3]
    gen_mask = torch.ones(B, f, device=x_chunk.device)
    gen_mask[:, :clean_prefix] = 0.0
    clean = x_chunk[:, :, :clean_prefix].clone()
    x = x_chunk
    for s, s_next in itertools.pairwise(sigmas):
        v = call(x, gen_mask * s)
        if stochastic:
            x0 = FlowMatchScheduler.predict_x0(x, v, s)
            eps = draw_chunk_noise(generator, x.shape, x.device, x.dtype)
            x = FlowMatchScheduler.add_noise(x0, eps, s_next) if s_next > 0 else x0
        else:
            x = FlowMatchScheduler.step(x, v, s, s_next)
        x[:, :, :clean_prefix] = clean
    return x


def _stream_velocity(net: nn.Module, text_mask: tuple[torch.Tensor, torch.Tensor], cam: Any, state: Any,
                     guide: Guidance, x: torch.Tensor, sig: torch.Tensor) -> torch.Tensor:
    """Velocity of one chunk (B,C,f,h,w) from the stream state; the returned next state is dropped."""
    v, _ = net.forward_chunk(guide.batch(x), guide.batch(sig), text_mask[0], text_mask[1], cam, state)
    return guide.combine(v)


def _prefix_velocity(net: nn.Module, text_mask: tuple[torch.Tensor, torch.Tensor], cam: Any,
                     past: torch.Tensor | None, chunk_lens: list[int], guide: Guidance,
                     x: torch.Tensor, sig: torch.Tensor) -> torch.Tensor:
    """Velocity of the current chunk from a full chunk-causal forward over [clean past (sigma 0), chunk]."""
    full = x if past is None else torch.cat([past, x], dim=2)
    sig_full = sig if past is None else torch.cat([sig.new_zeros(sig.shape[0], past.shape[2]), sig], 1)
    v = net(guide.batch(full), guide.batch(sig_full), text_mask[0], text_mask[1], cam, mode="chunk_causal",
            chunk_lens=chunk_lens)
    return guide.combine(v)[:, :, -x.shape[2]:]


def _rollout(net: nn.Module, cond_latent: torch.Tensor, num_frames: int, cond: Conditioning,
             chunk_lens: list[int], sigmas: Sequence[float], guidance_scale: float,
             generator: torch.Generator | None, streaming: bool, stochastic: bool, progress: bool,
             camera_guidance: float = 1.0) -> torch.Tensor:
    _check_inputs(cond_latent, num_frames, cond)
    if sum(chunk_lens) != num_frames or chunk_lens[0] < 1:
        raise ValueError(f"chunk_lens {chunk_lens} must be positive and sum to num_frames {num_frames}")
    guide = Guidance.of(guidance_scale, camera_guidance, cond.camera is not None)
    # The guidance branches are batch items, so in streaming each keeps its own stream state rows.
    cfg_text = guide.text_batch(cond.text, cond.text_mask)
    done: list[torch.Tensor] = []  # finished chunks (B,C,f,h,w); only the reference rollout reads them back
    state = net.init_stream_state() if streaming else None
    bounds = _chunk_bounds(chunk_lens)
    for k, (a, b) in enumerate(tqdm(bounds, desc="chunks", disable=not progress)):
        cam = cond.camera_slice(a, b) if streaming else cond.camera_slice(0, b)
        cam = guide.camera_batch(cam)
        # Drawn chunk by chunk (the same sequence as _all_noise when no re-noising draws interleave), so
        # a streaming rollout never holds noise for frames it has not reached.
        B, C, _, h, w = cond_latent.shape
        fresh = draw_chunk_noise(generator, (B, C, (b - a) - (k == 0), h, w), cond_latent.device, cond_latent.dtype)
        x_chunk = torch.cat([cond_latent, fresh], dim=2) if k == 0 else fresh
        prefix = 1 if k == 0 else 0

        if streaming:
            call = partial(_stream_velocity, net, cfg_text, cam, state, guide)
        else:
            past = torch.cat(done, dim=2) if done else None
            call = partial(_prefix_velocity, net, cfg_text, cam, past, chunk_lens[: k + 1], guide)
        x_chunk = _denoise_chunk(call, x_chunk, prefix, sigmas, generator, stochastic)
        done.append(x_chunk)
        if streaming and k + 1 < len(bounds):
            # One pass on the clean chunk (sigma 0) writes it into the stream state for later chunks.
            xx = guide.batch(x_chunk)
            zeros = xx.new_zeros(xx.shape[0], xx.shape[2])
            _, state = net.forward_chunk(xx, zeros, cfg_text[0], cfg_text[1], cam, state)
    return torch.cat(done, dim=2)


@torch.no_grad()
def sample_chunk_causal(net: nn.Module, cond_latent: torch.Tensor, num_frames: int, cond: Conditioning, *,
                        chunk_lens: list[int], num_steps: int, guidance_scale: float, shift: float,
                        generator: torch.Generator | None = None, progress: bool = False,
                        camera_guidance: float = 1.0) -> torch.Tensor:
    """Autoregressive streaming rollout, chunk by chunk, with ``net.forward_chunk`` and a stream state.

    Args:
        cond_latent: (B,C,1,h,w) clean image latent (frame 0 of chunk 0, sigma 0 throughout).
        num_frames: F; ``chunk_lens`` (e.g. ``cfg.chunks.chunk_lengths(F)``) must sum to it.
        num_steps, shift: Euler steps per chunk on the shifted schedule; guidance_scale: CFG;
        camera_guidance: g_cam (1 = off; see the module docstring).
    Returns:
        (B,C,F,h,w) latents. Memory besides the output is the network's bounded stream state.
    """
    sigmas = FlowMatchScheduler(shift).sigmas(num_steps).tolist()
    return _rollout(net, cond_latent, num_frames, cond, chunk_lens, sigmas, guidance_scale, generator,
                    streaming=True, stochastic=False, progress=progress, camera_guidance=camera_guidance)


@torch.no_grad()
def sample_chunk_causal_reference(net: nn.Module, cond_latent: torch.Tensor, num_frames: int, cond: Conditioning,
                                  *, chunk_lens: list[int], num_steps: int, guidance_scale: float, shift: float,
                                  generator: torch.Generator | None = None, progress: bool = False,
                                  camera_guidance: float = 1.0) -> torch.Tensor:
    """Same rollout as ``sample_chunk_causal`` without a stream state: every step reruns the clean prefix
    plus the current chunk through ``net.forward(mode="chunk_causal")``. O(F^2); a test oracle."""
    sigmas = FlowMatchScheduler(shift).sigmas(num_steps).tolist()
    return _rollout(net, cond_latent, num_frames, cond, chunk_lens, sigmas, guidance_scale, generator,
                    streaming=False, stochastic=False, progress=progress, camera_guidance=camera_guidance)


@torch.no_grad()
def sample_few_step(net: nn.Module, cond_latent: torch.Tensor, num_frames: int, cond: Conditioning, *,
                    chunk_lens: list[int], sigmas: Sequence[float] = (1.0, 0.75, 0.5, 0.25),
                    guidance_scale: float = 1.0, stochastic: bool = True, streaming: bool = True,
                    generator: torch.Generator | None = None, progress: bool = False,
                    camera_guidance: float = 1.0) -> torch.Tensor:
    """Distilled student rollout (chunk-causal, streaming): one network call per entry of ``sigmas``.

    ``sigmas`` (e.g. ``cfg.sampler.distilled_sigmas``) must decrease within (0, 1]; 0 is appended.
    ``stochastic=True`` follows self-forcing: predict x0, re-noise it to the next sigma with fresh noise;
    ``False`` takes deterministic Euler steps between the same sigmas. Guidance is distilled in (g = 1).
    """
    s = [float(v) for v in sigmas]
    if not s or any(not 0 < v <= 1 for v in s) or any(a <= b for a, b in itertools.pairwise(s)):
        raise ValueError(f"sigmas must be strictly decreasing values in (0, 1], got {tuple(sigmas)}")
    return _rollout(net, cond_latent, num_frames, cond, chunk_lens, s + [0.0], guidance_scale, generator,
                    streaming=streaming, stochastic=stochastic, progress=progress, camera_guidance=camera_guidance)
