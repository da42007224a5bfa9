"""CLI: ``python -m components.annotate VIDEO --out poses.npz [--depth d.npz] [--intrinsics K.npz] [--scale-free]``
or ``python -m components.annotate batch --raw data/raw --out data/shards [--workers 2] [--shard-size 16]
[--ids a,b|@file]``; the fan-out helpers ``plan --raw DIR --groups K --out plan.json`` and
``merge --parts DIR1 DIR2 ... --out DIR [--shard-size 16]`` (see components.annotate.fanout).

Single clip: writes an npz with ``c2w`` (N,4,4), ``intrinsics`` (N,3,3), ``fps``, ``confidence``, plus
``registered`` (N,) and ``metric``. ``--depth``/``--intrinsics`` accept any npz holding ``depth``/``intrinsics``
(a raw clip's ground-truth npz works for both). Without depth, a monocular ``--depth-model DIR`` or
``--scale-free`` must be given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from components.annotate.batch import BatchConfig, run_batch
from components.annotate.fanout import make_plan, merge_shards, parse_ids, write_plan
from components.annotate.poses import PoseEstimatorConfig, estimate_poses

__all__ = ["main"]


def _load_key(path: str, key: str) -> np.ndarray:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{key} file {path!r} does not exist")
    with np.load(p) as z:
        if key not in z.files:
            raise ValueError(f"{path!r} has no {key!r} array (found {sorted(z.files)})")
        return z[key]


def _single(args: argparse.Namespace) -> int:
    from model.video_io import read_video

    frames, fps = read_video(args.video)
    depth = _load_key(args.depth, "depth") if args.depth else None
    K = _load_key(args.intrinsics, "intrinsics") if args.intrinsics else None
    depth_model = None
    if args.depth_model:
        from components.annotate.depth import load_hf_depth_model

        depth_model = load_hf_depth_model(args.depth_model)
    if depth is None and depth_model is None and not args.scale_free:
        raise SystemExit("no metric scale source: pass --depth, --depth-model or --scale-free")
    res = estimate_poses(frames, fps, intrinsics=K, depth=depth, depth_model=depth_model,
                         scale_free=args.scale_free and depth is None and depth_model is None,
                         config=PoseEstimatorConfig(focal_split_workers=args.workers))
    from model.atomic import atomic_path

    out = Path(args.out)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, c2w=res.c2w, intrinsics=res.intrinsics, fps=np.float64(res.fps),
                 confidence=np.float64(res.confidence), registered=res.registered, metric=np.bool_(res.metric))
    print(json.dumps({"out": str(out), "frames": len(frames), "confidence": round(res.confidence, 4),
                      "metric": res.metric, "scale_source": res.scale_source, "registered": float(res.registered.mean()),
                      "intrinsics_source": res.intrinsics_source}))
    return 0


def _batch(args: argparse.Namespace) -> int:
    cfg = BatchConfig(workers=args.workers, shard_size=args.shard_size, cache_dir=args.cache_dir,
                      depth_model_path=args.depth_model, use_filters=not args.no_filters,
                      progress=not args.quiet, estimator=PoseEstimatorConfig(focal_split_workers=args.workers))
    summary = run_batch(args.raw, args.out, cfg, ids=parse_ids(args.ids) if args.ids is not None else None)
    print(json.dumps({k: summary[k] for k in ("kept", "dropped", "failed", "computed", "cached", "shards")}))
    return 0


def _plan(args: argparse.Namespace) -> int:
    plan = make_plan(args.raw, args.groups)
    write_plan(plan, args.out)
    print(json.dumps({"out": str(args.out), "clips": plan["num_clips"], "groups": [len(g) for g in plan["groups"]],
                      "loads": plan["loads"], "cost_unit": plan["cost_unit"]}))
    return 0


def _merge(args: argparse.Namespace) -> int:
    summary = merge_shards(args.parts, args.out, args.shard_size)
    print(json.dumps(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point shared by the CLI, DVC stages and the KFP component. Returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "plan":
        p = argparse.ArgumentParser(prog="python -m components.annotate plan", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                    description="Split the ok clips of a raw manifest into K cost-balanced groups.")
        p.add_argument("--raw", required=True, help="raw dir with manifest.jsonl")
        p.add_argument("--groups", type=int, required=True, help="number of groups K (fewer if fewer clips)")
        p.add_argument("--out", required=True, help="plan .json to write")
        return _plan(p.parse_args(argv[1:]))
    if argv and argv[0] == "merge":
        p = argparse.ArgumentParser(prog="python -m components.annotate merge", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                    description="Merge several shard folders into one (shards renumbered).")
        p.add_argument("--parts", required=True, nargs="+", help="shard folders written by 'batch'")
        p.add_argument("--out", required=True, help="merged shard folder (replaced atomically)")
        p.add_argument("--shard-size", type=int, default=16, help="clips per shard file")
        return _merge(p.parse_args(argv[1:]))
    if argv and argv[0] == "batch":
        p = argparse.ArgumentParser(prog="python -m components.annotate batch", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                    description="Annotate a raw clip directory into webdataset shards.")
        p.add_argument("--raw", required=True, help="raw dir with manifest.jsonl, <id>.mp4, optional <id>.npz")
        p.add_argument("--out", required=True, help="shard output dir")
        p.add_argument("--workers", type=int, default=2,
                       help="processes: clips annotated side by side (a lone clip's focal check uses them instead)")
        p.add_argument("--shard-size", type=int, default=16, help="clips per shard file")
        p.add_argument("--cache-dir", default=None, help="result cache folder (None: <out>/.cache)")
        p.add_argument("--depth-model", default=None, help="local metric depth checkpoint for clips without depth")
        p.add_argument("--no-filters", action="store_true", help="skip components.ingest.filters")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.add_argument("--ids", default=None, help="only these clips: 'a,b,c' or @file (JSON list or one id a line)")
        return _batch(p.parse_args(argv[1:]))
    p = argparse.ArgumentParser(prog="python -m components.annotate", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                description="Estimate per-frame camera poses of one video "
                                            "(use 'batch --help' for directories, 'plan'/'merge --help' for the fan-out).")
    p.add_argument("video")
    p.add_argument("--out", required=True, help="output poses .npz")
    p.add_argument("--depth", help="npz with depth (N,H,W) float32 metres")
    p.add_argument("--intrinsics", help="npz with intrinsics (3,3) or (N,3,3)")
    p.add_argument("--depth-model", help="local transformers metric-depth checkpoint dir")
    p.add_argument("--scale-free", action="store_true", help="no depth: poses up to scale (metric=False)")
    p.add_argument("--workers", type=int, default=2,
                   help="processes, this one included, that map the self-calibration check's track groups (the "
                        "others start beside the shot's own map; the result is the same for any count)")
    return _single(p.parse_args(argv))


if __name__ == "__main__":
    from model.cli import run

    raise SystemExit(run(main))
