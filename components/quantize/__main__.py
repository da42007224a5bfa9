"""CLI: ``python -m components.quantize --model DIR --shards DIR --mode qkv --out DIR [--hadamard] [--export-engine]``.

Calibrates on noisy latents of the annotated clips (half of them; the other half measures the error),
writes the quantized bundle and prints the error report (``--compare-modes`` adds the other modes).
``--export-engine`` without CUDA + tensorrt stops first with exit code 3 and says why.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from model.cli import HelpFormatter


def noisy_batches(ds: Any, cfg: Any, idx: list[int], seed: int, batch_size: int = 4) -> list[tuple]:
    """(x_sigma, sigma (B,F), text, mask, camera, chunk_lens) batches over clips ``idx``; frame 0 clean."""
    from components.train.config import DiffusionConfig
    from components.train.losses import noisy_input, sample_chunk_sigmas

    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(idx), batch_size):
        b = ds.collate(idx[i:i + batch_size])
        lens = cfg.chunks.chunk_lengths(b.x0.shape[2])
        sigma, _ = sample_chunk_sigmas(b.x0.shape[0], lens, DiffusionConfig(flow_shift=cfg.sampler.flow_shift,
                                                                            image_condition_prob=1.0), g)
        noise = torch.randn(b.x0.shape, generator=g)
        out.append((noisy_input(b.x0, noise, sigma), sigma, b.text, b.text_mask, b.camera, lens))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m components.quantize", description=__doc__.split("\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--model", required=True, help="model bundle to quantize (teacher or student)")
    ap.add_argument("--shards", required=True, help="annotated shards (calibration and error clips)")
    ap.add_argument("--out", required=True, help="output quantized bundle")
    ap.add_argument("--mode", default="qkv", choices=["qkv", "attention", "all"],
                    help="what NVFP4 quantizes: self-attention q/k/v (the paper's default), all attention, all linears")
    ap.add_argument("--hadamard", action="store_true", help="random Hadamard rotation on the qkv inputs")
    ap.add_argument("--compare-modes", action="store_true", help="also report the errors of the other modes")
    ap.add_argument("--export-engine", action="store_true", help="ONNX -> TensorRT engine (CUDA + tensorrt only)")
    ap.add_argument("--latent-frames", type=int, default=None,
                    help="latent frames per clip (default: the most every clip supplies, at most 7)")
    ap.add_argument("--max-clips", type=int, default=8, help="calibration + evaluation clips at most")
    ap.add_argument("--eval-steps", type=int, default=None, help="sampler steps for the generated-latent error")
    ap.add_argument("--seed", type=int, default=0, help="seed for calibration noise and the Hadamard signs")
    ap.add_argument("--cache-dir", default=None, help="latent cache folder (default <out>.cache)")
    from components.common.tracking import add_tracking_args, logger_from_args

    add_tracking_args(ap)
    a = ap.parse_args(argv)

    from components.quantize.export import (
        ENGINE_UNAVAILABLE_EXIT,
        EngineExportUnavailable,
        check_engine_support,
    )

    if a.export_engine:
        try:
            check_engine_support()
        except EngineExportUnavailable as e:
            print(f"error: {e}", file=sys.stderr)
            return ENGINE_UNAVAILABLE_EXIT

    from components.distill.student import conditions_from_dataset
    from components.quantize.ptq import quantization_errors
    from components.train.data import ClipLatentDataset, fit_latent_frames, iter_samples
    from model.pipeline import WorldModelPipeline
    from model.quant.bundle import QuantSpec, build_quantized, save_quantized_bundle

    pipe = WorldModelPipeline.from_pretrained(a.model)
    cfg = pipe.config
    samples = []
    for s in iter_samples(a.shards):
        samples.append(s)
        if len(samples) >= a.max_clips:
            break
    if a.latent_frames is None:
        a.latent_frames = fit_latent_frames(samples, cfg.vae.temporal_stride, cap=7)
    ds = ClipLatentDataset(samples, cfg, a.latent_frames, pipe.vae, pipe.text_encoder,
                           a.cache_dir or str(a.out).rstrip("/") + ".cache")
    if len(ds) < 2:
        raise ValueError(f"need at least 2 usable clips (calibration + evaluation), got {len(ds)}")
    half = len(ds) // 2
    calib = noisy_batches(ds, cfg, list(range(half)), a.seed)
    held = list(range(half, len(ds)))
    evalb = noisy_batches(ds, cfg, held, a.seed + 1)
    conds = conditions_from_dataset(ds, cfg).select(held)
    student = pipe.metadata.get("kind") == "student" or pipe.metadata.get("info", {}).get("sampler_mode") == "few_step"
    sampler = {"mode": "few_step" if student else "streaming", "sigmas": tuple(cfg.sampler.distilled_sigmas),
               "num_steps": a.eval_steps or cfg.sampler.num_steps, "shift": cfg.sampler.flow_shift, "guidance": 1.0}
    ref = pipe.network.eval()
    report: dict[str, Any] = {"sampler": {k: (list(v) if isinstance(v, tuple) else v) for k, v in sampler.items()},
                              "calibration_clips": half, "eval_clips": len(held), "modes": {}}
    modes = [a.mode] + ([m for m in ("qkv", "attention", "all") if m != a.mode] if a.compare_modes else [])
    chosen = None
    with logger_from_args(a, "quantize") as logger:
        for m in modes:
            spec = QuantSpec(m, a.hadamard, a.seed)
            qnet = build_quantized(ref, spec, calib)
            errs = quantization_errors(ref, qnet, evalb, conds, sampler)
            report["modes"][m + ("+hadamard" if a.hadamard else "")] = errs
            logger.log_metrics({f"{m}.{k}": float(v) for k, v in errs.items()})
            if m == a.mode:
                chosen = (spec, qnet, errs)
        spec, qnet, errs = chosen
        # a quantized student keeps how it samples (its distilled schedule and guidance)
        carried = {k: v for k, v in (pipe.metadata.get("info") or {}).items()
                   if k in ("sampler_mode", "distilled_sigmas", "distilled_camera_guidance")}
        save_quantized_bundle(pipe, qnet, spec, a.out, {"errors": errs, "report": report,
                                                        "source_kind": pipe.metadata.get("kind"), **carried})
    if a.export_engine:  # only reached with CUDA + tensorrt present
        from components.quantize.export import export_engine

        b = evalb[0]
        export_engine(qnet.cuda(), tuple(t.cuda() for t in b[:4]), f"{a.out}/engine")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    from model.cli import run

    sys.exit(run(main))
