"""Fit a random-weight video VAE on the training clips (the pipeline's ``vae`` step).

The CPU presets build a tiny diffusers ``AutoencoderKLLTX2Video`` (the class of the paper's VAE) with
random weights, because real weights cannot be downloaded here, and a random decoder turns every latent
into noise. ``fit_vae`` trains it as a plain reconstruction autoencoder on random windows of the clips,
then measures per-channel latent statistics and stores them where ``VideoVAE`` reads them (LTX-2: the
persistent ``latents_mean`` / ``latents_std`` buffers; Wan: its config lists), so the DiT sees
~unit-variance latents.

Choices (and why):
  * a "patch"-layout LTX-2 VAE (``VAEConfig.layout``, the CPU presets) starts from a closed-form PCA
    autoencoder of the training clips (``components.vae.pca_init``): a random deep LTX-2 VAE stays on
    the mean-colour plateau (~15.5 dB) for far longer than a CPU fit lasts, while the PCA start is at the
    linear bound of the latent geometry (~29 dB held out at 128 ch, stride 8x8x4) in seconds. Gradient
    steps after it are optional and guarded: the best evaluated state is kept, so they cannot hurt. Measured
    (60 steps, 32-px crops): Adam at lr 2e-5 / 1e-4 took it from 27.4 to ~5 dB within 20 steps; with the
    carrier weights frozen and per-tensor relative steps (lr x tensor RMS) 3e-3 still fell to ~20 dB; so
    the presets run 0 steps (params.yaml ``vae.steps``);
  * the encoder output is the posterior *mode*, with no KL term: ``VideoVAE.encode`` uses the mode, so
    training on it fits exactly the map the world model later sees; the latent scale it drifts to is
    undone by the per-channel normalisation;
  * the loss is computed on the *raw* decoder output: ``VideoVAE.decode`` clamps to [-1, 1] for display,
    and a clamp inside the loss has zero gradient wherever the output overshoots (diffusers' Wan VAE
    clamps inside ``decode`` itself, which is one reason the old Wan fit stalled);
  * windows have ``1 + t_stride*k`` frames (the causal frame rule), and every step also reconstructs a
    batch of single frames: the causal VAE encodes frame 0 alone, which is the world model's
    conditioning image, so it must reconstruct well on its own;
  * loss = MSE + 0.5 L1 on pixels in [-1, 1] (MSE is what PSNR measures, L1 for sharpness);
  * when there are >= 2 clips, ``ceil(n/8)`` clips are held out for the PSNR curve, so the figure
    measures generalisation to unseen clips and not memorisation (the pipeline's separate held-out
    set is only read by ``components.evaluate``).
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
           "reconstruction_psnr", "video_psnr"]

# Default step budgets of ``python -m components.vae`` when ``--steps`` is not given (params.yaml's
# ``vae.steps`` is what the pipeline passes).
# The CPU presets use the "patch" layout, whose closed-form PCA start is the fit: every gradient fine-tune of
# it tried so far lowered the held-out PSNR (module docstring), so by default none runs.
DEFAULT_VAE_STEPS = {"tiny": 0, "small": 0}


def default_vae_steps(preset: str, has_pretrained: bool) -> int:
    """``--steps`` auto value: 0 for a VAE with pretrained weights, else the preset's budget
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
def video_psnr(vae: VideoVAE, frames: np.ndarray) -> float:
    """PSNR (dB, 8-bit peak) of ``vae``'s round trip of one uint8 (N,H,W,3) clip, N = 1 + t_stride*k, at
    the clip's size (a multiple of the spatial stride). What ``components.evaluate`` reports as
    ``vae_psnr_db``; frames are quantised back to uint8 first, as a served video would be."""
    x = _to_unit(frames, "frames")[None]
    rec = ((vae.decode(vae.encode(x)) + 1) * 127.5).round().clamp(0, 255)
    mse = F.mse_loss(rec / 255.0, torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)[None].float() / 255.0)
    return 10 * math.log10(1.0 / max(mse.item(), 1e-10))


@torch.no_grad()
def latent_stats(vae: VideoVAE, clips: list[torch.Tensor], pooled: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (C,) of the raw (un-normalised) posterior-mode latents of ``clips``
    ((3,N,H,W) each, trimmed to 1 + t_stride*k frames), pooled over frames and positions.

    ``pooled`` (default: for the "patch" layout) gives every channel the same std, the RMS over channels, so
    the world model's latent MSE is the pixel MSE (the PCA basis is orthonormal). Measured on the small demo
    (PCA channel std ratio first/last ~32x): per-channel stds (LTX-2's convention) make consecutive latent
    frames look uncorrelated (relative squared difference 1.4-1.8: the texture channels dominate), and after
    800 steps the network's loss (1.7) was still that of a predictor that ignores the context; pooled, the
    texture channels carry noise 5x their signal, which an undertrained network leaves in the video."""
    if pooled is None:
        pooled = vae.cfg.kind == "ltx2" and vae.cfg.layout == "patch"
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
    var = (s2 / count - mean**2).clamp_min(0)
    if pooled:
        var = var.mean().expand_as(var)
    std = var.sqrt().clamp_min(1e-4)  # a dead channel must not divide by 0
    return mean.float(), std.float()


def _set_stats(vae: VideoVAE, mean: torch.Tensor, std: torch.Tensor) -> None:
    # What save_to writes and load_vae reads back (model.encoders.vae._stats): LTX-2 keeps the statistics
    # as persistent buffers of the diffusers model, Wan as config lists. The wrapper's non-persistent
    # buffers are what encode/decode use in this process.
    if vae.cfg.kind == "ltx2":
        vae.vae.latents_mean.copy_(mean.to(vae.vae.latents_mean))
        vae.vae.latents_std.copy_(std.to(vae.vae.latents_std))
    else:
        vae.vae.register_to_config(latents_mean=[float(x) for x in mean], latents_std=[float(x) for x in std])
    vae.latents_mean.copy_(mean.reshape(vae.latents_mean.shape))
    vae.latents_std.copy_(std.reshape(vae.latents_std.shape))


@torch.no_grad()
def _preview(vae: VideoVAE, window: torch.Tensor) -> np.ndarray:
    """uint8 (N,H,W,3) reconstruction of one (3,N,H,W) window in [-1, 1]."""
    rec = vae.decode(vae.encode(window[None]))[0]
    return ((rec.permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 10 % of ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def fit_vae(vae: VideoVAE, clips: list[np.ndarray], steps: int, lr: float = 5e-4, batch: int = 4,
            frames_per_sample: int = 5, seed: int = 0, progress: bool = False, logger: Any = None,
            crop: int | None = 32, eval_windows: int = 4, eval_frames: int | None = None, eval_every: int = 0,
            log_every: int = 10, warmup: int | None = None, init: str = "auto") -> dict[str, Any]:
    """Train ``vae`` (in place) to reconstruct ``clips``, then set its latent normalisation statistics.

    Args:
        vae: a ``VideoVAE`` (tiny ``AutoencoderKLLTX2Video`` or ``AutoencoderKLWan``); left in eval mode.
        clips: uint8 (N_i,H,W,3) clips, H and W multiples of the VAE's spatial stride, all the same size,
            each with at least ``frames_per_sample`` frames.
        steps: optimizer steps (0 = only (re)compute the statistics and the PSNR).
        lr: AdamW peak learning rate (linear warm-up, then cosine-decayed to 10 % over ``steps``).
        batch: windows per step; the step also reconstructs ``batch`` single frames.
        crop: train on random ``crop`` x ``crop`` patches (a multiple of the spatial stride; None = whole
            frames). The VAE is fully convolutional, so patches teach the same map at a fraction of the
            cost of whole frames on CPU; the PSNR is always measured on whole frames.
        frames_per_sample: training window length N = 1 + t_stride*k (e.g. 5 for stride 4).
        seed: fixes window sampling and the held-out choice (the run is deterministic for a given
            thread count).
        progress: show a tqdm bar.
        logger: optional tracking logger (``log_metrics``): ``vae/loss`` every ``log_every`` steps,
            ``vae/psnr_heldout`` at every curve point, then ``vae/psnr_before`` and ``vae/psnr_after``.
        eval_windows: number of held-out windows the PSNR is averaged over.
        eval_frames: frames per held-out window (1 + t_stride*k; default: the longest every held-out
            clip holds, so the figure covers the causal first frame and several latent frames).
        eval_every: also measure the held-out PSNR every this many steps (the reconstruction curve;
            0 = only before and after).
        warmup: warm-up steps (default 5 % of ``steps``).
        init: "pca" (closed-form PCA start, ``components.vae.pca_init``; needs ``VAEConfig.layout ==
            "patch"``), "random" (train the given weights as they are) or "auto" (pca when the layout
            allows it). With "pca" the curve starts at the PCA start and the best evaluated state is kept.
    Returns:
        {"losses": [float]*steps, "psnr_before": dB, "psnr_after": dB, "curve": [[step, dB], ...],
        "psnr_init": dB after the PCA start (= psnr_before for "random"), "init": the method used,
        "held_out": bool (False when there is a single clip, so the eval windows come from training
        data), "latents_mean": [C], "latents_std": [C], "steps", "train_clips", "eval_clips", "seconds":
        wall time per phase, "preview": {"target", "before", "after"} uint8 (N,H,W,3) arrays of the first
        held-out window (not JSON: the caller draws it)}.
    """
    from tqdm.auto import tqdm

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
    train_clips = [px[i] for i in order[n_eval:]] or px
    ts = vae.cfg.temporal_stride
    longest = 1 + ts * ((min(c.shape[1] for c in eval_clips) - 1) // ts)
    eval_n = min(eval_frames or longest, longest)
    vae.cfg.num_latent_frames(eval_n)
    eval_set = _windows(eval_clips, eval_n, eval_windows, torch.Generator().manual_seed(seed + 1))

    if init not in ("auto", "pca", "random"):
        raise ValueError(f"fit_vae: init must be 'auto', 'pca' or 'random', got {init!r}")
    patch_layout = vae.cfg.kind == "ltx2" and vae.cfg.layout == "patch"
    if init == "pca" and not patch_layout:
        raise ValueError(f"fit_vae: init='pca' needs VAEConfig(kind='ltx2', layout='patch'), got "
                         f"kind={vae.cfg.kind!r} layout={vae.cfg.layout!r}")
    init = "pca" if init == "auto" and patch_layout else ("random" if init == "auto" else init)

    vae.eval()
    t0 = time.perf_counter()
    psnr_before = reconstruction_psnr(vae, eval_set)
    preview = {"target": _preview_target(eval_set[0]), "before": _preview(vae, eval_set[0])}
    psnr_init = psnr_before
    if init == "pca":
        from components.vae.pca_init import pca_init

        pca_init(vae, train_clips)
        _set_stats(vae, *latent_stats(vae, train_clips))
        psnr_init = reconstruction_psnr(vae, eval_set)
    curve = [[0, psnr_init]]
    best = (psnr_init, _copy_state(vae)) if init == "pca" else None
    if logger is not None:
        logger.log_metrics({"vae/psnr_heldout": psnr_init, "vae/psnr_init": psnr_init}, step=0)
    t1 = time.perf_counter()
    losses: list[float] = []
    handles = []
    if steps and init == "pca":
        from components.vae.pca_init import freeze_carrier_weights

        handles = freeze_carrier_weights(vae, eval_set[:1])  # carriers stay constants (their docstring)
    if steps:
        params = [p for p in vae.vae.parameters() if p.requires_grad]
        if init == "pca":
            # Relative steps: Adam moves every weight by ~lr whatever its size, and the PCA start's weights
            # are tiny and precisely scaled (signal ~50x below the carrier), so a plain lr 2e-5 wrecked
            # it within 20 steps (27 -> 5 dB, measured). Each tensor gets lr x its own RMS instead; the
            # all-zero convs (kept at zero by the PCA start) stay frozen.
            groups = [{"params": [p], "scale": float(p.detach().pow(2).mean().sqrt())} for p in params]
            groups = [g for g in groups if g["scale"] > 0]
            params = [g["params"][0] for g in groups]
        else:
            groups = [{"params": params, "scale": 1.0}]
        opt = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
        warm = max(1, round(0.05 * steps)) if warmup is None else max(1, warmup)
        vae.vae.train()
        bar = tqdm(range(steps), desc="vae fit", disable=not progress, dynamic_ncols=True)
        for step in bar:
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, steps, lr, warm) * group["scale"]
            win = _windows(train_clips, frames_per_sample, batch, g, crop)
            single = _windows(train_clips, 1, batch, g, crop)
            loss = torch.zeros(())
            for x in (win, single):
                rec = _recon(vae, x)
                loss = loss + F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if logger is not None and (step % log_every == 0 or step == steps - 1):
                logger.log_metrics({"vae/loss": losses[-1]}, step=step)
            if eval_every and (step + 1) % eval_every == 0 and step + 1 < steps:
                vae.vae.eval()
                curve.append([step + 1, reconstruction_psnr(vae, eval_set)])
                if best is not None and curve[-1][1] > best[0]:
                    best = (curve[-1][1], _copy_state(vae))
                vae.vae.train()
                if logger is not None:
                    logger.log_metrics({"vae/psnr_heldout": curve[-1][1]}, step=step + 1)
        vae.vae.eval()
        opt.zero_grad(set_to_none=True)
    for h in handles:
        h.remove()

    t2 = time.perf_counter()
    mean, std = latent_stats(vae, train_clips)
    _set_stats(vae, mean, std)
    t3 = time.perf_counter()
    psnr_after = reconstruction_psnr(vae, eval_set)
    if best is not None and best[0] > psnr_after:  # fine-tuning made it worse: keep the best state
        vae.vae.load_state_dict(best[1])
        mean, std = latent_stats(vae, train_clips)
        _set_stats(vae, mean, std)
        psnr_after = reconstruction_psnr(vae, eval_set)
    preview["after"] = _preview(vae, eval_set[0])
    curve.append([steps, psnr_after])
    seconds = {"psnr_before": t1 - t0, "train": t2 - t1, "stats": t3 - t2, "psnr_after": time.perf_counter() - t3}
    if logger is not None:
        logger.log_metrics({"vae/psnr_heldout": psnr_after, "vae/psnr_before": psnr_before,
                            "vae/psnr_after": psnr_after}, step=steps)
    return {"losses": losses, "psnr_before": psnr_before, "psnr_init": psnr_init, "init": init,
            "psnr_after": psnr_after, "curve": curve,
            "held_out": n_eval > 0, "latents_mean": mean.tolist(), "latents_std": std.tolist(), "steps": steps,
            "train_clips": len(train_clips), "eval_clips": n_eval, "eval_frames": eval_n, "seconds": seconds,
            "preview": preview}


def _copy_state(vae: VideoVAE) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in vae.vae.state_dict().items()}


def _preview_target(window: torch.Tensor) -> np.ndarray:
    return ((window.permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
