"""Quantized bundles: the unquantized bundle (``save_pretrained``, so any reader can still load the base
weights) plus ``quant/``: ``quant.json`` (mode, hadamard, seed) and ``modelopt.pth`` (``mto.save``).
``load_quantized`` rebuilds the exact quantized module tree from it; ``load_bundle`` reads either kind.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from model.atomic import write_json
from model.quant.hadamard import apply_hadamard
from model.quant.nvfp4 import (
    MODES,
    QKV_PATTERNS,
    calibration_loop,
    quantize_network,
    restore_quantized,
    save_quantized,
)

__all__ = ["QuantSpec", "build_quantized", "load_bundle", "load_quantized", "prepare", "save_quantized_bundle"]


@dataclass(frozen=True)
class QuantSpec:
    """What was done to the network: ``mode`` (qkv | attention | all), Hadamard on the qkv inputs, its seed."""

    mode: str = "qkv"
    hadamard: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"QuantSpec.mode must be one of {MODES}, got {self.mode!r}")


def prepare(net: nn.Module, spec: QuantSpec) -> nn.Module:
    """Apply the tree transforms ``spec`` names (the Hadamard rotation) before quantize or restore."""
    if spec.hadamard:
        apply_hadamard(net, QKV_PATTERNS, spec.seed)
    return net


def build_quantized(net: nn.Module, spec: QuantSpec, calib_batches: list[tuple]) -> nn.Module:
    """A quantized COPY of ``net`` (the input stays unquantized for error measurements)."""
    q = prepare(copy.deepcopy(net).eval(), spec)
    return quantize_network(q, spec.mode, calibration_loop(calib_batches))


def save_quantized_bundle(pipe: Any, qnet: nn.Module, spec: QuantSpec, out: str | Path, info: dict[str, Any]) -> Path:
    """Write the base bundle (kind="quantized") and ``quant/`` beside it, atomically (one folder rename)."""
    out = Path(out)
    pipe.save_pretrained(out, kind="quantized", info={**info, "quant": asdict(spec)})
    qdir = out / "quant"
    qdir.mkdir(exist_ok=True)
    save_quantized(qnet, str(qdir / "modelopt.pth"))
    write_json(qdir / "quant.json", asdict(spec))
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
    net = prepare(pipe.network, spec)
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


