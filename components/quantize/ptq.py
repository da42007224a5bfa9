"""The quantize step's measurements: relative velocity and generation errors of a quantized network."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from model.quant.nvfp4 import enabled_quantizers

__all__ = ["quantization_errors"]


def _rel_mse(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.float() - ref.float()).pow(2).mean() / ref.float().pow(2).mean().clamp_min(1e-20))


@torch.no_grad()
def quantization_errors(ref: nn.Module, qnet: nn.Module, eval_batches: list[tuple], conds: Any,
                        sampler: dict[str, Any], seed: int = 7) -> dict[str, float]:
    """Relative MSE of the velocity (held-out noisy latents) and of generated latents (same noise).

    ``conds`` is a ``components.distill.student.ClipConditions``; ``sampler`` {"mode": "few_step"|"streaming",
    "sigmas", "num_steps", "shift", "guidance"} picks the bundle's own sampler.
    """
    from model.sampling import sample_chunk_causal, sample_few_step

    num = den = 0.0
    for x, sigma, text, mask, cam, lens in eval_batches:
        v_ref = ref(x, sigma, text, mask, cam, mode="chunk_causal", chunk_lens=lens)
        v_q = qnet(x, sigma, text, mask, cam, mode="chunk_causal", chunk_lens=lens)
        num += float((v_q - v_ref).pow(2).sum())
        den += float(v_ref.pow(2).sum())
    out = {"velocity_rel_mse": num / max(den, 1e-20)}

    def gen(net: nn.Module) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        kw = {"cond_latent": conds.cond_latent, "num_frames": conds.num_frames, "cond": conds.cond,
                  "chunk_lens": conds.chunk_lens, "generator": g}
        if sampler["mode"] == "few_step":
            return sample_few_step(net, sigmas=sampler["sigmas"], stochastic=False, **kw)
        return sample_chunk_causal(net, num_steps=sampler["num_steps"], guidance_scale=sampler["guidance"],
                                   shift=sampler["shift"], **kw)

    a, b = gen(ref), gen(qnet)
    out["generated_latents_rel_mse"] = _rel_mse(b[:, :, 1:], a[:, :, 1:])
    out["enabled_quantizers"] = len(enabled_quantizers(qnet))
    return out
