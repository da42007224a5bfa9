"""CLI: ``python -m components.distill --teacher DIR --shards DIR --out DIR [--ode-steps K --dmd-steps K]``.

Writes the student bundle (metadata kind="student", info.sampler_mode="few_step" with the distilled
sigmas and the measured errors) to ``--out`` and prints the error report as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from components.common.defaults import default  # params.yaml is the one source of defaults
from model.cli import HelpFormatter


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m components.distill", description=__doc__.split("\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--teacher", required=True, help="teacher model bundle")
    ap.add_argument("--shards", required=True, help="annotated shards (conditions: first frame, camera, caption)")
    ap.add_argument("--out", required=True, help="output student bundle")
    ap.add_argument("--ode-steps", type=int, default=default("distill.ode_steps"),
                    help="ODE-pair regression steps of the 4-step student")
    ap.add_argument("--dmd-steps", type=int, default=default("distill.dmd_steps"), help="self-forcing DMD steps")
    ap.add_argument("--teacher-steps", type=int, default=default("distill.teacher_steps"),
                    help="Euler steps of the teacher trajectories")
    ap.add_argument("--latent-frames", type=int, default=None,
                    help="latent frames per clip (default: the most every clip supplies, at most 7)")
    ap.add_argument("--max-clips", type=int, default=16, help="use at most this many clips")
    ap.add_argument("--camera-guidance", type=float, default=None,
                    help="teacher camera guidance distilled into the student (ODE pairs, DMD real score); "
                         "default: the teacher bundle's sampler.camera_guidance_scale")
    ap.add_argument("--seed", type=int, default=0, help="seed for pairs, rollouts and noise")
    ap.add_argument("--cache-dir", default=None, help="latent cache (default <out>.cache)")
    from components.common.tracking import add_tracking_args, logger_from_args

    add_tracking_args(ap)
    a = ap.parse_args(argv)
    if a.ode_steps < 0 or a.dmd_steps < 0:
        ap.error("--ode-steps and --dmd-steps must be >= 0")

    from components.distill.student import DistillConfig, DMDConfig, conditions_from_dataset, run_distill
    from components.train.data import ClipLatentDataset, fit_latent_frames, iter_samples
    from model.pipeline import WorldModelPipeline

    pipe = WorldModelPipeline.from_pretrained(a.teacher)
    if pipe.metadata.get("kind") not in ("teacher", None):
        print(f"warning: --teacher bundle has kind={pipe.metadata.get('kind')!r}", file=sys.stderr)
    samples = []
    for s in iter_samples(a.shards):
        samples.append(s)
        if len(samples) >= a.max_clips:
            break
    cfg = pipe.config
    if a.latent_frames is None:
        a.latent_frames = fit_latent_frames(samples, cfg.vae.temporal_stride, cap=7)
    ds = ClipLatentDataset(samples, cfg, a.latent_frames, pipe.vae, pipe.text_encoder,
                           a.cache_dir or str(a.out).rstrip("/") + ".cache")
    conds = conditions_from_dataset(ds, cfg)
    cam_g = cfg.sampler.camera_guidance_scale if a.camera_guidance is None else a.camera_guidance
    dc = DistillConfig(latent_frames=a.latent_frames, teacher_steps=a.teacher_steps, ode_steps=a.ode_steps,
                       camera_guidance=cam_g, dmd=DMDConfig(steps=a.dmd_steps, real_camera_guidance=cam_g), seed=a.seed)
    with logger_from_args(a, "distill") as logger:
        logger.log_params({"distill.ode_steps": a.ode_steps, "distill.dmd_steps": a.dmd_steps,
                           "distill.teacher_steps": a.teacher_steps, "distill.clips": len(ds),
                           "distill.camera_guidance": cam_g})
        student, report = run_distill(pipe.network, conds, cfg, dc, log=lambda m, step: logger.log_metrics(m, step))
        logger.log_metrics({f"final.{k}": v for k, v in report["final"].items()})
    out = WorldModelPipeline(cfg, student, pipe.vae, pipe.text_encoder)
    out.save_pretrained(a.out, kind="student", info={
        "sampler_mode": "few_step", "distilled_sigmas": list(cfg.sampler.distilled_sigmas),
        "distilled_camera_guidance": cam_g,
        "teacher": str(Path(a.teacher).resolve()), "errors": report["final"], "errors_before": report["before"],
        "errors_after_ode": report["after_ode"]})
    print(json.dumps({k: report[k] for k in ("before", "after_ode", "final")}, indent=1))
    return 0


if __name__ == "__main__":
    from model.cli import run

    sys.exit(run(main))
