"""Held-out denoising loss of base bundles, and how much of it the camera explains.

Growing the CPU base (``make pretrain PRETRAIN_INIT=...``) is only worth its hours if the network gets better
on scenes it never saw, and better *because of the camera*. For each bundle this computes the training
objective (``components.train.losses.flow_matching_loss``, chunk-causal, as the trainer's ``_forward_loss``)
on held-out clips with the same noise and noise levels for every bundle, three times: with the true camera
path, with its left-right mirror (``components.evaluate.report.mirror_trajectory``) and with the camera held
still at frame 0. ``mirrored - true`` and ``still - true`` are the loss the camera accounts for; a network
that ignores the camera has both at 0.

    .venv/bin/python bench/base_loss.py --heldout data/heldout --bundle assets/base/small --bundle NEW \
        [--draws 8 --latent-frames 9]

Writes ``bench/results/base_loss.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch


def bundle_losses(bundle: Path, heldout: Path, latent_frames: int, draws: int, seed: int) -> dict:
    """Mean held-out loss of ``bundle`` per camera variant (true / mirrored / still), over clips x draws."""
    from components.evaluate.report import mirror_trajectory
    from components.train.config import DiffusionConfig
    from components.train.data import ClipLatentDataset, iter_samples
    from components.train.losses import flow_matching_loss, noisy_input, sample_chunk_sigmas
    from model.pipeline import WorldModelPipeline

    pipe = WorldModelPipeline.from_pretrained(bundle)
    net, cfg = pipe.network.eval(), pipe.config
    ds = ClipLatentDataset(iter_samples(heldout), cfg, latent_frames, pipe.vae, pipe.text_encoder)
    d = DiffusionConfig()
    variants = {
        "true": lambda c: c,
        "mirrored": lambda c: torch.from_numpy(mirror_trajectory(c.numpy())),
        "still": lambda c: c[:1].expand_as(c).clone(),
    }
    out: dict[str, list[float]] = {k: [] for k in variants}
    base_items = list(ds.items)
    for name, fn in variants.items():
        ds.items = [replace(it, c2w=fn(it.c2w)) for it in base_items]
        gen = torch.Generator().manual_seed(seed)  # the same noise for every variant and bundle
        with torch.no_grad():
            for i in range(len(ds)):
                b = ds.collate([i] * draws)
                B, _, F_, _, _ = b.x0.shape
                chunk_lens = cfg.chunks.chunk_lengths(F_)
                sigma, _ = sample_chunk_sigmas(B, chunk_lens, d, gen)
                noise = torch.randn(b.x0.shape, generator=gen)
                v = net(noisy_input(b.x0, noise, sigma), sigma, b.text, b.text_mask, b.camera,
                        mode=d.attention_mode, chunk_lens=chunk_lens)
                out[name].append(float(flow_matching_loss(v, b.x0, noise, sigma)))
    ds.items = base_items
    loss = {k: float(np.mean(v)) for k, v in out.items()}
    steps = None
    rec = bundle / "pretrain.json"
    if rec.is_file():
        steps = json.loads(rec.read_text()).get("steps")
    return {"bundle": str(bundle), "steps": steps, "clips": len(ds), "loss": loss,
            "camera_gain_mirrored": loss["mirrored"] - loss["true"], "camera_gain_still": loss["still"] - loss["true"],
            "per_clip_true": out["true"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--heldout", type=Path, required=True, help="annotated held-out shards (e.g. data/heldout)")
    ap.add_argument("--bundle", type=Path, action="append", required=True, help="model bundle (repeat to compare)")
    ap.add_argument("--latent-frames", type=int, default=9, help="latent frames per clip (training used 9)")
    ap.add_argument("--draws", type=int, default=8, help="noise draws per clip")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "base_loss.json")
    a = ap.parse_args(argv)
    for b in a.bundle:
        if not (b / "config.json").is_file():
            print(f"error: --bundle {str(b)!r} is not a model bundle (no config.json)", file=sys.stderr)
            return 2
    torch.manual_seed(a.seed)
    rows = []
    for b in a.bundle:
        r = bundle_losses(b, a.heldout, a.latent_frames, a.draws, a.seed)
        rows.append(r)
        lo = r["loss"]
        print(f"{b}  steps {r['steps']}  clips {r['clips']}  loss true {lo['true']:.4f}  mirrored {lo['mirrored']:.4f} "
              f"(+{r['camera_gain_mirrored']:.4f})  still {lo['still']:.4f} (+{r['camera_gain_still']:.4f})")
    from model import atomic

    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(a.out, {"heldout": str(a.heldout), "latent_frames": a.latent_frames, "draws": a.draws,
                              "seed": a.seed, "bundles": rows})
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
