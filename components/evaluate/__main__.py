"""Evaluate a bundle on the held-out set: camera following (poses recovered from the generated video),
PSNR/SSIM against the real clip, the VAE's reconstruction PSNR, and generation speed.

    python -m components.evaluate --model DIR --heldout DIR --out DIR [--num-clips 2] [--max-frames N]
        [--mode few_step|streaming|bidirectional] [--seed 0]

``--heldout`` is the data DAG's held-out shards (``ingest --split heldout`` -> ``annotate``): scenes from a
seed stream training never sees, at least one trajectory class training never sees, clips >= 2x the
training length. Nothing else is read, so every figure is a held-out figure; the first ``--num-clips``
samples in key order are used, each at its full length (``--max-frames`` caps it). For each clip: its first
frame + commanded trajectory -> ``WorldModelPipeline.generate`` -> ``camera_metrics.camera_following_report``;
``vae_psnr_db`` is the bundle VAE's encode/decode PSNR on the same clips.
Writes ``metrics.json`` (flat numbers, DVC metrics), ``report.json`` (per-clip detail), ``plots/*.png``,
``samples/<id>.mp4`` and ``smoke_input/{image.png, trajectory.npz}`` (the example request that register
attaches to the model and deploy sends to Triton). Output folder written atomically.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.common.lineage import log_dataset
from components.common.tracking import add_tracking_args, logger_from_args
from model.atomic import atomic_dir


@dataclass(frozen=True)
class HeldOutClip:
    """One evaluation clip: frames uint8 (N,H,W,3), c2w (N,4,4), intrinsics (N,3,3), fps."""

    key: str
    frames: np.ndarray
    c2w: np.ndarray
    intrinsics: np.ndarray
    fps: float


def _decode(data: bytes) -> np.ndarray:
    import av

    with av.open(io.BytesIO(data)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def load_held_out(shards: Path, num_clips: int) -> list[HeldOutClip]:
    """The first ``num_clips`` samples (by key) of the held-out webdataset tars in ``shards``."""
    tars = sorted(shards.glob("*.tar"))
    if not tars:
        raise FileNotFoundError(f"no webdataset shards (*.tar) in {shards}")
    samples: dict[str, dict[str, bytes]] = {}
    for tar in tars:
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                if not m.isfile():
                    continue
                key, _, ext = m.name.partition(".")
                if ext in ("mp4", "poses.npz"):
                    samples.setdefault(key, {})[ext] = tf.extractfile(m).read()
    keys = sorted(k for k, v in samples.items() if {"mp4", "poses.npz"} <= v.keys())
    if len(keys) < num_clips:
        raise ValueError(f"{shards} holds {len(keys)} complete samples, fewer than --num-clips {num_clips}")
    clips = []
    for key in keys[:num_clips]:
        poses = np.load(io.BytesIO(samples[key]["poses.npz"]))
        frames = _decode(samples[key]["mp4"])
        n = min(len(frames), len(poses["c2w"]))
        K = np.asarray(poses["intrinsics"], np.float64)
        K = np.broadcast_to(K, (len(poses["c2w"]), 3, 3)) if K.ndim == 2 else K
        clips.append(HeldOutClip(key, frames[:n], np.asarray(poses["c2w"], np.float64)[:n], K[:n],
                                 float(poses["fps"])))
    return clips


def fit_to_model(clip: HeldOutClip, hw: tuple[int, int], temporal_stride: int, max_frames: int) -> HeldOutClip:
    """Resize frames/intrinsics to the model's size and cut N to the largest 1 + ts*k <= max_frames."""
    import cv2

    from model.camera import rescale_intrinsics

    n = min(len(clip.frames), max_frames)
    n = 1 + (n - 1) // temporal_stride * temporal_stride
    if n < 1 + temporal_stride:
        raise ValueError(f"clip {clip.key} has {len(clip.frames)} frames; need >= {1 + temporal_stride}")
    frames, K = clip.frames[:n], clip.intrinsics[:n]
    src = frames.shape[1:3]
    if tuple(src) != tuple(hw):
        frames = np.stack([cv2.resize(f, (hw[1], hw[0]), interpolation=cv2.INTER_AREA) for f in frames])
        K = np.stack([rescale_intrinsics(k, tuple(src), tuple(hw)) for k in K])
    return HeldOutClip(clip.key, frames, clip.c2w[:n], K, clip.fps)


def evaluate(model_dir: Path, heldout: Path, out: Path, num_clips: int, max_frames: int | None, mode: str | None,
             seed: int, logger) -> dict[str, float]:
    """Run the evaluation (module docstring); returns the flat metrics written to ``metrics.json``."""
    from PIL import Image

    from components.evaluate.camera_metrics import camera_following_report, plot_camera_report
    from components.vae.fit import video_psnr
    from model.quant.bundle import load_bundle
    from model.trajectory import Trajectory, save_trajectory
    from model.video_io import write_video

    pipe = load_bundle(model_dir)  # the NVFP4 network itself when the bundle is quantized
    cfg = pipe.config
    ts = cfg.vae.temporal_stride
    # Distilled bundles are meant to run few-step; a teacher runs the streaming sampler.
    mode = mode or ("few_step" if (pipe.metadata or {}).get("kind") in ("student", "quantized") else "streaming")
    raw = load_held_out(heldout, num_clips)
    max_frames = max_frames or max(len(c.frames) for c in raw)  # the whole held-out clip
    clips = [fit_to_model(c, (cfg.video_height, cfg.video_width), ts, max_frames) for c in raw]
    per_clip, agg = {}, {}
    with atomic_dir(out) as tmp:
        for sub in ("plots", "samples", "smoke_input"):
            (tmp / sub).mkdir()
        for i, clip in enumerate(clips):
            t0 = time.perf_counter()
            video = pipe.generate(clip.frames[0], clip.c2w, clip.intrinsics, seed=seed, mode=mode)
            dt = time.perf_counter() - t0
            rep = camera_following_report(video, clip.c2w, clip.intrinsics, clip.fps, gt_frames=clip.frames)
            rep["gen_seconds"] = dt
            rep["gen_fps"] = len(video) / dt
            rep["latent_fps"] = cfg.vae.num_latent_frames(len(video)) / dt
            rep["vae_psnr_db"] = video_psnr(pipe.vae, clip.frames)
            per_clip[clip.key] = rep
            plot_camera_report(rep, tmp / "plots" / f"{clip.key}.png")
            write_video(video, tmp / "samples" / f"{clip.key}.mp4", clip.fps)
            if i == 0:
                Image.fromarray(clip.frames[0]).save(tmp / "smoke_input" / "image.png")
                save_trajectory(Trajectory(clip.c2w, clip.intrinsics, clip.fps), tmp / "smoke_input" / "trajectory.npz")
            for k in ("rot_err_deg_mean", "trans_err_mean", "cammc_mean", "registered_fraction", "psnr_mean",
                      "ssim_mean", "gen_fps", "latent_fps", "gen_seconds", "vae_psnr_db"):
                if isinstance(rep.get(k), (int, float)):
                    agg.setdefault(k, []).append(float(rep[k]))
        metrics = {k: float(np.mean(v)) for k, v in agg.items()}
        metrics["num_clips"] = float(len(clips))
        metrics["num_frames"] = float(len(clips[0].frames))
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        (tmp / "report.json").write_text(json.dumps({"mode": mode, "clips": per_clip}, indent=2, sort_keys=True))
    logger.log_params({"model": str(model_dir), "mode": mode, "num_clips": num_clips, "max_frames": max_frames,
                       "seed": seed, "preset": cfg.name})
    log_dataset(logger, heldout, "heldout", context="evaluation")
    logger.log_metrics(metrics)
    for sub in ("plots", "samples"):
        logger.log_artifact(out / sub, sub)
    logger.log_artifact(out / "metrics.json")
    return metrics


def main(argv: list[str] | None = None) -> int:
    """CLI entry (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m components.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path, help="model bundle folder")
    ap.add_argument("--heldout", "--shards", dest="heldout", required=True, type=Path,
                    help="held-out shards folder (the data DAG's heldout output; --shards is an old alias)")
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--num-clips", type=int, default=2)
    ap.add_argument("--max-frames", type=int, default=None, help="raw frames per clip (default 1 + 2*stride)")
    ap.add_argument("--mode", choices=("streaming", "bidirectional", "few_step"), default=None)
    ap.add_argument("--seed", type=int, default=0)
    add_tracking_args(ap)
    args = ap.parse_args(argv)
    if args.num_clips < 1:
        ap.error(f"--num-clips must be >= 1, got {args.num_clips}")
    with logger_from_args(args, "evaluate") as logger:
        metrics = evaluate(args.model, args.heldout, args.out, args.num_clips, args.max_frames, args.mode,
                           args.seed, logger)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    from model.cli import run

    sys.exit(run(main))
