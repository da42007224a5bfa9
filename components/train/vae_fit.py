"""Fit a random-weight video VAE on the training clips before the world model trains on its latents.

The local presets build diffusers' ``AutoencoderKLWan`` with random weights (real weights cannot be
downloaded here), and a random decoder turns any latent into noise. ``fit_vae`` trains that VAE as a
plain reconstruction autoencoder on short random windows of the clips, then measures per-channel
latent statistics and stores them where ``VideoVAE`` reads them (the diffusers config lists
``latents_mean`` / ``latents_std``, plus the wrapper's buffers), so the DiT sees ~unit-variance latents.

Choices (and why):
  * the encoder output is the posterior *mode*, with no KL term: ``VideoVAE.encode`` uses the mode, so
    training on it fits exactly the map the world model later sees; the latent scale it drifts to is
    undone by the per-channel normalisation;
  * windows have ``1 + t_stride*k`` frames (the causal frame rule), and every step also reconstructs a
    batch of single frames: the causal VAE encodes frame 0 alone, which is the world model's
    conditioning image, so it must reconstruct well on its own;
  * loss = L1 + MSE on pixels in [-1, 1] (L1 for sharpness, MSE for what PSNR measures);
  * when there are >= 2 clips, ``ceil(n/8)`` clips are held out for the PSNR report, so the figure
    measures generalisation to unseen clips and not memorisation.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from model.encoders.vae import VideoVAE

__all__ = ["DEFAULT_VAE_STEPS", "clips_from_samples", "default_vae_steps", "fit_vae", "latent_stats",
           "reconstruction_psnr"]

# Steps sized so the fit takes ~2 min (small) / ~15 s (tiny) on 2 shared CPU cores with fit_vae's
# defaults (4 windows of 5 frames + 4 single frames, 32x32 crops): measured 0.4-0.6 s/step (small,
# OMP_NUM_THREADS=1, machine shared) plus ~12 s (small, 8 clips x 33 frames) of whole-frame
# PSNR/statistics passes.
DEFAULT_VAE_STEPS = {"tiny": 30, "small": 200}


def default_vae_steps(preset: str, has_pretrained: bool) -> int:
    """``--vae-steps`` auto value: 0 for a VAE with pretrained weights, else the preset's budget
    (``DEFAULT_VAE_STEPS``; presets not listed there, e.g. the 2.6B one, never fit: they load weights)."""
    if has_pretrained:
        return 0
    return DEFAULT_VAE_STEPS.get(preset, 0)


def _to_unit(clip: np.ndarray, name: str) -> torch.Tensor:
    a = np.asarray(clip)
    if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"{name}: expected uint8 (N,H,W,3) frames, got {a.dtype} {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a)).permute(3, 0, 1, 2).float() / 127.5 - 1.0  # (3,N,H,W)


def clips_from_samples(samples: list[dict], height: int, width: int) -> list[np.ndarray]:
    """Shard-reader samples -> uint8 (N,H,W,3) clips resized to the model's ``height`` x ``width``
    (the same antialiased bilinear resize ``components.train.data.prepare_clip`` applies)."""
    out = []
    for s in samples:
        frames = np.asarray(s["frames"])
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"clip {s.get('id')!r}: frames must be (N,H,W,3) uint8, got {frames.shape}")
        if frames.shape[1:3] != (height, width):
            px = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
            px = F.interpolate(px, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
            frames = px.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        out.append(frames)
    return out


def _windows(clips: list[torch.Tensor], n: int, count: int, g: torch.Generator,
             crop: int | None = None) -> torch.Tensor:
    """``count`` random windows of ``n`` consecutive frames -> (count,3,n,H,W), or (count,3,n,crop,crop)
    random spatial crops when ``crop`` is set."""
    out = []
    for _ in range(count):
        c = clips[int(torch.randint(len(clips), (1,), generator=g))]
        t0 = int(torch.randint(c.shape[1] - n + 1, (1,), generator=g))
        w = c[:, t0:t0 + n]
        if crop is not None:
            y0 = int(torch.randint(w.shape[2] - crop + 1, (1,), generator=g))
            x0 = int(torch.randint(w.shape[3] - crop + 1, (1,), generator=g))
            w = w[:, :, y0:y0 + crop, x0:x0 + crop]
        out.append(w)
    return torch.stack(out)


def _recon(vae: VideoVAE, px: torch.Tensor) -> torch.Tensor:
    """Differentiable pixels (B,3,N,H,W) -> reconstruction (B,3,N,H,W) through the posterior mode."""
    z = vae.vae.encode(px).latent_dist.mode()
    return vae.vae.decode(z).sample


@torch.no_grad()
def reconstruction_psnr(vae: VideoVAE, windows: torch.Tensor) -> float:
    """Mean PSNR (dB, peak = full 8-bit range) of ``vae.decode(vae.encode(windows))`` for (B,3,N,H,W)
    windows in [-1, 1], one window at a time (constant memory)."""
    vals = []
    for w in windows:
        rec = vae.decode(vae.encode(w[None]))
        mse = F.mse_loss((rec + 1) / 2, (w[None] + 1) / 2).item()
        vals.append(10 * math.log10(1.0 / max(mse, 1e-10)))
    return float(np.mean(vals))


@torch.no_grad()
def latent_stats(vae: VideoVAE, clips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (C,) of the raw (un-normalised) posterior-mode latents of ``clips``
    ((3,N,H,W) each, trimmed to 1 + t_stride*k frames), pooled over frames and positions."""
    ts = vae.cfg.temporal_stride
    s1 = s2 = None
    count = 0
    for c in clips:
        n = 1 + ts * ((c.shape[1] - 1) // ts)
        z = vae.vae.encode(c[None, :, :n]).latent_dist.mode().double()  # (1,C,F,h,w)
        zc = z.transpose(0, 1).reshape(z.shape[1], -1)
        s1 = zc.sum(1) if s1 is None else s1 + zc.sum(1)
        s2 = (zc**2).sum(1) if s2 is None else s2 + (zc**2).sum(1)
        count += zc.shape[1]
    mean = s1 / count
    std = (s2 / count - mean**2).clamp_min(0).sqrt().clamp_min(1e-4)  # a dead channel must not divide by 0
    return mean.float(), std.float()


def _set_stats(vae: VideoVAE, mean: torch.Tensor, std: torch.Tensor) -> None:
    # The diffusers config is what save_to writes and load_vae reads back (model.encoders.vae._stats);
    # the wrapper's non-persistent buffers are what encode/decode use in this process.
    vae.vae.register_to_config(latents_mean=[float(x) for x in mean], latents_std=[float(x) for x in std])
    vae.latents_mean.copy_(mean.reshape(vae.latents_mean.shape))
    vae.latents_std.copy_(std.reshape(vae.latents_std.shape))


def fit_vae(vae: VideoVAE, clips: list[np.ndarray], steps: int, lr: float = 1e-3, batch: int = 4,
            frames_per_sample: int = 5, seed: int = 0, progress: bool = False, logger: Any = None,
            crop: int | None = 32, eval_windows: int = 4, log_every: int = 10) -> dict[str, Any]:
    """Train ``vae`` (in place) to reconstruct ``clips``, then set its latent normalisation statistics.

    Args:
        vae: a ``VideoVAE`` wrapping diffusers' ``AutoencoderKLWan`` (``kind="wan"``); left in eval mode.
        clips: uint8 (N_i,H,W,3) clips, H and W multiples of the VAE's spatial stride, all the same size,
            each with at least ``frames_per_sample`` frames.
        steps: optimizer steps (0 = only (re)compute the statistics and the PSNR).
        lr: AdamW learning rate (cosine-decayed to 10% over ``steps``).
        batch: windows per step; the step also reconstructs ``batch`` single frames.
        crop: train on random ``crop`` x ``crop`` patches (a multiple of the spatial stride; None = whole
            frames). The VAE is fully convolutional (its mid attention is per frame), so patches teach
            the same map at ~1/6 of the cost of 64x96 frames on CPU; the PSNR is measured on whole frames.
        frames_per_sample: window length N = 1 + t_stride*k (e.g. 5 for stride 4).
        seed: fixes window sampling and the held-out choice (the run is deterministic for a given
            thread count).
        progress: show a tqdm bar.
        logger: optional tracking logger (``log_metrics``): ``vae/loss`` every ``log_every`` steps, then
            ``vae/psnr_before``, ``vae/psnr_after``.
        eval_windows: number of held-out windows the PSNR is averaged over.
    Returns:
        {"losses": [float]*steps, "psnr_before": dB, "psnr_after": dB, "held_out": bool (False when
        there is a single clip, so the eval windows come from training data), "latents_mean": [C],
        "latents_std": [C], "steps", "train_clips", "eval_clips", "seconds": wall time per phase (for reports)}.
    """
    from tqdm.auto import tqdm

    if vae.cfg.kind != "wan":
        raise ValueError(f"fit_vae trains diffusers' AutoencoderKLWan (VAEConfig.kind='wan'), got {vae.cfg.kind!r}")
    if steps < 0 or batch < 1 or lr <= 0:
        raise ValueError(f"fit_vae: need steps >= 0, batch >= 1, lr > 0; got steps={steps}, batch={batch}, lr={lr}")
    vae.cfg.num_latent_frames(frames_per_sample)  # raises naming the 1 + stride*k rule
    if not clips:
        raise ValueError("fit_vae: no clips")
    px = [_to_unit(c, f"clips[{i}]") for i, c in enumerate(clips)]
    shapes = {tuple(p.shape[2:]) for p in px}
    s = vae.cfg.spatial_stride
    if len(shapes) != 1 or any(d % s for d in next(iter(shapes))):
        raise ValueError(f"fit_vae: clips must share one H x W that is a multiple of {s}, got {sorted(shapes)}")
    if crop is not None and (crop < s or crop % s or crop > min(next(iter(shapes)))):
        raise ValueError(f"fit_vae: crop must be a multiple of {s} no larger than the frames "
                         f"{next(iter(shapes))}, got {crop}")
    short = [i for i, p in enumerate(px) if p.shape[1] < frames_per_sample]
    if short:
        raise ValueError(f"fit_vae: clips {short} have fewer than frames_per_sample={frames_per_sample} frames")

    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(px), generator=g).tolist()
    n_eval = math.ceil(len(px) / 8) if len(px) >= 2 else 0
    eval_clips = [px[i] for i in order[:n_eval]] or px
    train_clips = [px[i] for i in order[n_eval:]]
    eval_set = _windows(eval_clips, frames_per_sample, eval_windows, torch.Generator().manual_seed(seed + 1))

    vae.eval()
    t0 = time.perf_counter()
    psnr_before = reconstruction_psnr(vae, eval_set)
    t1 = time.perf_counter()
    losses: list[float] = []
    if steps:
        params = [p for p in vae.vae.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=0.1 * lr)
        vae.vae.train()
        bar = tqdm(range(steps), desc="vae fit", disable=not progress, dynamic_ncols=True)
        for step in bar:
            win = _windows(train_clips, frames_per_sample, batch, g, crop)
            single = _windows(train_clips, 1, batch, g, crop)
            loss = torch.zeros(())
            for x in (win, single):
                rec = _recon(vae, x)
                loss = loss + F.l1_loss(rec, x) + F.mse_loss(rec, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if logger is not None and (step % log_every == 0 or step == steps - 1):
                logger.log_metrics({"vae/loss": losses[-1]}, step=step)
        vae.vae.eval()
        opt.zero_grad(set_to_none=True)

    t2 = time.perf_counter()
    mean, std = latent_stats(vae, train_clips or px)
    _set_stats(vae, mean, std)
    t3 = time.perf_counter()
    psnr_after = reconstruction_psnr(vae, eval_set)
    seconds = {"psnr_before": t1 - t0, "train": t2 - t1, "stats": t3 - t2, "psnr_after": time.perf_counter() - t3}
    if logger is not None:
        logger.log_metrics({"vae/psnr_before": psnr_before, "vae/psnr_after": psnr_after}, step=steps)
    return {"losses": losses, "psnr_before": psnr_before, "psnr_after": psnr_after, "held_out": n_eval > 0,
            "latents_mean": mean.tolist(), "latents_std": std.tolist(), "steps": steps,
            "train_clips": len(train_clips), "eval_clips": n_eval, "seconds": seconds}
