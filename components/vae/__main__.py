"""``python -m components.vae --shards DIR --preset small --out DIR [--steps N] [--cache-dir DIR]``

Fits the preset's random-weight video VAE on the training shards (``components.vae.fit.fit_vae``) and
writes a VAE folder that ``train --vae DIR`` loads: the diffusers ``config.json`` + safetensors
(``VideoVAE.save_to``; the latent statistics travel inside), ``fit.json`` (held-out PSNR before/after,
the reconstruction curve, losses, timings, the cache key), ``before_after.png`` and ``curve.png``.
The folder is written atomically. A preset whose VAE has pretrained weights is copied through unfitted.

``--cache-dir`` makes a rerun free: the finished folder is also stored under ``<cache-dir>/<key>``, the key
hashing the decoded training frames, the VAE config, the starting weights' seed and every fit option, and
a later run with the same key copies it instead of fitting again (``fit.json`` then says ``"reused": true``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from components.common.defaults import default  # params.yaml is the one source of defaults
from components.common.tracking import add_tracking_args, logger_from_args
from model.cli import HelpFormatter

FIT_DEFAULTS = {"lr": 5e-4, "batch": 4, "crop": 32, "frames": 5, "eval_every": 50}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m components.vae", description=__doc__.split("\n\n")[1],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--shards", required=True, type=Path, help="training shards folder (webdataset tars)")
    ap.add_argument("--out", required=True, type=Path, help="output VAE folder")
    ap.add_argument("--preset", default="small", help="model preset whose VAE is fitted: tiny, small, sana_wm_2b6")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the preset's budget)")
    ap.add_argument("--lr", type=float, default=default("vae.lr"), help="peak AdamW learning rate")
    ap.add_argument("--batch", type=int, default=FIT_DEFAULTS["batch"], help="windows (+ as many single frames) per step")
    ap.add_argument("--crop", type=int, default=FIT_DEFAULTS["crop"], help="training crop size in pixels (0 = whole frames)")
    ap.add_argument("--frames", type=int, default=FIT_DEFAULTS["frames"], help="training window length, 1 + stride*k")
    ap.add_argument("--eval-every", type=int, default=FIT_DEFAULTS["eval_every"], help="steps between curve points")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random initial weights and of the sampling")
    ap.add_argument("--max-clips", type=int, default=None, help="use at most this many clips")
    ap.add_argument("--cache-dir", type=Path, default=None, help="reuse a previous fit with the same key")
    ap.add_argument("--init-bundle", type=lambda v: Path(v) if v else None, default=None,
                    help="use this model bundle's VAE as is (train fine-tunes the bundle); only its PSNR is measured")
    ap.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_tracking_args(ap)
    return ap


def _check(a: argparse.Namespace) -> str | None:
    """One-line error for bad options (None when they are fine)."""
    if a.steps is not None and a.steps < 0:
        return f"--steps must be >= 0, got {a.steps}"
    if a.lr <= 0 or a.batch < 1 or a.crop < 0 or a.eval_every < 0:
        return f"need --lr > 0, --batch >= 1, --crop >= 0, --eval-every >= 0; got {a.lr}, {a.batch}, {a.crop}, {a.eval_every}"
    if not a.shards.is_dir():
        return f"--shards {str(a.shards)!r} is not a folder"
    if a.init_bundle is not None and not (a.init_bundle / "vae" / "config.json").is_file():
        return f"--init-bundle {str(a.init_bundle)!r} is not a model bundle (no vae/config.json)"
    return None


def fit_key(frames: list[Any], vae_cfg: dict, options: dict) -> str:
    """Cache key of a fit: the training frames (bytes), the VAE config and the fit options."""
    h = hashlib.sha256(json.dumps({"vae": vae_cfg, "options": options}, sort_keys=True).encode())
    for f in frames:
        h.update(str(f.shape).encode())
        h.update(f.tobytes())
    return h.hexdigest()[:20]


def fit_and_report(a: argparse.Namespace, logger: Any) -> dict:
    """Fit (or reuse, or copy through) and write ``a.out``; returns the ``fit.json`` report."""
    import torch

    from components.train.data import iter_samples
    from components.vae.fit import clips_from_samples, default_vae_steps, fit_vae
    from components.vae.report import before_after_sheet, plot_curve
    from model import atomic
    from model.config import get_preset
    from model.encoders.vae import build_vae

    cfg = get_preset(a.preset)
    steps = default_vae_steps(a.preset, bool(cfg.vae.pretrained_path)) if a.steps is None else a.steps
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(a.seed)  # the same random start as WorldModelPipeline.from_config(seed)
        vae = build_vae(cfg.vae)
    if cfg.vae.pretrained_path:
        with atomic.atomic_dir(a.out) as tmp:
            vae.save_to(tmp)
            report = {"steps": 0, "pretrained": cfg.vae.pretrained_path, "reused": False}
            atomic.write_json(tmp / "fit.json", report)
        return report

    samples = []
    for s in iter_samples(a.shards):
        samples.append(s)
        if a.max_clips and len(samples) >= a.max_clips:
            break
    if not samples:
        raise ValueError(f"{a.shards}: no training clips in the shards")
    clips = clips_from_samples(samples, cfg.video_height, cfg.video_width)
    if a.init_bundle is not None:
        return _from_bundle(a, cfg, clips, logger)
    options = {"steps": steps, "lr": a.lr, "batch": a.batch, "crop": a.crop or None, "frames": a.frames,
               "eval_every": a.eval_every, "seed": a.seed}
    key = fit_key(clips, cfg.vae.__dict__ | {"preset": a.preset}, options)
    logger.log_params({"preset": a.preset, **{f"vae.{k}": v for k, v in options.items()}, "clips": len(clips),
                       "vae_config": json.dumps(cfg.vae.__dict__, sort_keys=True), "cache_key": key})
    cached = a.cache_dir / key if a.cache_dir else None
    if cached is not None and (cached / "fit.json").is_file():
        atomic.copy_tree(cached, a.out)
        report = json.loads((a.out / "fit.json").read_text())
        report["reused"] = True
        atomic.write_json(a.out / "fit.json", report)
        print(f"vae: reused the fit {key} from {cached} (held-out PSNR {report['psnr_after']:.2f} dB)")
        _log_outputs(logger, a.out, report)
        return report

    t0 = time.perf_counter()
    r = fit_vae(vae, clips, steps=steps, lr=a.lr, batch=a.batch, frames_per_sample=a.frames, seed=a.seed,
                crop=a.crop or None, eval_every=a.eval_every, progress=not a.no_progress, logger=logger)
    preview = r.pop("preview")
    report = {**r, "key": key, "options": options, "preset": a.preset, "reused": False,
              "fit_seconds": time.perf_counter() - t0}
    with atomic.atomic_dir(a.out) as tmp:
        vae.save_to(tmp)
        before_after_sheet(preview["target"], preview["before"], preview["after"], tmp / "before_after.png")
        plot_curve(r["curve"], r["losses"], tmp / "curve.png")
        atomic.write_json(tmp / "fit.json", report)
    if cached is not None:
        atomic.copy_tree(a.out, cached)
    print(f"vae: held-out PSNR {r['psnr_before']:.2f} -> {r['psnr_after']:.2f} dB after {steps} steps "
          f"({report['fit_seconds']:.0f} s)")
    _log_outputs(logger, a.out, report)
    return report


def _from_bundle(a: argparse.Namespace, cfg: Any, clips: list[Any], logger: Any) -> dict:
    """Pass the VAE of ``--init-bundle`` through unchanged (weights and latent statistics: the bundle's
    network was trained on exactly these latents), measuring its PSNR on the training clips."""
    import torch

    from components.vae.fit import _preview, _preview_target, _to_unit, _windows, reconstruction_psnr
    from components.vae.report import before_after_sheet
    from model import atomic
    from model.config import WorldModelConfig
    from model.encoders.vae import load_vae

    bcfg = WorldModelConfig.from_dict(json.loads((a.init_bundle / "config.json").read_text()))
    if bcfg.vae != cfg.vae:
        raise ValueError(f"--init-bundle {a.init_bundle}: its VAE config differs from preset {a.preset!r}'s")
    vae = load_vae(a.init_bundle / "vae", bcfg.vae)
    ts = cfg.vae.temporal_stride
    px = [_to_unit(c, f"clips[{i}]") for i, c in enumerate(clips)]
    n = 1 + ts * ((min(p.shape[1] for p in px) - 1) // ts)
    windows = _windows(px, n, min(4, len(px)), torch.Generator().manual_seed(a.seed + 1))
    psnr = reconstruction_psnr(vae, windows)
    report = {"steps": 0, "from_bundle": str(a.init_bundle), "psnr_before": psnr, "psnr_init": psnr,
              "psnr_after": psnr, "curve": [[0, psnr]], "losses": [], "reused": False, "preset": a.preset,
              "init": "bundle", "fit_seconds": 0.0, "held_out": False}
    with atomic.atomic_dir(a.out) as tmp:
        vae.save_to(tmp)
        w = windows[0]
        before_after_sheet(_preview_target(w), _preview(vae, w), _preview(vae, w), tmp / "before_after.png")
        atomic.write_json(tmp / "fit.json", report)
    print(f"vae: using the VAE of {a.init_bundle} (PSNR on the training clips {psnr:.2f} dB)")
    _log_outputs(logger, a.out, report)
    return report


def _log_outputs(logger: Any, out: Path, report: dict) -> None:
    logger.log_metrics({"vae/psnr_before": report.get("psnr_before", 0.0),
                        "vae/psnr_after": report.get("psnr_after", 0.0),
                        "vae/fit_seconds": report.get("fit_seconds", 0.0), "vae/reused": float(report["reused"])})
    for name in ("before_after.png", "curve.png", "fit.json"):
        if (out / name).is_file():
            logger.log_artifact(out / name, "vae")


def main(argv: list[str] | None = None) -> int:
    """CLI entry (see the module docstring)."""
    a = build_parser().parse_args(argv)
    err = _check(a)
    if err:
        raise ValueError(err)
    with logger_from_args(a, "vae") as logger:
        report = fit_and_report(a, logger)
    print(json.dumps({"out": str(a.out), "psnr_after": report.get("psnr_after"), "reused": report["reused"]}))
    return 0


if __name__ == "__main__":
    from model.cli import run

    sys.exit(run(main))
