"""Self-forcing DMD: the student rolls out on its own outputs; a real and a fake score shape its samples.

One generator update (Self-Forcing, Huang et al. 2025; DMD2, Yin et al. 2024):
  1. Roll out the student chunk by chunk with the streaming state, on its OWN previous chunks (no teacher
     forcing), with the few-step rule (predict x0, re-noise to the next distilled sigma). Only the last
     denoising call of each chunk keeps gradients (the others and the sigma-0 state passes run under
     no_grad), which is what makes back-propagating through a rollout affordable.
  2. Diffuse the generated clip to a random sigma t: x_t = (1-t) x0 + t eps (frame 0 stays clean).
  3. Real score = frozen teacher (with CFG), fake score = a copy trained online on the student's samples;
     the DMD gradient of the reverse KL is (x0_fake - x0_real), normalised by mean |x0 - x0_real|.
  4. Generator loss 0.5 * ||x0 - stopgrad(x0 - grad)||^2, whose gradient w.r.t. x0 is exactly ``grad``.
The fake score then takes ``fake_updates`` flow-matching steps on fresh student samples (detached).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from components.distill.ode_init import ClipConditions
from model.sampling import FlowMatchScheduler, guided_velocity


@dataclass(frozen=True)
class DMDConfig:
    """Hyper-parameters of the DMD stage (defaults sized for the CPU presets)."""

    steps: int = 10
    lr_generator: float = 2e-5
    lr_fake: float = 1e-4
    fake_updates: int = 2  # fake-score steps per generator step (DMD2's two time-scale rule)
    min_t: float = 0.02
    max_t: float = 0.98
    real_guidance: float = 1.0  # CFG of the real score (the teacher's sampler value on GPU runs)
    real_camera_guidance: float = 1.0  # camera guidance of the real score (model.sampling; the teacher's value)
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.fake_updates < 1:
            raise ValueError(f"DMDConfig: steps must be >= 0 and fake_updates >= 1, got {self.steps}, {self.fake_updates}")
        if not 0 < self.min_t < self.max_t < 1:
            raise ValueError(f"DMDConfig: need 0 < min_t < max_t < 1, got {self.min_t}, {self.max_t}")


def self_forcing_rollout(student: nn.Module, conds: ClipConditions, sigmas: tuple[float, ...],
                         generator: torch.Generator) -> torch.Tensor:
    """Student clip (B,C,F,h,w) generated on its own outputs; grads flow only through each chunk's last step."""
    B, C, _, h, w = conds.cond_latent.shape
    state = student.init_stream_state()
    out = []
    start = 0
    text, mask = conds.cond.text, conds.cond.text_mask
    for k, n in enumerate(conds.chunk_lens):
        cam = conds.cond.camera.slice_frames(start, start + n) if conds.cond.camera is not None else None
        prefix = 1 if k == 0 else 0
        noise = torch.randn((B, C, n - prefix, h, w), generator=generator)
        x = torch.cat([conds.cond_latent, noise], 2) if prefix else noise
        gen_mask = torch.ones(B, n)
        gen_mask[:, :prefix] = 0.0
        for i, s in enumerate(sigmas):
            last = i == len(sigmas) - 1
            with torch.set_grad_enabled(last and torch.is_grad_enabled()):
                v, _ = student.forward_chunk(x, gen_mask * s, text, mask, cam, state)
                x0 = FlowMatchScheduler.predict_x0(x, v, gen_mask * s)
            if prefix:
                x0 = torch.cat([conds.cond_latent, x0[:, :, prefix:]], 2)
            if not last:
                eps = torch.randn(x0.shape, generator=generator)
                x = FlowMatchScheduler.add_noise(x0.detach(), eps, gen_mask * sigmas[i + 1])
        out.append(x0)
        with torch.no_grad():  # write the clean chunk into the stream state (sigma 0)
            _, state = student.forward_chunk(x0.detach(), torch.zeros(B, n), text, mask, cam, state)
        start += n
    return torch.cat(out, 2)


def _diffuse(x0: torch.Tensor, cfg: DMDConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x_t, per-frame sigma (B,F) with frame 0 clean, and the noise."""
    B, _, F_ = x0.shape[:3]
    t = cfg.min_t + (cfg.max_t - cfg.min_t) * torch.rand(B, 1, generator=generator)
    sigma = t.expand(B, F_).clone()
    sigma[:, 0] = 0.0
    eps = torch.randn(x0.shape, generator=generator)
    return FlowMatchScheduler.add_noise(x0, eps, sigma), sigma, eps


def _x0(net: nn.Module, x_t: torch.Tensor, sigma: torch.Tensor, conds: ClipConditions, guidance: float,
        camera_guidance: float = 1.0) -> torch.Tensor:
    v = guided_velocity(net, x_t, sigma, conds.cond, guidance, mode="chunk_causal", chunk_lens=conds.chunk_lens,
                        camera_guidance=camera_guidance)
    return FlowMatchScheduler.predict_x0(x_t, v, sigma)


def dmd_train(student: nn.Module, teacher: nn.Module, fake: nn.Module, conds: ClipConditions,
              sigmas: tuple[float, ...], cfg: DMDConfig, batch_size: int, seed: int,
              log: callable | None = None) -> list[dict[str, float]]:
    """Run ``cfg.steps`` generator updates (each with ``cfg.fake_updates`` fake-score updates).

    ``teacher`` is frozen (real score); ``fake`` starts as a copy of the teacher. Returns per-step metrics.
    """
    g = torch.Generator().manual_seed(seed)
    teacher.requires_grad_(False)
    opt_g = torch.optim.AdamW(student.parameters(), lr=cfg.lr_generator, betas=(0.0, 0.999), weight_decay=0.0)
    opt_f = torch.optim.AdamW(fake.parameters(), lr=cfg.lr_fake, betas=(0.0, 0.999), weight_decay=0.0)
    hist = []
    n = len(conds)
    for step in range(cfg.steps):
        idx = torch.randperm(n, generator=g)[:batch_size].tolist()
        c = conds.select(idx)
        # ---- fake score: flow matching on the student's current samples
        f_losses = []
        for _ in range(cfg.fake_updates):
            with torch.no_grad():
                x0 = self_forcing_rollout(student, c, sigmas, g)
            x_t, sigma, eps = _diffuse(x0, cfg, g)
            v = fake(x_t, sigma, c.cond.text, c.cond.text_mask, c.cond.camera, mode="chunk_causal",
                     chunk_lens=c.chunk_lens)
            loss_f = (v[:, :, 1:] - (eps - x0)[:, :, 1:]).pow(2).mean()
            opt_f.zero_grad(set_to_none=True)
            loss_f.backward()
            torch.nn.utils.clip_grad_norm_(fake.parameters(), cfg.grad_clip)
            opt_f.step()
            f_losses.append(float(loss_f.detach()))
        # ---- generator: DMD gradient through the self-forcing rollout
        x0 = self_forcing_rollout(student, c, sigmas, g)
        with torch.no_grad():
            x_t, sigma, _ = _diffuse(x0.detach(), cfg, g)
            real = _x0(teacher, x_t, sigma, c, cfg.real_guidance, cfg.real_camera_guidance)
            fake_x0 = _x0(fake, x_t, sigma, c, 1.0)
            norm = (x0 - real).abs().mean(dim=(1, 2, 3, 4), keepdim=True).clamp_min(1e-6)
            grad = (fake_x0 - real) / norm
            grad[:, :, :1] = 0.0  # the conditioning frame is not generated
        loss_g = 0.5 * (x0 - (x0 - grad).detach()).pow(2).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        gn = torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
        opt_g.step()
        m = {"dmd_step": step + 1, "generator_loss": float(loss_g.detach()), "fake_loss": sum(f_losses) / len(f_losses),
             "generator_grad_norm": float(gn)}
        hist.append(m)
        if log is not None:
            log(m)
    return hist
