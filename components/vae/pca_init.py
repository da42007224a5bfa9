"""Start a tiny "patch"-layout ``AutoencoderKLLTX2Video`` as a PCA autoencoder (closed form, ~seconds).

Why: a randomly initialised tiny LTX-2 VAE spends the whole CPU budget on the mean-colour plateau
(~15.5 dB held out after 500 steps), while the PCA bound of its latent geometry is ~29 dB (stride 8x8x4,
128 channels). Measured on the demo clips: signal reaches every layer at init (position variance / RMS
~0.8 at every stage, per-layer gradient norms 0.1-0.8), removing the ``PerChannelRMSNorm`` layers does not
help (200 steps: 16.3 dB) and neither does a 4x learning rate (15.1 dB): the deep nonlinear net simply
needs far more steps than a CPU fit has. So instead of training the linear part from scratch we set it:

* "patch" layout (``model.encoders.vae._patch_ltx2_kwargs``): patchify by the spatial stride, temporal
  down/up blocks whose residual paths are exact space-to-depth / depth-to-space, no resnet layers; with
  every conv except ``conv_in``/``conv_out`` at zero the VAE is linear up to its two norm+SiLU stages;
* a *carrier*: one constant channel (a bias) per frame slot in front of each ``PerChannelRMSNorm``, and a
  signal ~``signal`` times smaller, so the per-location RMS is ~constant (the norm is ~a fixed scale) and
  SiLU works on small values (~linear); the carrier has no signal, so no signal direction is lost;
* encoder: ``conv_in`` = per-frame spatial PCA of the patches (C-1 components + the carrier), the down
  blocks stack 2**n frames losslessly, ``conv_out`` = PCA of the actual features in front of it (so the
  norm/SiLU distortions are measured, not modelled);
* decoder: the routing of its up blocks is probed (which ``conv_in`` channel lands in which output
  frame), ``conv_in`` = least squares from latents to each frame's spatial-PCA coefficients, and
  ``conv_out`` = least squares from the actual features to the pixels.
Only the centre tap (current frame, centre pixel) of each kernel is set: the result is causal, and the
zero taps and zero convs are what the gradient fit then trains.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from model.encoders.vae import VideoVAE

__all__ = ["fit_decoder_output", "freeze_carrier_weights", "patchify", "pca_init"]


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B,3,N,H,W) -> (B,3*p*p,N,H/p,W/p), in exactly the channel order of LTX-2's encoder patchify
    (diffusers ``LTX2VideoEncoder3d.forward``: channel, p_t, p_w, p_h), which its decoder inverts."""
    b, c, n, h, w = x.shape
    x = x.reshape(b, c, n, 1, h // p, p, w // p, p)
    return x.permute(0, 1, 3, 7, 5, 2, 4, 6).flatten(1, 4)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(B,D,N,h,w) -> (B*N*h*w, D) float64."""
    return t.permute(0, 2, 3, 4, 1).reshape(-1, t.shape[1]).double()


def _pca(a: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean (D,), top-``k`` components (k,D) and their standard deviations (k,) of rows ``a`` (M,D)."""
    mu = a.mean(0)
    cov = (a - mu).T @ (a - mu) / max(1, a.shape[0] - 1)
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    order = torch.argsort(evals, descending=True)[:k]
    return mu, evecs[:, order].T.contiguous(), evals[order].clamp_min(0).sqrt()


def _lstsq(x: torch.Tensor, y: torch.Tensor, ridge: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge regression y ~ x @ W.T + b; returns W (Dy,Dx), b (Dy,)."""
    xm, ym = x.mean(0), y.mean(0)
    xc, yc = x - xm, y - ym
    g = xc.T @ xc
    g += ridge * g.diagonal().mean().clamp_min(1e-12) * torch.eye(g.shape[0], dtype=g.dtype)
    w = torch.linalg.solve(g, xc.T @ yc).T
    return w, ym - w @ xm


def _capture_input(module: torch.nn.Module, fn) -> torch.Tensor:
    """Run ``fn()`` and return the input tensor ``module`` saw (its first positional argument)."""
    seen: list[torch.Tensor] = []
    h = module.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    try:
        fn()
    finally:
        h.remove()
    return seen[-1]


def _set_centre(conv: torch.nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Write (out,in) ``weight`` into the current-frame, centre-pixel tap of a causal 3x3x3 conv."""
    c = conv.conv
    kt, kh, kw = c.kernel_size
    c.weight[:, :, kt - 1, kh // 2, kw // 2] = weight.to(c.weight)
    c.bias.copy_(bias.to(c.bias))


def _is_carrier(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Channels (per-channel ``mean``/``std`` over positions) that are a carrier: non-zero and ~constant."""
    return (mean.abs() > 0.1) & (std < 1e-3 * mean.abs())


def _check_layout(vae: VideoVAE) -> None:
    m = vae.vae
    cfg = m.config
    ok = (type(m).__name__ == "AutoencoderKLLTX2Video" and cfg.patch_size == vae.cfg.spatial_stride
          and cfg.patch_size_t == 1 and set(cfg.downsample_type) == {"temporal"}
          and set(cfg.upsample_type) == {"temporal"} and not any(cfg.layers_per_block)
          and not any(cfg.decoder_layers_per_block) and not cfg.timestep_conditioning)
    if not ok:
        raise ValueError("pca_init needs a tiny AutoencoderKLLTX2Video built with VAEConfig(layout='patch', "
                         "num_layers=0)")


def _decoder_slots(vae: VideoVAE) -> list[list[int]]:
    """For each of the 2**n frame slots of a latent frame: the distinct decoder ``conv_in`` channels that
    reach it through the (zero-conv) up blocks. Probed, not derived: a latent frame carries channel k as
    the value k+1, and the up blocks only copy values (depth-to-space, repeats)."""
    dec = vae.vae.decoder
    d = dec.conv_in.conv.out_channels
    ts = vae.cfg.temporal_stride
    h = torch.zeros(1, d, 2, 2, 2)  # 2x2: the decoder's reflect padding needs more than one pixel
    h[0, :, 1] = torch.arange(1, d + 1, dtype=h.dtype)[:, None, None]
    with torch.no_grad():
        h = dec.mid_block(h)
        for up in dec.up_blocks:
            h = up(h, None, causal=True)
    frames = h[0, :, :, 0, 0]  # (D, 1 + ts)
    if frames.shape[1] != 1 + ts:
        raise RuntimeError(f"pca_init: decoder probe gave {frames.shape[1]} frames, expected {1 + ts}")
    slots = []
    for j in range(ts):
        vals = frames[:, 1 + j]
        slots.append(sorted({int(v) - 1 for v in vals.tolist() if v > 0}))
    if len({len(s) for s in slots}) != 1 or len(set().union(*map(set, slots))) != sum(map(len, slots)):
        raise RuntimeError(f"pca_init: decoder slots are not disjoint and equal-sized: {[len(s) for s in slots]}")
    return slots


def _frame_index(num_latent: int, ts: int) -> torch.Tensor:
    """(F, ts) raw frame behind each slot of each latent frame: latent 0 is frame 0 in every slot (the
    causal VAE repeats it), latent f >= 1 covers frames ts*(f-1)+1 ... ts*f."""
    idx = torch.zeros(num_latent, ts, dtype=torch.long)
    for f in range(1, num_latent):
        idx[f] = torch.arange(ts * (f - 1) + 1, ts * f + 1)
    return idx


@torch.no_grad()
def pca_init(vae: VideoVAE, clips: list[torch.Tensor], *, carrier: float = 1.0, signal: float = 0.02,
             max_frames: int = 33) -> dict[str, Any]:
    """Set ``vae`` (a "patch"-layout tiny LTX-2 VAE) to a PCA autoencoder of ``clips``.

    Args:
        vae: ``VideoVAE`` built with ``VAEConfig(kind="ltx2", layout="patch", num_layers=0)``.
        clips: (3,N,H,W) tensors in [-1, 1] (N = 1 + t_stride*k after trimming to ``max_frames``).
        carrier: value of the constant channel in front of each RMS norm.
        signal: RMS of the first principal coefficient after each norm, relative to 1 (small = the
            norm/SiLU stages are ~linear; too small only costs float precision).
    Returns:
        {"spatial_components", "decoder_components", "enc_feature_var_kept"}: what was fitted.
    """
    _check_layout(vae)
    m = vae.vae
    enc, dec = m.encoder, m.decoder
    C, ts, p = vae.cfg.latent_channels, vae.cfg.temporal_stride, vae.cfg.spatial_stride
    xs = []
    for c in clips:
        n = 1 + ts * ((min(c.shape[1], max_frames) - 1) // ts)
        xs.append(c[:, :n].float())
    for prm in m.parameters():
        prm.zero_()

    # 1. encoder conv_in: per-frame spatial PCA (C-1 components) + a carrier channel
    patches = torch.cat([_rows(patchify(x[None], p)) for x in xs])  # (M, 3p^2)
    mu_s, U, sd = _pca(patches, min(C - 1, patches.shape[1]))
    k_e = U.shape[0]
    a_e = signal * carrier / (math.sqrt(C) * float(sd[0]))  # post-norm carrier ~ sqrt(C) (1 of C per slot)
    w_in = torch.zeros(C, patches.shape[1], dtype=torch.float64)
    b_in = torch.zeros(C, dtype=torch.float64)
    w_in[:k_e] = a_e * U
    b_in[:k_e] = -a_e * (U @ mu_s)
    b_in[C - 1] = carrier
    _set_centre(enc.conv_in, w_in, b_in)

    # 2. encoder conv_out: PCA of the features in front of it (after norm_out + SiLU)
    feats = torch.cat([_rows(_capture_input(enc.conv_out, lambda x=x: enc(x[None]))) for x in xs])
    mu_f, Wf, sdf = _pca(feats, C)
    scale = 1.0 / float(sdf[0])  # latents: first component ~unit std (normalised again by latent_stats)
    w_out = torch.zeros(C + 1, feats.shape[1], dtype=torch.float64)
    b_out = torch.zeros(C + 1, dtype=torch.float64)
    w_out[:C] = scale * Wf
    b_out[:C] = -scale * (Wf @ mu_f)
    _set_centre(enc.conv_out, w_out, b_out)  # row C (log-variance) stays 0: the posterior mode is used
    kept = float((sdf**2).sum() / ((feats - mu_f) ** 2).sum(1).mean())

    # 3. decoder conv_in: latents -> each frame slot's spatial coefficients (+ its carrier)
    slots = _decoder_slots(vae)
    r = len(slots[0]) - 1  # coefficients per frame; one slot channel is the carrier
    if r < 1:
        raise ValueError(f"pca_init: decoder base_dim gives {len(slots[0])} channels per frame; need >= 2")
    Ud = U[:r]
    zs, ts_rows = [], []
    for x in xs:
        z = m.encode(x[None]).latent_dist.mode().double()  # (1,C,F,h,w)
        coef = torch.einsum("kd,dnhw->knhw", Ud, patchify(x[None], p)[0].double() - mu_s[:, None, None, None])
        idx = _frame_index(z.shape[2], ts)  # (F, ts)
        tgt = coef[:, idx]  # (r, F, ts, h, w)
        zs.append(_rows(z))
        ts_rows.append(tgt.permute(1, 3, 4, 2, 0).reshape(-1, ts * r))  # rows (F,h,w), cols (slot, coef)
    Z, T = torch.cat(zs), torch.cat(ts_rows)
    W, b = _lstsq(Z, T)
    d = dec.conv_in.conv.out_channels
    rd_total = len(slots[0])
    a_d = signal * carrier / (math.sqrt(rd_total) * float(sd[0]))
    w_dec = torch.zeros(d, C, dtype=torch.float64)
    b_dec = torch.zeros(d, dtype=torch.float64)
    for j, chans in enumerate(slots):
        b_dec[chans[0]] = carrier
        for i, ch in enumerate(chans[1:]):
            w_dec[ch] = a_d * W[j * r + i]
            b_dec[ch] = a_d * b[j * r + i]
    _set_centre(dec.conv_in, w_dec, b_dec)

    # 4. decoder conv_out: least squares from the features in front of it to the pixels
    fit_decoder_output(vae, xs)
    return {"spatial_components": k_e, "decoder_components": r, "enc_feature_var_kept": kept}


@torch.no_grad()
def fit_decoder_output(vae: VideoVAE, clips: list[torch.Tensor]) -> int:
    """Set the decoder's ``conv_out`` (centre tap + bias) to the least-squares map from the features in
    front of it to the pixels of ``clips`` ((3,N,H,W) in [-1, 1]); the encoder and the latents are untouched.

    Constant input channels (the carriers after norm + SiLU, ~5 where the signal is ~0.01) get weight 0:
    they are collinear with the bias, and a solve that spreads the constant over both left weights ~25 and
    biases ~540 that cancel, so float16 rounding of that pair alone cost 5-6 dB (29.3 -> 23.9 dB held out
    on the small preset). Returns the number of constant channels left out.
    """
    m = vae.vae
    dec = m.decoder
    p = vae.cfg.spatial_stride
    gs, ps = [], []
    for x in clips:
        z = m.encode(x[None].float()).latent_dist.mode()
        gs.append(_rows(_capture_input(dec.conv_out, lambda z=z: m.decode(z))))
        ps.append(_rows(patchify(x[None].float(), p)))
    g, px = torch.cat(gs), torch.cat(ps)
    mean, std = g.mean(0), g.std(0)
    varying = ~_is_carrier(mean, std)
    w_var, bo = _lstsq(g[:, varying], px)
    Wo = torch.zeros(px.shape[1], g.shape[1], dtype=w_var.dtype)
    Wo[:, varying] = w_var
    _set_centre(dec.conv_out, Wo, bo)
    return int((~varying).sum())


@torch.no_grad()
def freeze_carrier_weights(vae: VideoVAE, pixels: torch.Tensor) -> list[torch.utils.hooks.RemovableHandle]:
    """Zero the gradient of every conv weight that reads a carrier channel; returns the hook handles.

    Why: a carrier is a constant ~``signal``**-1 times larger than the signal, and Adam moves every
    weight by ~lr on its first steps whatever the gradient, so a weight reading a carrier shifts its
    output by lr x 27 taps x carrier: a coherent offset as large as the signal within a few steps (the
    measured PSNR fell from 27 to 5 dB in 20 steps at lr 2e-5). Frozen, those weights stay 0 and the
    conv biases still provide every constant. Carriers are found as the input channels of each conv
    that are constant over ``pixels`` (B,3,N,H,W) and non-zero.
    """
    m = vae.vae
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv3d)]
    seen: dict[torch.nn.Module, torch.Tensor] = {}
    hooks = [c.register_forward_pre_hook(lambda mod, args: seen.__setitem__(mod, args[0].detach())) for c in convs]
    try:
        m.decode(m.encode(pixels).latent_dist.mode())
    finally:
        for h in hooks:
            h.remove()
    handles = []
    for c in convs:
        x = seen.get(c)
        if x is None:
            continue
        flat = x.transpose(0, 1).reshape(x.shape[1], -1)
        mean, std = flat.mean(1), flat.std(1)
        carrier = _is_carrier(mean, std)
        if carrier.any():
            mask = torch.ones_like(c.weight)
            mask[:, carrier] = 0.0
            handles.append(c.weight.register_hook(lambda g, mask=mask: g * mask))
    return handles
