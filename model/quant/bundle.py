"""Quantized bundles: the unquantized bundle (``save_pretrained``, so any reader can still load the base
weights) plus ``quant/``: ``quant.json`` (mode, hadamard, seed, and ``built_on``: the device kind the
network was quantized on) and ``modelopt.pth`` (``mto.save``). ``load_quantized`` rebuilds the exact
quantized module tree from it; ``load_bundle`` reads either kind.

Why ``built_on``: a CUDA-built tree uses ModelOpt's NVFP4 kernels, whose forward asserts CUDA; a CPU-built
tree names the fake-quant backend (``nvfp4.BACKEND``), the slow reference. A bundle is therefore served
on the device kind it was built on (``serving.triton_repo`` places its Triton instances there).
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

__all__ = ["BUILD_DEVICES", "QuantSpec", "build_device", "build_quantized", "load_bundle", "load_quantized", "prepare",
           "save_quantized_bundle"]

BUILD_DEVICES = ("cpu", "cuda")  # device kinds a quantized bundle can be built (and so served) on


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
    built_on = "cuda" if any(p.is_cuda for p in qnet.parameters()) else "cpu"
    write_json(qdir / "quant.json", {**asdict(spec), "built_on": built_on})
    return out


def _quant_record(bundle: Path) -> dict[str, Any] | None:
    qj = bundle / "quant" / "quant.json"
    return json.loads(qj.read_text()) if qj.is_file() else None


def build_device(bundle: str | Path) -> str | None:
    """Device kind (``cpu`` | ``cuda``) a quantized bundle was built on; None for a plain bundle.

    Bundles written before the record existed count as ``cpu``: the quantize step then always built on
    the CPU (it loads the model with ``from_pretrained``'s default device)."""
    record = _quant_record(Path(bundle))
    if record is None:
        return None
    kind = record.get("built_on", "cpu")
    if kind not in BUILD_DEVICES:
        raise ValueError(f"{Path(bundle) / 'quant' / 'quant.json'}: built_on must be one of {BUILD_DEVICES}, "
                         f"got {kind!r}")
    return kind


def load_quantized(bundle: str | Path, device: str = "cpu") -> Any:
    """``WorldModelPipeline`` on ``device`` whose network is the restored NVFP4 module tree of a quantized
    bundle; ``ValueError`` when ``device`` is not the kind the bundle was built on (see the module doc)."""
    from model.pipeline import WorldModelPipeline

    d = Path(bundle)
    record = _quant_record(d)
    if record is None:
        raise FileNotFoundError(f"{str(d)!r} is not a quantized bundle: {d / 'quant' / 'quant.json'} is missing")
    spec = QuantSpec(**{k: v for k, v in record.items() if k != "built_on"})
    built_on, kind = build_device(d), str(device).split(":")[0]
    if kind != built_on:
        raise ValueError(f"quantized bundle {str(d)!r} was built on {built_on} and is served there, not on "
                         f"{device!r}" + (" (its ModelOpt NVFP4 kernels need CUDA)" if built_on == "cuda" else
                                          " (it holds the CPU fake-quant reference; quantize on CUDA for GPU serving)"))
    pipe = WorldModelPipeline.from_pretrained(d, device=device)
    net = prepare(pipe.network, spec)
    pipe.network = restore_quantized(net, str(d / "quant" / "modelopt.pth")).eval()
    return pipe


def load_bundle(bundle: str | Path, device: str = "cpu") -> Any:
    """Load any model bundle: a quantized one (``quant/quant.json`` present) with its NVFP4 module tree
    restored through ModelOpt, a plain one with ``WorldModelPipeline.from_pretrained``. Evaluation and
    serving use this so they run exactly the network the quantize step produced."""
    from model.pipeline import WorldModelPipeline

    if (Path(bundle) / "quant" / "quant.json").exists():
        return load_quantized(bundle, device=device)
    return WorldModelPipeline.from_pretrained(bundle, device=device)


