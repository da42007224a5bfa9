"""NVFP4 quantization step: PTQ with ModelOpt, error report per mode, save/restore, optional engine export.

A quantized bundle is the unquantized bundle (``save_pretrained``, so any reader can still load the base
weights) plus ``quant/``: ``quant.json`` (mode, hadamard, seed) and ``modelopt.pth`` (``mto.save``).
``load_quantized`` rebuilds the exact quantized module tree from it.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from components.quantize.hadamard import apply_hadamard
from components.quantize.nvfp4 import (
    MODES,
    QKV_PATTERNS,
    calibration_loop,
    enabled_quantizers,
    quantize_network,
    restore_quantized,
    save_quantized,
)

__all__ = ["QuantSpec", "build_quantized", "load_quantized", "quantization_errors", "save_quantized_bundle"]


@dataclass(frozen=True)
class QuantSpec:
    """What was done to the network: ``mode`` (qkv | attention | all), Hadamard on the qkv inputs, its seed."""

    mode: str = "qkv"
    hadamard: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"QuantSpec.mode must be one of {MODES}, got {self.mode!r}")


def _prepare(net: nn.Module, spec: QuantSpec) -> nn.Module:
    if spec.hadamard:
        apply_hadamard(net, QKV_PATTERNS, spec.seed)
    return net


def build_quantized(net: nn.Module, spec: QuantSpec, calib_batches: list[tuple]) -> nn.Module:
    """A quantized COPY of ``net`` (the input stays unquantized for error measurements)."""
    q = _prepare(copy.deepcopy(net).eval(), spec)
    return quantize_network(q, spec.mode, calibration_loop(calib_batches))


def save_quantized_bundle(pipe: Any, qnet: nn.Module, spec: QuantSpec, out: str | Path, info: dict[str, Any]) -> Path:
    """Write the base bundle (kind="quantized") and ``quant/`` beside it, atomically (one folder rename)."""
    out = Path(out)
    pipe.save_pretrained(out, kind="quantized", info={**info, "quant": asdict(spec)})
    qdir = out / "quant"
    qdir.mkdir(exist_ok=True)
    save_quantized(qnet, str(qdir / "modelopt.pth"))
    tmp = qdir / "quant.json.tmp"
    tmp.write_text(json.dumps(asdict(spec), indent=2))
    tmp.replace(qdir / "quant.json")
    return out


def load_quantized(bundle: str | Path) -> Any:
    """``WorldModelPipeline`` whose network is the restored NVFP4 module tree of a quantized bundle."""
    from model.pipeline import WorldModelPipeline

    d = Path(bundle)
    qj = d / "quant" / "quant.json"
    if not qj.exists():
        raise FileNotFoundError(f"{str(d)!r} is not a quantized bundle: {qj} is missing")
    spec = QuantSpec(**json.loads(qj.read_text()))
    pipe = WorldModelPipeline.from_pretrained(d)
    net = _prepare(pipe.network, spec)
    pipe.network = restore_quantized(net, str(d / "quant" / "modelopt.pth")).eval()
    return pipe


def load_bundle(bundle: str | Path, device: str = "cpu") -> Any:
    """Load any model bundle: a quantized one (``quant/quant.json`` present) with its NVFP4 module tree
    restored through ModelOpt, a plain one with ``WorldModelPipeline.from_pretrained``. Evaluation and
    serving use this so they run exactly the network the quantize step produced."""
    from model.pipeline import WorldModelPipeline

    if (Path(bundle) / "quant" / "quant.json").exists():
        return load_quantized(bundle)
    return WorldModelPipeline.from_pretrained(bundle, device=device)


def _rel_mse(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.float() - ref.float()).pow(2).mean() / ref.float().pow(2).mean().clamp_min(1e-20))


@torch.no_grad()
def quantization_errors(ref: nn.Module, qnet: nn.Module, eval_batches: list[tuple], conds: Any,
                        sampler: dict[str, Any], seed: int = 7) -> dict[str, float]:
    """Relative MSE of the velocity (held-out noisy latents) and of generated latents (same noise).

    ``conds`` is a ``components.distill.ClipConditions``; ``sampler`` {"mode": "few_step"|"streaming",
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
