"""CLI: ``python -m components.train --shards DIR --vae DIR --preset small --steps K --out DIR [--deepspeed --zero-stage 2]``
and ``python -m components.train plan --preset sana_wm_2b6 --nodes 8 --gpus-per-node 8 [--zero-stage 3] [--mfu 0.35]``.

Writes a model bundle (``WorldModelPipeline.save_pretrained``, metadata kind="teacher") to ``--out``.
``--vae`` is the folder the pipeline's ``vae`` step fitted (``python -m components.vae``): its weights
encode the latent cache and are the VAE the bundle saves. Without it the preset's VAE is used as built
(random weights for the CPU presets: a warning says so).
Checkpoints go to ``--ckpt-dir`` (default ``<out>.ckpt``); rerunning the same command resumes from the
latest one. ``--deepspeed`` outside a launcher re-executes itself under torchrun (``--nproc``, 2 on CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from components.common.defaults import default  # params.yaml is the one source of defaults
from components.train.config import TrainConfig, default_train_config
from model.cli import HelpFormatter


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m components.train", description=__doc__.split("\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--shards", required=True, help="annotated shards folder (webdataset tars)")
    ap.add_argument("--out", required=True, help="output model bundle folder")
    ap.add_argument("--preset", default="small", help="model preset: tiny, small, sana_wm_2b6")
    ap.add_argument("--steps", type=int, default=default("train.steps"),
                    help="optimizer steps (single-stage presets; default from params.yaml)")
    ap.add_argument("--batch-size", type=int, default=None, help="clips per rank per step")
    ap.add_argument("--latent-frames", type=int, default=None, help="latent frames per clip (default: the most every clip supplies, at most 9)")
    ap.add_argument("--lr", type=float, default=default("train.lr"),
                    help="peak learning rate (0 = the preset's; default from params.yaml)")
    ap.add_argument("--lr-decay-steps", type=int, default=0,
                    help="cool the LR down linearly to 0 over the run's last N steps (0 = constant after warmup)")
    ap.add_argument("--seed", type=int, default=0, help="seed for init, data order and noise")
    ap.add_argument("--checkpoint-every", type=int, default=0, help="steps between checkpoints (0 = end only)")
    ap.add_argument("--ckpt-dir", default=None, help="checkpoint folder (default <out>.ckpt)")
    ap.add_argument("--cache-dir", default=None, help="latent cache folder (default <out>.cache)")
    ap.add_argument("--init", default=None,
                    help="fine-tune this model bundle (network and VAE loaded strictly, e.g. a `python -m model "
                         "import` of released weights or assets/base/<preset>) instead of random weights; '' = none")
    ap.add_argument("--max-clips", type=int, default=None, help="use at most this many clips")
    ap.add_argument("--ema", type=float, default=None, help="EMA decay (e.g. 0.999); off by default")
    ap.add_argument("--activation-checkpointing", choices=["auto", "on", "off"], default="auto",
                    help="recompute block activations in backward: auto = on with CUDA (memory is the limit), "
                         "off on CPU (it costs ~1/3 more time there and saves nothing needed)")
    ap.add_argument("--no-activation-checkpointing", dest="activation_checkpointing", action="store_const",
                    const="off", help="same as --activation-checkpointing off")
    ap.add_argument("--deepspeed", action="store_true", help="DeepSpeed ZeRO engine under torchrun")
    ap.add_argument("--zero-stage", type=int, default=2, choices=[0, 1, 2, 3],
                    help="DeepSpeed ZeRO stage (with --deepspeed)")
    ap.add_argument("--nproc", type=int, default=2, help="local processes torchrun starts for --deepspeed")
    ap.add_argument("--vae", default=None,
                    help="fitted VAE folder from `python -m components.vae` (default: the preset's VAE as built)")
    ap.add_argument("--train-config-json", default=None, help="a full TrainConfig as JSON (overrides the flags)")
    ap.add_argument("--progress-every", type=int, default=None,
                    help="print a '[progress]' line every N steps when stderr is not a terminal (default: steps/20)")
    ap.add_argument("--sample-every", type=int, default=None,
                    help="log a sample video to MLflow every N steps (default: steps/5 for runs of >= 1000 steps, else off)")
    from components.common.tracking import add_tracking_args

    add_tracking_args(ap)
    return ap


def _activation_checkpointing(choice: str) -> bool:
    """``--activation-checkpointing`` resolved: ``auto`` follows the device training will use."""
    if choice == "auto":
        import torch

        return torch.cuda.is_available()
    return choice == "on"


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the flags describe (or ``--train-config-json`` verbatim, as the TrainJob passes it)."""
    if a.train_config_json:
        return TrainConfig.from_dict(json.loads(a.train_config_json))
    from components.train.config import OptimConfig

    return default_train_config(
        a.preset, a.steps, batch_size=a.batch_size, latent_frames=a.latent_frames, lr=a.lr, seed=a.seed,
        checkpoint_every=a.checkpoint_every, deepspeed=a.deepspeed, zero_stage=a.zero_stage,
        activation_checkpointing=_activation_checkpointing(a.activation_checkpointing), optim=OptimConfig(ema_decay=a.ema, decay_steps=a.lr_decay_steps))


def run_training(tc: TrainConfig, shards: str, out: str, *, ckpt_dir: str | None = None,
                 cache_dir: str | None = None, init: str | None = None, max_clips: int | None = None,
                 logger: Any = None, stop_after: int | None = None, samples: list[dict] | None = None,
                 vae_dir: str | None = None, progress_every: int | None = None,
                 sample_every: int | None = None) -> dict:
    """Train and (rank 0) write the teacher bundle to ``out``. Returns a summary dict (losses, steps).

    ``vae_dir`` is a VAE folder from ``components.vae`` (see ``--vae``); it replaces the preset's (or the
    ``init`` bundle's) VAE before the latent cache is built, and is the one the bundle saves.

    ``samples`` (shard-reader dicts) replaces reading ``shards`` (tests, demos); ``stop_after`` ends this
    call after that many steps without writing the bundle (a simulated kill; rerun to resume).
    """
    import torch

    from components.train.data import ClipLatentDataset, iter_samples
    from components.train.trainer import Trainer
    from model.config import get_preset
    from model.pipeline import WorldModelPipeline

    # Read the shards before joining the process group: webdataset's default node splitter refuses to run
    # once torch.distributed is initialised, and every rank wants every clip (the sampler shards batches).
    if samples is None:
        samples = []
        for s in iter_samples(shards):
            samples.append(s)
            if max_clips and len(samples) >= max_clips:
                break
    rank, world = 0, 1
    if tc.deepspeed:
        import deepspeed

        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu")

    if init:
        pipe = WorldModelPipeline.from_pretrained(init)
        if pipe.config.name != tc.preset:
            raise ValueError(f"--init bundle is preset {pipe.config.name!r} but the run asks for {tc.preset!r}")
    else:
        pipe = WorldModelPipeline.from_config(get_preset(tc.preset), seed=tc.seed)
    cfg = pipe.config
    cache = Path(cache_dir) if cache_dir else Path(str(out).rstrip("/") + ".cache")
    ckpt = ckpt_dir or (str(out).rstrip("/") + ".ckpt")
    vae_fit = _use_vae(pipe, vae_dir) if vae_dir else None
    if vae_fit is None and not init and not cfg.vae.pretrained_path:
        print("warning: training on a random-weight VAE (no --vae); fit one with `python -m components.vae`",
              file=sys.stderr)

    def build() -> dict:
        return {F: ClipLatentDataset(samples, cfg, F, pipe.vae, pipe.text_encoder, cache)
                for F in sorted({s.latent_frames for s in tc.stages})}

    if world > 1:
        # rank 0 encodes and fills the cache; the others then read it instead of encoding again
        if rank == 0:
            datasets = build()
        torch.distributed.barrier()
        if rank != 0:
            datasets = build()
    else:
        datasets = build()

    net = pipe.network
    total = tc.total_steps
    if progress_every is None:
        progress_every = max(1, total // 20)
    if sample_every is None:
        sample_every = total // 5 if total >= 1000 else 0
    trainer = Trainer(tc, net, datasets, cfg, ckpt, logger=logger,
                      rank=rank, world_size=world, device=device, progress_every=progress_every,
                      on_sample=_sampler(pipe, samples[0], logger) if (sample_every and logger is not None) else None,
                      sample_every=sample_every)
    results = trainer.run(stop_after=stop_after)
    summary = {"losses": [r.loss for r in results], "steps": trainer.state.step,
               "grad_norms": [r.grad_norm for r in results],
               "clips": {str(F): len(d) for F, d in datasets.items()}, "vae_fit": vae_fit}
    done = trainer.state.step >= tc.total_steps
    if done:
        sd = trainer.final_state_dict()
        if rank == 0:
            net_cpu = pipe.network.to("cpu")
            net_cpu.load_state_dict(sd)
            last = summary["losses"][-1] if summary["losses"] else None
            pipe.save_pretrained(out, kind="teacher", info={
                "train_config": tc.to_dict(), "steps": trainer.state.step, "final_loss": last,
                "clips": summary["clips"], "vae_fit": vae_fit})
    if world > 1:
        torch.distributed.barrier()
    return summary


def _sampler(pipe: Any, sample: dict, logger: Any):
    """A callback for ``Trainer(on_sample=...)``: generate the first training clip's first 1 + 2*stride
    frames from its first image and camera path (few Euler steps) and log the mp4 to MLflow."""

    def sample_video(step: int) -> None:
        import tempfile

        import numpy as np

        from components.vae.fit import clips_from_samples
        from model.video_io import write_video

        cfg = pipe.config
        frames = clips_from_samples([sample], cfg.video_height, cfg.video_width)[0]
        n = min(len(frames), cfg.vae.num_raw_frames(3))
        K = np.asarray(sample["intrinsics"], np.float64)
        K = np.broadcast_to(K, (len(sample["c2w"]), 3, 3)) if K.ndim == 2 else K
        sy, sx = cfg.video_height / np.asarray(sample["frames"]).shape[1], cfg.video_width / np.asarray(sample["frames"]).shape[2]
        K = K[:n] * np.array([[sx], [sy], [1.0]])
        video = pipe.generate(frames[0], np.asarray(sample["c2w"], np.float64)[:n], K, seed=0,
                              mode="bidirectional", num_steps=8)
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / f"sample-step{step:07d}.mp4"
            write_video(np.concatenate([frames[:n], video], axis=2), path, float(sample["fps"]))  # GT | generated
            logger.log_artifact(path, "samples")

    return sample_video


def _use_vae(pipe: Any, vae_dir: str) -> dict:
    """Load the fitted VAE in ``vae_dir`` into ``pipe``; returns its fit summary for the bundle info.

    Loaded strictly (config + weights + latent statistics), so the latents this run trains on are the
    ones the bundle's VAE produces at serving time. The cache key of the latent cache hashes these weights.
    """
    from model.encoders.vae import load_vae

    d = Path(vae_dir)
    pipe.vae = load_vae(d, pipe.config.vae, device=pipe.device).eval()
    fit = json.loads((d / "fit.json").read_text()) if (d / "fit.json").is_file() else {}
    return {k: fit.get(k) for k in ("steps", "psnr_before", "psnr_after", "key", "reused")} | {"dir": str(d)}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["plan"]:
        from components.train.planner import main as plan_main

        return plan_main(argv[1:])
    a = build_parser().parse_args(argv)
    a.init = a.init or None
    if a.init is not None and not (Path(a.init) / "config.json").is_file():
        print(f"error: --init {a.init!r} is not a model bundle (no config.json)", file=sys.stderr)
        return 2
    if a.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {a.steps}")
    if a.vae is not None and not (Path(a.vae) / "config.json").is_file():
        raise FileNotFoundError(f"--vae {a.vae!r} is not a VAE folder (no config.json); write one with "
                                "`python -m components.vae`")
    if a.latent_frames is None and not a.train_config_json:
        # Default clip length: the most latent frames every clip supplies (several chunks when the data
        # allows it, so chunk-causal training sees cross-chunk context), capped to keep CPU runs short.
        from components.train.data import fit_latent_frames, iter_samples
        from model.config import get_preset

        a.latent_frames = fit_latent_frames(list(iter_samples(a.shards)),
                                            get_preset(a.preset).vae.temporal_stride, cap=9)
    tc = config_from_args(a)
    from components.train.launch import launch, under_launcher

    if tc.deepspeed and not under_launcher():
        # the workers do not need --nproc, and torchrun's parser would take it for its own --nproc-per-node
        worker = [x for i, x in enumerate(argv) if x != "--nproc" and (i == 0 or argv[i - 1] != "--nproc")]
        worker = [x for x in worker if not x.startswith("--nproc=")]
        return launch(worker, a.nproc)
    from components.common.tracking import logger_from_args

    with logger_from_args(a, "train") as logger:
        summary = run_training(tc, a.shards, a.out, ckpt_dir=a.ckpt_dir, cache_dir=a.cache_dir, init=a.init,
                               max_clips=a.max_clips, logger=logger,
                               vae_dir=a.vae, progress_every=a.progress_every, sample_every=a.sample_every)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"out": a.out, "steps": summary["steps"],
                          "final_loss": summary["losses"][-1] if summary["losses"] else None}))
    return 0


if __name__ == "__main__":
    from model.cli import run

    sys.exit(run(main))
