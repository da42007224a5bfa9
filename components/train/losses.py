"""Flow-matching loss with diffusion forcing (per-chunk noise levels).

x_sigma = (1 - sigma) * x0 + sigma * eps, target velocity v = eps - x0 (docs/INTERFACES.md). Sigma is per
latent frame (B, F) and constant inside a chunk, so one clip trains the network at several noise levels
along time, the situation it meets when rolling out chunk by chunk. Per-chunk strategies (one drawn per
sample; DESIGN.md §5):

* ``same_t``                every chunk at the same sigma (plain video diffusion).
* ``incremental``           independent sigmas sorted so later chunks are noisier (the autoregressive shape:
                            the past is better resolved than the future).
* ``last_chunk_anchor``     earlier chunks lightly noised (sigma ~ U(0, 0.1), the small error a rollout's own
                            outputs carry), the last chunk at the drawn sigma.
* ``clean_teacher_forcing`` earlier chunks exactly clean (sigma = 0), the last chunk at the drawn sigma.

With probability ``image_condition_prob`` latent frame 0 is the clean conditioning image (sigma = 0).
Frames with sigma = 0 are context, not targets: they are excluded from the loss.
"""

from __future__ import annotations

import torch

from components.train.config import TIMESTEP_STRATEGIES, DiffusionConfig
from model.sampling import FlowMatchScheduler


def logit_normal_shifted(shape: tuple[int, ...], cfg: DiffusionConfig, generator: torch.Generator) -> torch.Tensor:
    """Sigmas in (0, 1) of ``shape``: u = sigmoid(N(mean, std)), then the flow shift s*u / (1 + (s-1)*u).

    The shift pushes mass toward high noise, which matters more the more tokens a frame has (SD3/SANA).
    """
    return FlowMatchScheduler(cfg.flow_shift).sample_training_sigmas(
        shape, generator=generator, logit_mean=cfg.logit_mean, logit_std=cfg.logit_std)


def sample_chunk_sigmas(batch: int, chunk_lens: list[int], cfg: DiffusionConfig,
                        generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
    """Per-frame sigmas (B, F) built from per-chunk levels, and the strategy drawn for each sample.

    Frame 0 is set to 0 (clean image condition) with probability ``cfg.image_condition_prob``.
    """
    names = [n for n in TIMESTEP_STRATEGIES if cfg.strategy_weights.get(n, 0) > 0]
    w = torch.tensor([cfg.strategy_weights[n] for n in names], dtype=torch.float64)
    picks = torch.multinomial(w, batch, replacement=True, generator=generator).tolist()
    K = len(chunk_lens)
    levels = logit_normal_shifted((batch, K), cfg, generator)  # one draw per chunk
    out = torch.empty(batch, K)
    chosen = []
    for b, p in enumerate(picks):
        name = names[p]
        chosen.append(name)
        t = levels[b]
        if name == "same_t" or K == 1:
            out[b] = t[-1]
        elif name == "incremental":
            out[b] = torch.sort(t).values
        elif name == "last_chunk_anchor":
            out[b, :-1] = 0.1 * torch.rand(K - 1, generator=generator)
            out[b, -1] = t[-1]
        else:  # clean_teacher_forcing
            out[b, :-1] = 0.0
            out[b, -1] = t[-1]
    sig = torch.repeat_interleave(out, torch.tensor(chunk_lens), dim=1)  # (B, F)
    keep_image = torch.rand(batch, generator=generator) < cfg.image_condition_prob
    sig[keep_image, 0] = 0.0
    return sig, chosen


def flow_matching_loss(velocity: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor,
                       sigma: torch.Tensor) -> torch.Tensor:
    """Mean squared velocity error over noisy frames. velocity, x0, noise (B,C,F,h,w); sigma (B,F).

    Returns a scalar; frames with sigma == 0 (clean context) carry no loss. If a batch has no noisy frame
    the loss is 0 with a graph attached (so backward still runs on every rank: DeepSpeed needs that).
    """
    target = noise - x0
    err = (velocity.float() - target.float()).pow(2).mean(dim=(1, 3, 4))  # (B, F)
    w = (sigma > 0).float()
    return (err * w).sum() / w.sum().clamp_min(1.0)


def noisy_input(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_sigma = (1 - sigma) x0 + sigma eps, with sigma (B,F) broadcast over (B,C,F,h,w)."""
    return FlowMatchScheduler.add_noise(x0, noise, sigma.to(x0.dtype))
