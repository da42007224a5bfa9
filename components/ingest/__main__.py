"""``python -m components.ingest``: build a raw clip directory (clips + manifest.jsonl).

Two modes:
  synthetic  ``--synthetic N --seed S --out DIR`` renders N ground-truth clips (mp4 + npz poses/depth);
  real       ``--source DIR_OR_MANIFEST_OR_URL [...] --out DIR`` shot-splits, resamples and cuts videos.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from components.ingest.filters import FilterConfig
from components.ingest.sources import IngestConfig, ingest_videos
from components.ingest.synthetic import DATASET_FPS, KINDS, SPLITS, generate_dataset
from model.cli import HelpFormatter


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m components.ingest",
        description="Create a raw clip directory: <id>.mp4 (+ <id>.npz ground truth for synthetic clips) "
                    "and manifest.jsonl.",
        epilog="examples:\n"
               "  python -m components.ingest --synthetic 8 --seed 0 --out data/raw\n"
               "  python -m components.ingest --source videos/ --out data/raw --fps 16 --clip-frames 961 "
               "--overlap 640 --filter",
        formatter_class=HelpFormatter,
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--synthetic", type=int, metavar="N", help="render N synthetic clips with known poses")
    mode.add_argument("--source", nargs="+", metavar="SRC",
                      help="video files, folders, manifest .jsonl/.txt files or URLs (s3://, gs://, http://)")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    syn = p.add_argument_group("synthetic mode")
    syn.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    syn.add_argument("--height", type=int, default=64, help="frame height, even (default 64)")
    syn.add_argument("--width", type=int, default=96, help="frame width, even (default 96)")
    syn.add_argument("--frames", type=int, default=33, help="frames per clip (default 33)")
    syn.add_argument("--kinds", nargs="+", choices=KINDS, default=None,
                     help="trajectory kinds to cycle through (default: all)")
    syn.add_argument("--split", choices=SPLITS, default="train",
                     help="train, or heldout: scenes from a separate seed stream, ids heldout<seed>-<i> (default train)")
    syn.add_argument("--holdout-kinds", nargs="+", choices=KINDS, default=[], metavar="KIND",
                     help="trajectory kinds only the held-out split has: train leaves them out, heldout starts with them")
    real = p.add_argument_group("source mode")
    real.add_argument("--clip-frames", type=int, default=961, help="frames per clip (paper: 961 = 60 s at 16 fps)")
    real.add_argument("--overlap", type=int, default=640, help="frames shared by consecutive clips (paper: 640)")
    real.add_argument("--min-clip-frames", type=int, default=None,
                      help="also keep shorter shot tails with at least this many new frames")
    real.add_argument("--no-shot-split", action="store_true", help="do not split at detected cuts")
    real.add_argument("--shot-threshold", type=float, default=27.0, help="ContentDetector threshold (default 27)")
    real.add_argument("--resize", type=int, nargs=2, metavar=("H", "W"), default=None, help="resize clips to HxW")
    real.add_argument("--filter", action="store_true", help="score clips and drop static/blurred/tiny ones")
    p.add_argument("--fps", type=float, default=None, help="output frame rate (default: 16, synthetic and source)")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the process exit code (0 ok, 1 when no clip could be produced)."""
    args = build_parser().parse_args(argv)
    progress = not args.no_progress
    if args.synthetic is not None:
        rows = generate_dataset(args.out, args.synthetic, args.seed, height=args.height, width=args.width,
                                num_frames=args.frames, fps=args.fps or DATASET_FPS, kinds=args.kinds, progress=progress,
                                split=args.split, holdout_kinds=args.holdout_kinds)
        kinds = Counter(f"{r['kind']}/{r['speed']}" for r in rows)
        print(f"wrote {len(rows)} synthetic {args.split} clips ({args.frames} frames, {args.height}x{args.width}) "
              f"to {args.out}")
        print("  " + ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items())))
        return 0
    cfg = IngestConfig(fps=args.fps or 16.0, clip_frames=args.clip_frames, overlap=args.overlap,
                       min_clip_frames=args.min_clip_frames, split_shots=not args.no_shot_split,
                       shot_threshold=args.shot_threshold, resize=tuple(args.resize) if args.resize else None,
                       filters=FilterConfig() if args.filter else None, progress=progress)
    rows = ingest_videos(args.source, args.out, cfg)
    status = Counter(r["status"] for r in rows)
    inputs = len({r["source"] for r in rows})
    print(f"ingested {inputs} inputs into {args.out}: {status.get('ok', 0)} clips kept, "
          f"{status.get('dropped', 0)} dropped by filters, {status.get('failed', 0)} inputs failed, "
          f"{status.get('empty', 0)} inputs yielded no clip")
    for r in rows:
        if r["status"] in ("failed", "empty"):
            print(f"  {'failed' if r['status'] == 'failed' else 'no clip from'} {r['source']}: {r['reason']}")
    return 0 if status.get("ok", 0) > 0 else 1


if __name__ == "__main__":
    from model.cli import run

    sys.exit(run(main))
