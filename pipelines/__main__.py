"""``python -m pipelines compile [--out build/pipelines]`` | ``python -m pipelines run --local [--preset P]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """CLI entry; returns the process exit code."""
    ap = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compile", help="compile the cluster-form DAGs to versioned KFP IR YAML")
    c.add_argument("--out", type=Path, default=Path("build/pipelines"))
    c.add_argument("--nodes", type=int, default=8, help="TrainJob nodes")
    c.add_argument("--gpus-per-node", type=int, default=8, help="TrainJob GPUs (and torchrun ranks) per node")
    r = sub.add_parser("run", help="run the full DAG")
    r.add_argument("--local", action="store_true", help="KFP local runner (the only runner here)")
    r.add_argument("--root", type=Path, default=Path.cwd(), help="project root holding params.yaml/data/")
    r.add_argument("--preset", choices=("tiny", "small", "sana_wm_2b6"), default=None,
                   help="model preset (default: params.yaml)")
    r.add_argument("--steps", type=int, default=None, help="train steps (default: params.yaml)")
    r.add_argument("--num-clips", type=int, default=None, help="synthetic clips (default: params.yaml)")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--keep-serving", action="store_true", help="leave Triton running after the smoke test")
    r.add_argument("--no-dvc", action="store_true", help="skip DVC init/commit")
    args = ap.parse_args(argv)

    if args.cmd == "compile":
        from pipelines.cluster import default_settings
        from pipelines.compile import compile_all

        settings = default_settings(num_nodes=args.nodes, gpus_per_node=args.gpus_per_node)
        for path in compile_all(args.out, settings):
            print(path)
        return 0

    if not args.local:
        print("only `run --local` runs here; for a cluster, upload the YAML from `python -m pipelines compile` "
              "(docs/SPINE.md)", file=sys.stderr)
        return 2
    from components.common.paths import DataLayout
    from pipelines.local import PipelineRunError, config_from_params, format_summary, run_local

    cfg = config_from_params(args.root.resolve(), preset=args.preset, steps=args.steps,
                             num_clips=args.num_clips, seed=args.seed, keep_serving=args.keep_serving or None,
                             dvc=False if args.no_dvc else None)
    try:
        result = run_local(cfg)
    except PipelineRunError as e:
        print(format_summary(e.result, DataLayout(cfg.root)))
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    print(format_summary(result, DataLayout(cfg.root)))
    return 0


if __name__ == "__main__":
    from model.cli import run

    sys.exit(run(main))
