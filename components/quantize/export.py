"""Engine export: ONNX -> TensorRT, only where a CUDA GPU and the ``tensorrt`` package exist.

NVFP4 ONNX export itself needs CUDA in ModelOpt 0.47, and TensorRT engines are built for a specific
GPU, so on a CPU machine the step stops with ``EngineExportUnavailable`` (exit code 3 in the CLI)
instead of writing something that could not run.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch

ENGINE_UNAVAILABLE_EXIT = 3
MESSAGE = ("TensorRT engine export needs a CUDA GPU and the tensorrt package; this machine has "
           "{have}. Run `python -m components.quantize ... --export-engine` on a GPU node (the quantized "
           "bundle written here restores there with ModelOpt).")


class EngineExportUnavailable(RuntimeError):
    """Raised when the engine cannot be built on this machine (no CUDA or no tensorrt)."""


def check_engine_support() -> None:
    """Raise ``EngineExportUnavailable`` naming what is missing."""
    missing = []
    if not torch.cuda.is_available():
        missing.append("no CUDA device")
    if importlib.util.find_spec("tensorrt") is None:
        missing.append("no tensorrt package")
    if missing:
        raise EngineExportUnavailable(MESSAGE.format(have=" and ".join(missing)))


def export_engine(net: torch.nn.Module, example: tuple[Any, ...], out_dir: str | Path) -> Path:
    """Export the quantized ``net`` to ONNX (opset 20, NVFP4 Q/DQ nodes) and build a TensorRT engine.

    ``example`` = (x (B,C,F,h,w), sigma (B,F), text (B,L,Dt), text_mask (B,L)) on CUDA; the camera-free
    forward is exported (camera inputs are bound per request by the serving adapter). Returns the
    engine path. GPU-only: exercised on a GPU machine, never on CPU CI.
    """
    check_engine_support()
    import tensorrt as trt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "network.onnx"
    torch.onnx.export(net, example, str(onnx_path), opset_version=20, dynamo=False,
                      input_names=["x", "sigma", "text", "text_mask"], output_names=["velocity"])
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errs}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP4) if hasattr(trt.BuilderFlag, "FP4") else None
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError("TensorRT engine build failed (see the TensorRT log above)")
    from model.atomic import write_bytes

    return write_bytes(out / "network.plan", bytes(engine))
