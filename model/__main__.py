"""``python -m model``: inspect presets and generate videos from a model bundle.

  python -m model info --preset sana_wm_2b6        parameters per component, built on the meta device
  python -m model generate --bundle DIR --image first.png --trajectory traj.npz -o out.mp4
  python -m model import --diffusers DIR --out BUNDLE          a diffusers SanaWMPipeline directory
  python -m model import --sana-streaming DIR --out BUNDLE     the NVlabs streaming release
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from model.cli import HelpFormatter
from model.config import PRESETS, get_preset


def _info(args: argparse.Namespace) -> int:
    from model.network import SanaWM

    cfg = get_preset(args.preset)
    with torch.device("meta"):  # no memory, no init cost: the paper-size model is 2.6 B parameters
        net = SanaWM(cfg.network, cfg.chunks)
    breakdown = net.parameter_breakdown()
    n = cfg.network
    h, w = cfg.latent_hw
    if args.json:
        print(json.dumps({"preset": cfg.name, "parameters": breakdown, "config": cfg.to_dict()}, indent=2))
        return 0
    print(f"preset {cfg.name}: {n.num_blocks} blocks, hidden {n.hidden_dim} = {n.num_heads} heads x {n.head_dim}, "
          f"softmax blocks {list(n.softmax_blocks)}, mlp ratio {n.mlp_ratio}, latent channels {n.latent_channels}, "
          f"text {n.text_dim}-d, Plücker {n.plucker_channels} ch")
    print(f"video {cfg.video_height}x{cfg.video_width} @ {cfg.fps:g} fps -> latent grid {h}x{w} = {h * w} tokens/frame "
          f"(VAE stride {cfg.vae.temporal_stride}x{cfg.vae.spatial_stride}x{cfg.vae.spatial_stride})")
    total = breakdown.pop("total")
    width = max(len(k) for k in breakdown)
    for name, count in sorted(breakdown.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<{width}}  {count:>15,}  {100 * count / total:5.1f} %")
    print(f"  {'total':<{width}}  {total:>15,}  ({total / 1e9:.3f} B)")
    per_block = [sum(p.numel() for p in b.parameters()) for b in net.blocks]
    print(f"  per block: GDN {per_block[0]:,} / softmax "
          f"{per_block[n.softmax_blocks[0]] if n.softmax_blocks else 0:,}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from model.pipeline import WorldModelPipeline
    from model.trajectory import load_trajectory
    from model.video_io import write_video

    pipe = WorldModelPipeline.from_pretrained(args.bundle)
    image = np.asarray(Image.open(args.image).convert("RGB"))
    traj = load_trajectory(args.trajectory)
    video = pipe.generate(image, traj.c2w, traj.intrinsics, prompt=args.prompt, seed=args.seed, mode=args.mode,
                          progress=True, refine=args.refine, camera_guidance_scale=args.camera_guidance)
    write_video(video, args.output, fps=traj.fps)
    print(f"wrote {args.output}: {video.shape[0]} frames {video.shape[1]}x{video.shape[2]}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from model.importer import import_diffusers_pipeline, import_sana_streaming

    hw = tuple(int(v) for v in args.size.lower().split("x"))
    if args.diffusers:
        out = import_diffusers_pipeline(args.diffusers, args.out, hw=hw, fps=args.fps)
    else:
        out = import_sana_streaming(args.sana_streaming, args.out, preset=args.preset,
                                    text_encoder=args.text_encoder, hw=hw, fps=args.fps)
    print(f"wrote bundle {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model", description=__doc__,
                                formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pi = sub.add_parser("info", help="print parameters per component for a preset (built on the meta device)")
    pi.add_argument("--preset", default="sana_wm_2b6", choices=sorted(PRESETS))
    pi.add_argument("--json", action="store_true", help="machine-readable output")
    pg = sub.add_parser("generate", help="generate a video from a bundle, a first image and a trajectory")
    pg.add_argument("--bundle", required=True, help="model bundle directory (WorldModelPipeline.save_pretrained)")
    pg.add_argument("--image", required=True, help="first frame (PNG/JPEG) at the model's resolution")
    pg.add_argument("--trajectory", required=True, help=".npz with c2w (N,4,4), intrinsics (N,3,3), fps")
    pg.add_argument("--prompt", default="")
    pg.add_argument("--seed", type=int, default=0)
    pg.add_argument("--mode", default="streaming", choices=["streaming", "bidirectional", "few_step"])
    pg.add_argument("--refine", action="store_true", help="run the bundle's stage-2 refiner before decoding")
    pg.add_argument("--camera-guidance", type=float, default=None,
                    help="camera guidance g_cam of the teacher samplers (1 = off; default: the bundle's "
                         "sampler.camera_guidance_scale; few_step ignores it, the student has it distilled in)")
    pg.add_argument("-o", "--output", required=True, help="output .mp4")
    pm = sub.add_parser("import", help="write our bundle from a released SANA-WM checkpoint on local disk",
                        formatter_class=HelpFormatter)
    src = pm.add_mutually_exclusive_group(required=True)
    src.add_argument("--diffusers", help="diffusers SanaWMPipeline directory (transformer/, vae/, text_encoder/, "
                                         "tokenizer/, scheduler/)")
    src.add_argument("--sana-streaming", help="streaming release directory (sana_dit/model.pt, ltx2_causal_vae/, "
                                              "refiner_diffusers/, text_encoder/)")
    pm.add_argument("--out", required=True, help="bundle directory to write (replaced atomically)")
    pm.add_argument("--size", default="704x1280", help="HxW the bundle generates at")
    pm.add_argument("--fps", type=float, default=16.0, help="frame rate of generated videos")
    pm.add_argument("--preset", default="sana_wm_2b6", choices=sorted(PRESETS),
                    help="network config for a streaming checkpoint without sana_dit/config.json")
    pm.add_argument("--text-encoder", help="stage-1 text encoder directory (streaming release without text_encoder/)")
    args = p.parse_args(argv)
    return {"info": _info, "generate": _generate, "import": _import}[args.cmd](args)


if __name__ == "__main__":
    from model.cli import run

    sys.exit(run(main))
