"""Camera following of base bundles on more held-out clips than ``make run`` can afford.

``make run`` scores 8 held-out clips (6 of them yawing), so one clip moves yaw agreement by 17 points and the
camera figures of two bases differ within noise. This bench runs the evaluation's own scorer
(``components.evaluate.__main__.evaluate_variant``: generate for the commanded and for the left-right mirrored
path, recover the poses from the video with our annotator, compare with the command) on every clip of a
held-out shard folder, for each bundle, with the same seeds, and reports the means plus a paired comparison
per clip, so a base change is judged on the clips both bundles saw.

    .venv/bin/python bench/camera_following.py --heldout build/h_cam --bundle assets/base/small \
        --bundle NEW [--num-clips 24] [--max-frames 69] [--camera-guidance 2] [--reuse OLD.json]

A held-out folder: ``python -m components.ingest --synthetic 24 --seed 7 --frames 69 --split heldout
--holdout-kinds turn --out build/h_cam_raw`` then ``python -m components.annotate batch --raw build/h_cam_raw
--out build/h_cam``. Writes ``bench/results/camera_following.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def score_bundle(bundle: Path, clips, seed: int, camera_guidance: float | None, mode: str | None) -> dict:
    """Flat camera/quality means of ``bundle`` over ``clips`` plus per-clip figures (key -> dict)."""
    from dataclasses import replace

    from components.evaluate.__main__ import evaluate_variant
    from model.pipeline import sampler_mode_of
    from model.quant.bundle import load_bundle

    pipe = load_bundle(bundle)
    m = mode or sampler_mode_of(pipe.metadata)
    if camera_guidance is not None and m != "few_step":
        pipe.config = replace(pipe.config, sampler=replace(pipe.config.sampler, camera_guidance_scale=camera_guidance))
    t0 = time.perf_counter()
    metrics, per_clip = evaluate_variant(pipe, clips, m, seed)
    per = {}
    for key, r in per_clip.items():
        rep = r["report"]
        per[key] = {k: rep[k] for k in ("rot_err_deg_mean", "rot_err_deg_mean_mirrored", "psnr_mean",
                                        "frame0_psnr_db", "commanded_yaw_deg", "recovered_yaw_deg",
                                        "registered_fraction") if isinstance(rep.get(k), (int, float))}
        if "yaw_direction_agrees" in rep:
            per[key]["yaw_direction_agrees"] = bool(rep["yaw_direction_agrees"])
    yawing = [k for k, v in per.items() if "yaw_direction_agrees" in v]
    ratio = (metrics.get("rot_err_deg_mean_yawing", np.nan) / metrics.get("rot_err_deg_mean_mirrored_yawing", np.nan))
    return {"bundle": str(bundle), "mode": m, "camera_guidance": float(pipe.config.sampler.camera_guidance_scale),
            "seconds": time.perf_counter() - t0, "clips": len(per), "yawing_clips": len(yawing),
            "metrics": {k: float(v) for k, v in metrics.items()}, "rot_err_ratio_yawing": float(ratio),
            "per_clip": per}


def paired(a: dict, b: dict) -> dict:
    """Per-clip comparison of bundle ``b`` against ``a`` on the clips both scored."""
    keys = sorted(set(a["per_clip"]) & set(b["per_clip"]))
    d_rot = [b["per_clip"][k]["rot_err_deg_mean"] - a["per_clip"][k]["rot_err_deg_mean"] for k in keys]
    d_psnr = [b["per_clip"][k]["psnr_mean"] - a["per_clip"][k]["psnr_mean"] for k in keys]
    yaw = [k for k in keys if "yaw_direction_agrees" in a["per_clip"][k] and "yaw_direction_agrees" in b["per_clip"][k]]
    gained = sum(b["per_clip"][k]["yaw_direction_agrees"] and not a["per_clip"][k]["yaw_direction_agrees"] for k in yaw)
    lost = sum(a["per_clip"][k]["yaw_direction_agrees"] and not b["per_clip"][k]["yaw_direction_agrees"] for k in yaw)
    return {"clips": len(keys), "rot_err_lower_on": int(sum(x < 0 for x in d_rot)),
            "rot_err_delta_mean": float(np.mean(d_rot)), "psnr_higher_on": int(sum(x > 0 for x in d_psnr)),
            "psnr_delta_mean": float(np.mean(d_psnr)), "yaw_gained": int(gained), "yaw_lost": int(lost)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--heldout", type=Path, required=True, help="annotated held-out shards")
    ap.add_argument("--bundle", type=Path, action="append", required=True, help="model bundle (repeat to compare)")
    ap.add_argument("--num-clips", type=int, default=24, help="held-out clips (the first N by key)")
    ap.add_argument("--max-frames", type=int, default=69, help="raw frames per clip (make run's held-out length)")
    ap.add_argument("--camera-guidance", type=float, default=2.0, help="g_cam (make run's; None-like 0 = bundle's)")
    ap.add_argument("--mode", choices=("streaming", "bidirectional", "few_step"), default=None,
                    help="sampler (default: the bundle's)")
    ap.add_argument("--seed", type=int, default=0, help="generation seed (the same for every bundle)")
    ap.add_argument("--reuse", type=Path, default=None,
                    help="an earlier result file of this bench: its bundles are not scored again (same held-out "
                         "clips, seed and guidance required) and the first of them is the paired reference")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "camera_following.json")
    a = ap.parse_args(argv)
    for b in a.bundle:
        if not (b / "config.json").is_file():
            print(f"error: --bundle {str(b)!r} is not a model bundle (no config.json)", file=sys.stderr)
            return 2
    if a.num_clips < 1:
        print(f"error: --num-clips must be >= 1, got {a.num_clips}", file=sys.stderr)
        return 2
    if a.reuse is not None and not a.reuse.is_file():
        print(f"error: --reuse {str(a.reuse)!r} is not a result file of this bench", file=sys.stderr)
        return 2
    from components.evaluate.__main__ import fit_to_model, load_held_out
    from model import atomic
    from model.quant.bundle import load_bundle

    cfg = load_bundle(a.bundle[0]).config
    clips = [fit_to_model(c, (cfg.video_height, cfg.video_width), cfg.vae.temporal_stride, a.max_frames)
             for c in load_held_out(a.heldout, a.num_clips)]
    g = a.camera_guidance if a.camera_guidance > 0 else None
    rows = []
    if a.reuse is not None:
        old = json.loads(a.reuse.read_text())
        same = (old["heldout"] == str(a.heldout) and old["num_clips"] == len(clips) and old["seed"] == a.seed
                and old["frames"] == len(clips[0].frames) and old["camera_guidance"] == g)
        if not same:
            print(f"error: --reuse {str(a.reuse)!r} was measured on other clips, seed or guidance "
                  f"({old['heldout']}, {old['num_clips']} clips of {old['frames']}, seed {old['seed']}, "
                  f"g {old['camera_guidance']})", file=sys.stderr)
            return 2
        rows = [r for r in old["bundles"] if r["bundle"] not in {str(b) for b in a.bundle}] + rows
    for b in a.bundle:
        r = score_bundle(b, clips, a.seed, g, a.mode)
        rows.append(r)
        m = r["metrics"]
        print(f"{b}: {r['clips']} clips ({r['yawing_clips']} yawing), {r['seconds']:.0f} s  PSNR {m['psnr_mean']:.2f} dB  "
              f"frame0 {m['frame0_psnr_db']:.1f}  RotErr yawing {m.get('rot_err_deg_mean_yawing', np.nan):.1f} vs "
              f"mirrored {m.get('rot_err_deg_mean_mirrored_yawing', np.nan):.1f} (ratio {r['rot_err_ratio_yawing']:.2f})  "
              f"yaw agree {m['yaw_direction_agreement']:.2f}")
    comparisons = [{"a": rows[0]["bundle"], "b": r["bundle"], **paired(rows[0], r)} for r in rows[1:]]
    for c in comparisons:
        print(f"{c['b']} vs {c['a']}: RotErr lower on {c['rot_err_lower_on']}/{c['clips']} "
              f"(mean {c['rot_err_delta_mean']:+.2f} deg), PSNR higher on {c['psnr_higher_on']}/{c['clips']} "
              f"({c['psnr_delta_mean']:+.2f} dB), yaw sign gained {c['yaw_gained']} lost {c['yaw_lost']}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(a.out, {"heldout": str(a.heldout), "num_clips": len(clips), "frames": len(clips[0].frames),
                              "seed": a.seed, "camera_guidance": g, "bundles": rows, "comparisons": comparisons})
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
