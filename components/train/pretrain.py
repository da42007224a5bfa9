"""``python -m components.train.pretrain --preset small --out assets/base/small [--clips 128 --steps 9250]``

Regenerates the base checkpoint that ``make run`` can fine-tune (``params.yaml`` ``train.init``), with this
project's own steps only: ``ingest`` (synthetic training split, its own seed so the scenes differ from
``make run``'s and from the held-out stream) -> ``annotate batch`` -> ``vae`` (the PCA start) -> ``train``.
The bundle is written with half-precision weights (``load_into`` casts them back to the module's dtype on
load) plus ``pretrain.json``: the exact commands, seeds, versions and the file sizes. The same path a user
takes with released weights imported by ``python -m model import``: ``train --init DIR``.

``--init BUNDLE`` continues an earlier base instead of starting from random weights: the bundle's VAE passes
through unchanged (the network learned its latents), the network and its EMA start from the bundle's weights
with a fresh optimiser, and ``pretrain.json`` keeps the earlier record under ``continued_from`` with the total
step count. The CPU base is compute-bound (about 2 s a step here), so this is how it grows across sessions.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

SIZE_BUDGET_MB = 30.0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m components.train.pretrain", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--preset", default="small", help="model preset (model/config.py; `python -m model info --preset NAME` describes one)")
    ap.add_argument("--out", required=True, type=Path, help="bundle folder to (re)write, e.g. assets/base/small")
    ap.add_argument("--work", type=Path, default=Path("build/pretrain"), help="scratch folder (data, cache)")
    ap.add_argument("--clips", type=int, default=128, help="synthetic training clips (the from-scratch base used 128; each continuation's clips, seed and "
                         "steps are in the bundle's pretrain.json)")
    ap.add_argument("--frames", type=int, default=33, help="frames per clip (1 + 4k)")
    ap.add_argument("--height", type=int, default=64, help="frame height of the rendered clips")
    ap.add_argument("--width", type=int, default=96, help="frame width of the rendered clips")
    ap.add_argument("--steps", type=int, default=9250, help="train steps (the from-scratch base: 9250; with --init, steps added)")
    ap.add_argument("--seed", type=int, default=1000, help="data seed (make run uses 0)")
    ap.add_argument("--holdout-kinds", default="turn", help="classes left out, as make run's held-out split does")
    ap.add_argument("--ema", type=float, default=0.999, help="EMA decay of the shipped weights")
    ap.add_argument("--lr", type=float, default=0.0,
                    help="peak learning rate (0 = the preset's from-scratch rate; params.yaml's train.lr is the "
                         "fine-tuning rate and does not apply here)")
    ap.add_argument("--checkpoint-every", type=int, default=250,
                    help="steps between resumable checkpoints (rerun the same command to resume)")
    ap.add_argument("--lr-decay-steps", type=int, default=0,
                    help="cool the LR down linearly to 0 over the last N steps of this run (0 = constant LR)")
    ap.add_argument("--init", type=Path, default=None,
                    help="continue this base bundle (e.g. assets/base/small) for --steps more steps instead of "
                         "training from random weights; --out may be the same folder (it is replaced at the end)")
    return ap


def _run(step: str, argv: list[str], log: list[dict]) -> None:
    import importlib

    t0 = time.perf_counter()
    rc = importlib.import_module(f"components.{step}.__main__").main([str(a) for a in argv])
    log.append({"cmd": f"python -m components.{step} " + " ".join(map(str, argv)), "seconds": time.perf_counter() - t0})
    if rc not in (0, None):
        raise RuntimeError(f"pretrain: `{log[-1]['cmd']}` failed with exit code {rc}")


def _half_bundle(src: Path, dst: Path) -> dict[str, float]:
    """Copy bundle ``src`` to ``dst`` with every floating safetensors tensor in float16; returns MB per file."""
    from safetensors.torch import load_file, save_file

    from model import atomic

    sizes = {}
    with atomic.atomic_dir(dst) as tmp:
        for f in src.rglob("*"):
            rel = f.relative_to(src)
            if f.is_dir():
                continue
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            if f.suffix == ".safetensors":
                sd = {k: (v.half() if v.is_floating_point() else v) for k, v in load_file(str(f)).items()}
                save_file(sd, str(tmp / rel))
            else:
                shutil.copy2(f, tmp / rel)
        for f in tmp.rglob("*.safetensors"):
            sizes[str(f.relative_to(tmp))] = f.stat().st_size / 2**20
    return sizes


def regenerate_command(a: argparse.Namespace, earlier: dict | None) -> str:
    """The ``make pretrain`` line that repeats this run (every option that differs from the Makefile's
    defaults), then ``, after: `` the earlier run's line when this one continued a bundle."""
    line = (f"make pretrain PRESET={a.preset} PRETRAIN_CLIPS={a.clips} PRETRAIN_SEED={a.seed} "
            f"PRETRAIN_STEPS={a.steps}"
            + (f" PRETRAIN_INIT={a.init}" if a.init is not None else "")
            + (f" PRETRAIN_DECAY={a.lr_decay_steps}" if a.lr_decay_steps else ""))
    return line + (f", after: {earlier['regenerate']}" if earlier and earlier.get("regenerate") else "")


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.clips < 1 or a.steps < 1 or (a.frames - 1) % 4:
        print(f"error: need --clips >= 1, --steps >= 1 and --frames = 1 + 4k; got {a.clips}, {a.steps}, {a.frames}",
              file=sys.stderr)
        return 2
    earlier = None
    if a.init is not None:
        if not (a.init / "config.json").is_file():
            print(f"error: --init {str(a.init)!r} is not a model bundle (no config.json)", file=sys.stderr)
            return 2
        rec = a.init / "pretrain.json"
        earlier = json.loads(rec.read_text()) if rec.is_file() else {"steps": None, "bundle": str(a.init)}
    w = a.work
    log: list[dict] = []
    _run("ingest", ["--synthetic", a.clips, "--seed", a.seed, "--height", a.height, "--width", a.width,
                    "--frames", a.frames, "--split", "train", "--holdout-kinds", *a.holdout_kinds.split(),
                    "--no-progress", "--out", w / "raw"], log)
    _run("annotate", ["batch", "--raw", w / "raw", "--out", w / "shards"], log)
    _run("vae", ["--shards", w / "shards", "--preset", a.preset, "--no-progress", "--out", w / "vae",
                 *(["--init-bundle", a.init] if a.init is not None else [])], log)
    _run("train", ["--shards", w / "shards", "--vae", w / "vae", "--preset", a.preset, "--steps", a.steps,
                   "--seed", a.seed, "--ema", a.ema, "--checkpoint-every", a.checkpoint_every, "--lr", a.lr,
                   *(["--init", a.init] if a.init is not None else []),
                   *(["--lr-decay-steps", a.lr_decay_steps] if a.lr_decay_steps else []),
                   # CPU, 8 M parameters: recomputing activations costs ~1/3 more time and saves nothing needed
                   "--no-activation-checkpointing", "--out", w / "teacher"], log)
    sizes = _half_bundle(w / "teacher", a.out)
    import torch

    from components.common.paths import PACKAGE_VERSION
    from model import atomic

    total = sum(sizes.values())
    total_steps = a.steps + (earlier.get("steps") or 0 if earlier else 0)
    record = {"preset": a.preset, "seed": a.seed, "clips": a.clips, "frames": a.frames, "steps": total_steps,
              "steps_this_run": a.steps, "lr_decay_steps": a.lr_decay_steps, "ema": a.ema,
              "commands": log, "regenerate": regenerate_command(a, earlier),
              "dtype": "float16",
              "sizes_mb": sizes, "total_mb": total, "package_version": PACKAGE_VERSION, "torch": torch.__version__}
    if earlier is not None:
        record["continued_from"] = earlier
    atomic.write_json(a.out / "pretrain.json", record)
    meta = json.loads((a.out / "metadata.json").read_text())
    meta.setdefault("info", {})["total_steps"] = total_steps  # info.steps is this run's (the train step's record)
    atomic.write_json(a.out / "metadata.json", meta)
    print(f"pretrain: wrote {a.out} ({total:.1f} MB of weights)")
    if total > SIZE_BUDGET_MB:
        print(f"warning: {total:.1f} MB exceeds the {SIZE_BUDGET_MB:.0f} MB budget for a bundled checkpoint",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    from model.cli import run

    sys.exit(run(main))
