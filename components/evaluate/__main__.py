"""Evaluate a bundle on the held-out set: camera following (poses recovered from the generated video),
PSNR/SSIM against the real clip, the VAE's reconstruction PSNR, and generation speed.

    python -m components.evaluate --model DIR --heldout DIR --out DIR [--num-clips 2] [--max-frames N]
        [--mode few_step|streaming|bidirectional] [--seed 0] [--camera-guidance G]

``--heldout`` is the data DAG's held-out shards (``ingest --split heldout`` -> ``annotate``): scenes from a
seed stream training never sees, at least one trajectory class training never sees, clips >= 2x the
training length. Nothing else is read, so every figure is a held-out figure; the first ``--num-clips``
samples in key order are used, each at its full length (``--max-frames`` caps it). For each clip: its first
frame + commanded trajectory -> ``WorldModelPipeline.generate`` -> ``camera_metrics.camera_following_report``;
``vae_psnr_db`` is the bundle VAE's encode/decode PSNR on the same clips.
Each clip is also generated for its left-right mirrored path (the control of the camera-following test)
and ``--teacher`` / ``--student`` bundles are scored the same way (``teacher.*`` / ``student.*`` keys and
``table.md``: distillation and quantization costs side by side). A streaming rollout ``--drift-factor`` x
the training clip length gives the drift curves (``plots/drift.png``).
Writes ``metrics.json`` (flat numbers, DVC metrics: ``vae_psnr_db``, ``frame0_psnr_db``, ``psnr_mean``,
``ssim_mean``, ``rot_err_deg_mean``, ``rot_err_deg_mean_mirrored``, ``yaw_direction_agreement``,
``registered_fraction``, ``baseline_still_psnr_mean`` (the first frame held still: the floor a world model
must beat), ... and the same per variant), ``report.json`` (per-clip detail), ``table.md``,
``contact_sheet.png`` (GT row over generated row), ``plots/<id>{,_path,_contact_sheet}.png``,
``plots/drift.png``, ``samples/<id>.mp4``, ``samples/<id>_gt_vs_gen.mp4``, ``samples/<id>_drift.mp4`` and ``smoke_input/{image.png, trajectory.npz}`` (the example request that register
attaches to the model and deploy sends to Triton). Output folder written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from components.common.defaults import default  # params.yaml is the one source of defaults
from components.common.lineage import log_dataset
from components.common.tracking import add_tracking_args, logger_from_args
from model.atomic import atomic_dir, write_json
from model.cli import HelpFormatter


@dataclass(frozen=True)
class HeldOutClip:
    """One evaluation clip: frames uint8 (N,H,W,3), c2w (N,4,4), intrinsics (N,3,3), fps."""

    key: str
    frames: np.ndarray
    c2w: np.ndarray
    intrinsics: np.ndarray
    fps: float


def load_held_out(shards: Path, num_clips: int) -> list[HeldOutClip]:
    """The first ``num_clips`` samples (by key) of the held-out shards, read with the one shard reader
    (``components.annotate.shards.iter_shard_samples``)."""
    from components.annotate.shards import iter_shard_samples

    if not Path(shards).is_dir():
        raise FileNotFoundError(f"held-out shards folder {str(shards)!r} does not exist")
    heads = sorted(iter_shard_samples(shards, decode=False), key=lambda r: r["id"])
    if len(heads) < num_clips:
        raise ValueError(f"{shards} holds {len(heads)} complete samples, fewer than --num-clips {num_clips}")
    wanted = {r["id"] for r in heads[:num_clips]}
    clips = []
    for r in sorted((r for r in iter_shard_samples(shards) if r["id"] in wanted), key=lambda r: r["id"]):
        frames = r["frames"]
        n = min(len(frames), len(r["c2w"]))
        K = np.asarray(r["intrinsics"], np.float64)
        K = np.broadcast_to(K, (len(r["c2w"]), 3, 3)) if K.ndim == 2 else K
        clips.append(HeldOutClip(r["id"], frames[:n], np.asarray(r["c2w"], np.float64)[:n], K[:n], float(r["fps"])))
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


VARIANTS = ("teacher", "student", "quantized")
YAW_MIN_DEG = 2.0
SMOKE_LATENT_FRAMES = 9  # 33 raw frames at stride 4  # clips whose commanded yaw is smaller carry no direction to agree with


def _mean(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else float("nan")


def evaluate_variant(pipe, clips: list[HeldOutClip], mode: str, seed: int) -> tuple[dict[str, float], dict]:
    """Generate every clip twice (commanded and mirrored camera path) and score it.

    Returns (flat metrics, per-clip detail). ``rot_err_deg_mean_mirrored``: rotation error against the
    *commanded* path of the poses recovered from the video generated for the *mirrored* path: a model
    that ignores the camera scores the same on both, one that follows it much worse on the mirrored run.
    ``yaw_direction_agreement``: fraction of clips with |commanded yaw| >= 2 deg whose recovered total yaw
    has the commanded sign; ``rot_err_deg_mean{,_mirrored}_yawing``: the two rotation errors over those clips.
    ``frame0_psnr_db``: the conditioning frame's round trip through the model.
    """
    from components.evaluate.camera_metrics import camera_following_report
    from components.evaluate.report import frame_psnr, mirror_trajectory, total_yaw_deg
    from components.vae.fit import video_psnr

    cfg = pipe.config
    per_clip, agg = {}, {}
    for clip in clips:
        t0 = time.perf_counter()
        video = pipe.generate(clip.frames[0], clip.c2w, clip.intrinsics, seed=seed, mode=mode)
        dt = time.perf_counter() - t0
        rep = camera_following_report(video, clip.c2w, clip.intrinsics, clip.fps, gt_frames=clip.frames)
        mirrored = mirror_trajectory(clip.c2w)
        video_m = pipe.generate(clip.frames[0], mirrored, clip.intrinsics, seed=seed, mode=mode)
        rep_m = camera_following_report(video_m, clip.c2w, clip.intrinsics, clip.fps)
        rec = np.asarray(rep["recovered_c2w"])
        cmd_yaw, rec_yaw = total_yaw_deg(clip.c2w), total_yaw_deg(rec)
        rep.update(gen_seconds=dt, gen_fps=len(video) / dt, latent_fps=cfg.vae.num_latent_frames(len(video)) / dt,
                   vae_psnr_db=video_psnr(pipe.vae, clip.frames), frame0_psnr_db=frame_psnr(video[0], clip.frames[0]),
                   rot_err_deg_mean_mirrored=rep_m["rot_err_deg_mean"],
                   registered_fraction_mirrored=rep_m["registered_fraction"],
                   recovered_c2w_mirrored=rep_m["recovered_c2w"], commanded_yaw_deg=cmd_yaw, recovered_yaw_deg=rec_yaw)
        if abs(cmd_yaw) >= YAW_MIN_DEG:
            rep["yaw_direction_agrees"] = bool(np.sign(rec_yaw) == np.sign(cmd_yaw))
            agg.setdefault("yaw_direction_agreement", []).append(float(rep["yaw_direction_agrees"]))
            # the mirrored control only discriminates where mirroring changes the path (a straight walk's
            # mirror image is itself): the same pair of means over the clips that turn
            agg.setdefault("rot_err_deg_mean_yawing", []).append(float(rep["rot_err_deg_mean"]))
            agg.setdefault("rot_err_deg_mean_mirrored_yawing", []).append(float(rep_m["rot_err_deg_mean"]))
        per_clip[clip.key] = {"report": rep, "video": video, "video_mirrored": video_m}
        for k in ("rot_err_deg_mean", "rot_err_deg_mean_mirrored", "trans_err_mean", "cammc_mean",
                  "registered_fraction", "psnr_mean", "ssim_mean", "frame0_psnr_db", "gen_fps", "latent_fps",
                  "gen_seconds", "vae_psnr_db"):
            if isinstance(rep.get(k), (int, float)):
                agg.setdefault(k, []).append(float(rep[k]))
    metrics = {k: _mean(v) for k, v in agg.items()}
    metrics.setdefault("yaw_direction_agreement", float("nan"))
    return metrics, per_clip


def drift_rollout(pipe, clip: HeldOutClip, num_frames: int, mode: str, seed: int) -> dict:
    """Stream ``num_frames`` frames (the held-out path continued by its mean motion) from the clip's
    first image; PSNR against the ground truth where it exists, rotation error against the command."""
    from components.evaluate.camera_metrics import camera_following_report
    from components.evaluate.report import extend_trajectory, frame_psnr

    ts = pipe.config.vae.temporal_stride
    n = 1 + (num_frames - 1) // ts * ts
    c2w, K = extend_trajectory(clip.c2w, clip.intrinsics, n)
    video = pipe.generate(clip.frames[0], c2w, K, seed=seed, mode=mode)
    rep = camera_following_report(video, c2w, K, clip.fps)
    psnr = [frame_psnr(a, b) for a, b in zip(video, clip.frames)]
    return {"num_frames": n, "gt_frames": len(clip.frames), "psnr": psnr, "rot_err_deg": rep["rot_err_deg"],
            "registered_fraction": rep["registered_fraction"], "video": video}


def _train_frames(pipe) -> int:
    """Raw frames per training clip, from the bundle's training record (teacher info) when present."""
    info = (pipe.metadata or {}).get("info", {}) or {}
    tc = info.get("train_config") or (info.get("teacher_info") or {}).get("train_config") or {}
    stages = tc.get("stages") or []
    if stages and stages[-1].get("latent_frames"):
        return pipe.config.vae.num_raw_frames(int(stages[-1]["latent_frames"]))
    return pipe.config.vae.num_raw_frames(9)


def evaluate(model_dir: Path, heldout: Path, out: Path, num_clips: int, max_frames: int | None, mode: str | None,
             seed: int, logger, variants: dict[str, Path] | None = None, drift_factor: float = 4.0,
             camera_guidance: float | None = None) -> dict[str, float]:
    """Run the evaluation (module docstring); returns the flat metrics written to ``metrics.json``.

    ``variants`` ({"teacher": dir, "student": dir}) are scored the same way; their metrics appear as
    ``<variant>.<key>`` and in ``table.md``. ``model_dir`` is the headline model (unprefixed keys, and
    also ``<its kind>.<key>``). ``drift_factor`` x the training clip length is the drift rollout's length
    (0 = no drift rollout). ``camera_guidance`` (None: each bundle's ``sampler.camera_guidance_scale``) overrides
    g_cam for every variant that samples with it (a few-step student has its teacher's distilled in).
    """
    from PIL import Image

    from components.evaluate.camera_metrics import plot_camera_report
    from components.evaluate.report import (
        contact_sheet,
        frame_psnr,
        plot_drift,
        plot_paths,
        side_by_side,
        variant_table,
    )
    from model.pipeline import sampler_mode_of
    from model.quant.bundle import load_bundle
    from model.trajectory import Trajectory, save_trajectory
    from model.video_io import write_video

    def mode_for(p) -> str:  # distilled bundles run few-step; a teacher runs the streaming sampler
        return mode or sampler_mode_of(p.metadata)

    def guided(p):  # the sweep knob: g_cam of the multi-step samplers, without editing the bundle
        if camera_guidance is not None and mode_for(p) != "few_step":
            p.config = replace(p.config, sampler=replace(p.config.sampler, camera_guidance_scale=camera_guidance))
        return p

    pipe = guided(load_bundle(model_dir))  # the NVFP4 network itself when the bundle is quantized
    cfg = pipe.config
    ts = cfg.vae.temporal_stride
    main_kind = (pipe.metadata or {}).get("kind") or "model"

    raw = load_held_out(heldout, num_clips)
    max_frames = max_frames or max(len(c.frames) for c in raw)  # the whole held-out clip
    clips = [fit_to_model(c, (cfg.video_height, cfg.video_width), ts, max_frames) for c in raw]
    runs = {main_kind: (pipe, model_dir)}
    for name, d in (variants or {}).items():
        if d is not None and name != main_kind:
            runs[name] = (guided(load_bundle(d)), d)
    results, table = {}, {}
    with atomic_dir(out) as tmp:
        for sub in ("plots", "samples", "smoke_input"):
            (tmp / sub).mkdir()
        for name, (p, _) in runs.items():
            m, per_clip = evaluate_variant(p, clips, mode_for(p), seed)
            results[name], table[name] = per_clip, m
        metrics = dict(table[main_kind])
        for name, m in table.items():
            metrics.update({f"{name}.{k}": v for k, v in m.items()})
        # The floor a world model must beat: the conditioning image held still for the whole clip.
        still = [float(np.mean([frame_psnr(c.frames[0], f) for f in c.frames])) for c in clips]
        metrics["baseline_still_psnr_mean"] = float(np.mean(still))
        metrics["num_clips"] = float(len(clips))
        metrics["num_frames"] = float(len(clips[0].frames))
        # figures of the headline model
        for i, clip in enumerate(clips):
            r = results[main_kind][clip.key]
            rep, video = r["report"], r["video"]
            plot_camera_report(rep, tmp / "plots" / f"{clip.key}.png")
            plot_paths(clip.c2w, np.asarray(rep["recovered_c2w"]), tmp / "plots" / f"{clip.key}_path.png",
                       title=f"{clip.key}: commanded vs recovered ({main_kind})")
            write_video(video, tmp / "samples" / f"{clip.key}.mp4", clip.fps)
            write_video(side_by_side(clip.frames, video), tmp / "samples" / f"{clip.key}_gt_vs_gen.mp4", clip.fps)
            contact_sheet(clip.frames, video, tmp / "plots" / f"{clip.key}_contact_sheet.png",
                          title=f"{clip.key} ({main_kind}): PSNR {rep['psnr_mean']:.1f} dB, frame 0 "
                                f"{rep['frame0_psnr_db']:.1f} dB, rot err {rep['rot_err_deg_mean']:.1f} deg")
            if i == 0:
                contact_sheet(clip.frames, video, tmp / "contact_sheet.png", title=f"{clip.key} ({main_kind})")
                Image.fromarray(clip.frames[0]).save(tmp / "smoke_input" / "image.png")
                # the deploy smoke request: the training length (a served request must stay within the
                # server's frame limit, 65 by default; the held-out clips are longer)
                n = min(len(clip.c2w), cfg.vae.num_raw_frames(SMOKE_LATENT_FRAMES))
                save_trajectory(Trajectory(clip.c2w[:n], clip.intrinsics[:n], clip.fps),
                                tmp / "smoke_input" / "trajectory.npz")
        drift = None
        if drift_factor > 0:
            n_train = _train_frames(runs.get("teacher", (pipe,))[0])
            drift = drift_rollout(pipe, clips[0], int(drift_factor * n_train), mode_for(pipe), seed)
            plot_drift(drift["psnr"], drift["rot_err_deg"], n_train, drift["gt_frames"], tmp / "plots" / "drift.png",
                       title=f"{clips[0].key}: {drift['num_frames']}-frame {mode_for(pipe)} rollout "
                             f"({drift_factor:g}x the {n_train}-frame training clips)")
            write_video(drift.pop("video"), tmp / "samples" / f"{clips[0].key}_drift.mp4", clips[0].fps)
            # the same curves as data for `dvc plots` (one row per generated frame)
            write_json(tmp / "plots" / "drift.json",
                       [{"frame": i, "psnr_db": float(p), "rot_err_deg": float(r)}
                        for i, (p, r) in enumerate(zip(drift["psnr"], drift["rot_err_deg"]))])
            metrics["drift.num_frames"] = float(drift["num_frames"])
            metrics["drift.rot_err_deg_last"] = float(drift["rot_err_deg"][-1])
            metrics["drift.psnr_last_gt_db"] = float(drift["psnr"][-1])
        (tmp / "table.md").write_text(variant_table(table))
        finite = {k: v for k, v in metrics.items() if np.isfinite(v)}  # JSON (and DVC) have no NaN
        (tmp / "metrics.json").write_text(json.dumps(finite, indent=2, sort_keys=True) + "\n")
        detail = {name: {k: v["report"] for k, v in pc.items()} for name, pc in results.items()}
        # the camera guidance each variant sampled with (a student's is distilled in: its teacher's)
        cam_g = {n: float(((p.metadata or {}).get("info") or {}).get("distilled_camera_guidance", 1.0))
                 if mode_for(p) == "few_step" else float(p.config.sampler.camera_guidance_scale)
                 for n, (p, _) in runs.items()}
        (tmp / "report.json").write_text(json.dumps({"mode": {n: mode_for(p) for n, (p, _) in runs.items()},
                                                     "camera_guidance": cam_g,
                                                     "main": main_kind, "variants": detail, "drift": drift},
                                                    indent=2, sort_keys=True, default=float))
    logger.log_params({"model": str(model_dir), "mode": mode_for(pipe), "num_clips": num_clips,
                       "max_frames": max_frames, "seed": seed, "preset": cfg.name,
                       "variants": ",".join(runs), "camera_guidance": json.dumps(cam_g)})
    log_dataset(logger, heldout, "heldout", context="evaluation")
    logger.log_metrics(finite)
    for sub in ("plots", "samples"):
        logger.log_artifact(out / sub, sub)
    for name in ("metrics.json", "table.md", "contact_sheet.png"):
        logger.log_artifact(out / name)
    return finite


def main(argv: list[str] | None = None) -> int:
    """CLI entry (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m components.evaluate", description=__doc__,
                                 formatter_class=HelpFormatter)
    ap.add_argument("--model", required=True, type=Path, help="model bundle folder")
    ap.add_argument("--heldout", "--shards", dest="heldout", required=True, type=Path,
                    help="held-out shards folder (the data DAG's heldout output; --shards is an old alias)")
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--num-clips", type=int, default=default("evaluate.num_clips"), help="held-out clips to score")
    ap.add_argument("--max-frames", type=int, default=None, help="raw frames per clip (default 1 + 2*stride)")
    ap.add_argument("--mode", choices=("streaming", "bidirectional", "few_step"), default=None,
                    help="sampler (default: few_step for students and quantized bundles, else streaming)")
    ap.add_argument("--seed", type=int, default=0, help="generation seed")
    ap.add_argument("--teacher", type=Path, default=None, help="also score this teacher bundle (teacher.* keys)")
    ap.add_argument("--student", type=Path, default=None, help="also score this student bundle (student.* keys)")
    ap.add_argument("--drift-factor", type=float, default=4.0,
                    help="drift rollout length in training clip lengths (0 = none)")
    ap.add_argument("--camera-guidance", type=float, default=None,
                    help="g_cam for the bundles that sample with it (teacher, streaming or bidirectional; 1 = off); "
                         "default: each bundle's sampler.camera_guidance_scale")
    add_tracking_args(ap)
    args = ap.parse_args(argv)
    if args.camera_guidance is not None and not (np.isfinite(args.camera_guidance) and args.camera_guidance >= 0):
        ap.error(f"--camera-guidance must be finite and >= 0 (1 = off), got {args.camera_guidance}")
    if args.num_clips < 1:
        ap.error(f"--num-clips must be >= 1, got {args.num_clips}")
    if args.drift_factor < 0:
        ap.error(f"--drift-factor must be >= 0, got {args.drift_factor}")
    for name in ("model", "teacher", "student"):
        d = getattr(args, name)
        if d is not None and not (d / "config.json").is_file():
            raise FileNotFoundError(f"--{name} {str(d)!r} is not a model bundle (no config.json)")
    with logger_from_args(args, "evaluate") as logger:
        metrics = evaluate(args.model, args.heldout, args.out, args.num_clips, args.max_frames, args.mode,
                           args.seed, logger, variants={"teacher": args.teacher, "student": args.student},
                           drift_factor=args.drift_factor, camera_guidance=args.camera_guidance)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    from model.cli import run

    sys.exit(run(main))
