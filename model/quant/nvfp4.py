"""NVFP4 post-training quantization of the SANA-WM network with NVIDIA ModelOpt.

NVFP4 = FP4 E2M1 values, one FP8 (E4M3) scale per 16-element block, one FP32 global scale per tensor.
ModelOpt inserts ``TensorQuantizer``s around the selected ``nn.Linear``s (``mtq.quantize``), calibrates
their amax with a forward loop over calibration latents, and ``mto.save``/``mto.restore`` persist the
quantized module tree.

On GPU ModelOpt's own NVFP4 kernels run. On CPU its quantized forward asserts CUDA, so the quantizers
name a backend registered with ``register_quant_backend`` that fake-quantizes through
``NVFP4QTensor.quantize``/``dequantize`` (block 16), with the calibrated amax as the global scale source
(amax / (6 * 448), ModelOpt's NVFP4 convention): same numerics, only slower.

Modes (which quantizers are enabled; patterns over module names of ``SanaWM``):
  qkv        self-attention ``attn.qkv`` and the camera branch's ``attn.{q,k,v}_proj_cam`` (weights + inputs):
             the paper's default
  attention  every linear of self- and cross-attention (``*attn.*``)
  all        every ``nn.Linear`` (convolutions stay high precision)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

BACKEND = "nvfp4_fake_cpu"
BLOCK = 16
MODES = ("qkv", "attention", "all")
# The self-attention input projections: the fused main qkv and the camera branch's q/k/v (same input x).
QKV_PATTERNS = ("*attn.qkv", "*attn.q_proj_cam", "*attn.k_proj_cam", "*attn.v_proj_cam")


def _nvfp4_fake(inputs: torch.Tensor, quantizer: Any) -> torch.Tensor:
    """Fake NVFP4 quant-dequant of ``inputs`` (any shape, blocks of 16 along the last dim)."""
    from modelopt.torch.quantization.qtensor.nvfp4_tensor import NVFP4QTensor

    x = inputs.float()
    pad = (-x.shape[-1]) % BLOCK
    if pad:  # a partial last block: zero-pad (zeros never raise a block's scale), cut after dequantize
        x = torch.nn.functional.pad(x, (0, pad))
    amax = getattr(quantizer, "amax", None)
    scale2 = None
    if amax is not None:
        # Global scale from the calibrated per-tensor amax: max |x| maps to FP4 max (6) x FP8 max (448).
        scale2 = (amax.float().max() / (6.0 * 448.0)).clamp_min(1e-12).reshape(())
    q, s, s2 = NVFP4QTensor.quantize(x, BLOCK, weights_scaling_factor_2=scale2)
    y = q.dequantize(dtype=torch.float32, scale=s, double_scale=s2, block_sizes={-1: BLOCK})
    return y.reshape(x.shape)[..., : inputs.shape[-1]].to(inputs.dtype)


def register_cpu_backend() -> None:
    """Register the fake-quant backend with ModelOpt (idempotent; needed before quantize AND restore)."""
    from modelopt.torch.quantization.nn.modules.tensor_quantizer import (
        is_registered_quant_backend,
        register_quant_backend,
    )

    if not is_registered_quant_backend(BACKEND):
        register_quant_backend(BACKEND, _nvfp4_fake)


def _fp4_cfg(cpu: bool) -> dict[str, Any]:
    cfg: dict[str, Any] = {"num_bits": (2, 1), "block_sizes": {-1: BLOCK, "type": "dynamic", "scale_bits": (4, 3)}}
    if cpu:
        cfg["backend"] = BACKEND
    return cfg


def quant_config(mode: str, cpu: bool) -> dict[str, Any]:
    """ModelOpt 0.47 config: ``quant_cfg`` is an ordered list of {"quantizer_name", "cfg"/"enable"} rules."""
    if mode not in MODES:
        raise ValueError(f"quantize mode must be one of {MODES}, got {mode!r}")
    fp4 = _fp4_cfg(cpu)
    rules: list[dict[str, Any]] = [{"quantizer_name": "*", "enable": False}]
    if mode == "qkv":
        # "*attn.qkv*" also catches the inner linear of a Hadamard-rotated qkv ("attn.qkv.linear").
        pats = [p + "*" for p in QKV_PATTERNS]
    elif mode == "attention":
        pats = ["*attn.*"]
    else:
        pats = ["*"]
    for p in pats:
        for kind in ("weight_quantizer", "input_quantizer"):
            rules.append({"quantizer_name": f"{p}{kind}" if p.endswith("*") else f"{p}.{kind}", "cfg": fp4})
    for conv in ("nn.Conv1d", "nn.Conv2d", "nn.Conv3d"):
        rules.append({"quantizer_name": "*", "parent_class": conv, "enable": False})
    return {"quant_cfg": rules, "algorithm": "max"}


def quantize_network(net: nn.Module, mode: str, forward_loop: Callable[[nn.Module], None],
                     cpu: bool | None = None) -> nn.Module:
    """Quantize ``net`` in place (ModelOpt PTQ, max calibration with ``forward_loop``). Returns it."""
    import modelopt.torch.quantization as mtq

    cpu = (not next(net.parameters()).is_cuda) if cpu is None else cpu
    if cpu:
        register_cpu_backend()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = mtq.quantize(net, quant_config(mode, cpu), forward_loop=forward_loop)
    return net


def enabled_quantizers(net: nn.Module) -> list[str]:
    """Names of enabled TensorQuantizers (what the mode actually quantized)."""
    from modelopt.torch.quantization.nn import TensorQuantizer

    return [n for n, m in net.named_modules() if isinstance(m, TensorQuantizer) and m.is_enabled]


def save_quantized(net: nn.Module, path: str) -> None:
    """``mto.save``: ModelOpt state (quantizer tree) + weights incl. calibrated amax, written atomically."""
    import modelopt.torch.opt as mto

    from model.atomic import atomic_path

    with atomic_path(path) as tmp:
        mto.save(net, str(tmp))


def restore_quantized(net: nn.Module, path: str) -> nn.Module:
    """``mto.restore`` onto a freshly built network with the same (possibly Hadamard-rotated) tree."""
    import modelopt.torch.opt as mto

    register_cpu_backend()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mto.restore(net, path)


def calibration_loop(batches: Iterable[tuple]) -> Callable[[nn.Module], None]:
    """Forward loop over (x, sigma, text, text_mask, camera, chunk_lens) batches, chunk-causal mode."""
    batches = list(batches)

    def loop(model: nn.Module) -> None:
        with torch.no_grad():
            for x, sigma, text, mask, cam, lens in batches:
                model(x, sigma, text, mask, cam, mode="chunk_causal", chunk_lens=lens)

    return loop
