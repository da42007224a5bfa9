"""The training loop: flow matching + diffusion forcing over progressive stages, plain or DeepSpeed.

Two engines share one step function:

* ``PlainEngine``     single process, ``torch.optim.AdamW`` + ``clip_grad_norm_`` + ``LambdaLR``; checkpoints are
                      safetensors (model, EMA) + ``torch.save`` of optimizer/scheduler/RNG state (tensors and
                      numbers only, loadable with ``weights_only=True``), written to a temp dir and renamed.
* ``DeepSpeedEngine`` ``deepspeed.initialize`` with a client AdamW under ZeRO stage 1/2/3 (launched by torchrun);
                      checkpoints via ``engine.save_checkpoint`` with the sampler/RNG state as ``client_state``.

Parallelism and activation checkpointing are applied from outside the single-device network
(torchtitan's habit): ``apply_activation_checkpointing`` wraps each block's forward in
``torch.utils.checkpoint``. Resuming restores weights, optimizer, LR schedule, the noise generator and
the data sampler position, so the loss trajectory continues exactly where it stopped.
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from components.common.tracking import Logger, flatten
from components.train.config import StageConfig, TrainConfig
from components.train.data import Batch, ClipLatentDataset, EpochSampler
from components.train.losses import flow_matching_loss, noisy_input, sample_chunk_sigmas


class MetricsLogger(Protocol):
    """What the trainer needs from a tracking logger (``components.common.tracking`` implements it)."""

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...


def find_blocks(net: nn.Module) -> nn.ModuleList:
    """The network's repeated transformer blocks: the longest ``nn.ModuleList`` in the tree."""
    lists = [m for m in net.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise ValueError(f"{type(net).__name__} has no nn.ModuleList of blocks to checkpoint")
    return max(lists, key=len)


def apply_activation_checkpointing(net: nn.Module) -> int:
    """Recompute each block's activations in backward instead of storing them. Returns blocks wrapped.

    The forward is replaced on the instance (not the class), so parameter names and state dicts are
    unchanged and the model code knows nothing about it.
    """
    blocks = find_blocks(net)
    for blk in blocks:
        if getattr(blk, "_ac_wrapped", False):
            continue
        orig = blk.forward

        def fwd(*args: Any, _orig: Callable = orig, **kwargs: Any) -> Any:
            if not torch.is_grad_enabled():
                return _orig(*args, **kwargs)
            return torch.utils.checkpoint.checkpoint(_orig, *args, use_reentrant=False, **kwargs)

        blk.forward = fwd  # type: ignore[method-assign]
        blk._ac_wrapped = True
    return len(blocks)


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """LR at global step: the current stage's peak, linearly warmed up over the first ``warmup_steps`` and
    linearly cooled down over the last ``decay_steps`` of the run (step ``total - decay_steps`` still at the
    peak, the last step at ``peak / decay_steps``, never 0: every step trains).

    Used with a base LR of 1.0 so the scheduler's state is only its step counter.
    """

    def f(step: int) -> float:
        step = min(step, cfg.total_steps - 1)
        _, st = cfg.stage_at(step)
        w, d = cfg.optim.warmup_steps, cfg.optim.decay_steps
        warm = min(1.0, (step + 1) / w) if w > 0 else 1.0
        cool = min(1.0, (cfg.total_steps - step) / d) if d > 0 else 1.0
        return st.lr * min(warm, cool)

    return f


def _autocast(cfg: TrainConfig, device: torch.device):
    want_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    if want_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # CPU: resident set size high-water mark of this process (Linux reports KiB).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class StepResult:
    step: int
    loss: float
    grad_norm: float
    lr: float
    tokens: int


@dataclass
class TrainState:
    """Everything besides weights/optimizer that a resume must restore."""

    step: int = 0
    samplers: dict[int, dict[str, int]] = field(default_factory=dict)  # latent_frames -> sampler state


class Trainer:
    """Runs ``cfg.stages`` over datasets keyed by latent frame count.

    Args:
        cfg: the training config.
        network: the ``SanaWM`` module (trained in place).
        datasets: ``{latent_frames: ClipLatentDataset}`` for every stage's clip length.
        world_config: the ``WorldModelConfig`` (chunk lengths).
        ckpt_dir: checkpoint directory (resumes from its latest checkpoint if one exists).
        logger: metrics sink; only rank 0 should pass a real one.
        rank, world_size: data-parallel position (DeepSpeed path).
    """

    def __init__(self, cfg: TrainConfig, network: nn.Module, datasets: dict[int, ClipLatentDataset],
                 world_config: Any, ckpt_dir: str | Path, logger: MetricsLogger | None = None,
                 rank: int = 0, world_size: int = 1, device: str | torch.device = "cpu",
                 progress: bool | None = None, progress_every: int = 0,
                 on_sample: Callable[[int], None] | None = None, sample_every: int = 0):
        missing = sorted({s.latent_frames for s in cfg.stages} - set(datasets))
        if missing:
            raise ValueError(f"Trainer: no dataset for stage clip lengths (latent frames) {missing}")
        if cfg.deepspeed and cfg.zero_stage == 3 and cfg.optim.ema_decay is not None:
            raise ValueError("Trainer: EMA with ZeRO stage 3 is not supported (the EMA copy would hold the full "
                             "model on every rank); use zero_stage <= 2 or ema_decay=None")
        self.cfg, self.wcfg, self.datasets = cfg, world_config, datasets
        self.rank, self.world = rank, world_size
        self.device = torch.device(device)
        self.ckpt_dir = Path(ckpt_dir)
        self.logger = logger if (logger is not None and rank == 0) else Logger()
        # Progress (rank 0): a tqdm bar on a terminal; otherwise (KFP task, log file) a "[progress]" line
        # every progress_every steps, which the local runner's console forwards (pipelines.console).
        import sys

        self.progress = (sys.stderr.isatty() if progress is None else progress) and rank == 0
        self.progress_every = progress_every if rank == 0 else 0
        self.on_sample = on_sample if rank == 0 else None
        self.sample_every = sample_every
        self.net = network.to(self.device)
        if cfg.activation_checkpointing:
            apply_activation_checkpointing(self.net)
        self.state = TrainState()
        self.samplers = {F: EpochSampler(len(ds), cfg.seed + F, rank, world_size) for F, ds in datasets.items()}
        # Separate noise stream per rank, seeded from the run seed: reproducible and decorrelated across ranks.
        self.gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
        self.ema: torch.optim.swa_utils.AveragedModel | None = None
        if cfg.optim.ema_decay is not None:
            self.ema = torch.optim.swa_utils.AveragedModel(
                self.net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.optim.ema_decay))
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=1.0, betas=cfg.optim.betas,
                                           eps=cfg.optim.eps, weight_decay=cfg.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))
        self.engine: Any = None
        if cfg.deepspeed:
            self._init_deepspeed()

    # ------------------------------------------------------------------ DeepSpeed
    def deepspeed_config(self) -> dict[str, Any]:
        """ZeRO config for the client AdamW (the CPU build cannot JIT DeepSpeed's fused Adam)."""
        st = self.cfg.stages[0]
        bf16 = self.cfg.precision == "bf16" or (self.cfg.precision == "auto" and self.device.type == "cuda")
        return {
            "train_micro_batch_size_per_gpu": st.batch_size,
            "gradient_accumulation_steps": 1,
            "gradient_clipping": self.cfg.optim.grad_clip,
            "zero_optimization": {"stage": self.cfg.zero_stage, "overlap_comm": False,
                                  "contiguous_gradients": True},
            "zero_allow_untested_optimizer": True,
            "bf16": {"enabled": bf16},
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }

    def _init_deepspeed(self) -> None:
        import deepspeed

        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=self.net, optimizer=self.optimizer, lr_scheduler=self.scheduler,
            config=self.deepspeed_config())

    # ------------------------------------------------------------------ one step
    def _forward_loss(self, batch: Batch) -> tuple[torch.Tensor, int]:
        d = self.cfg.diffusion
        x0 = batch.x0.to(self.device)
        B, _, F_, h, w = x0.shape
        chunk_lens = self.wcfg.chunks.chunk_lengths(F_)
        sigma, _ = sample_chunk_sigmas(B, chunk_lens, d, self.gen)
        noise = torch.randn(x0.shape, generator=self.gen)
        # Text dropout = an all-False mask, exactly the unconditional branch model.sampling uses for CFG.
        drop = torch.rand(B, generator=self.gen) < d.text_dropout
        text, mask = batch.text, batch.text_mask & ~drop[:, None]
        xt = noisy_input(x0, noise.to(self.device), sigma.to(self.device))
        model = self.engine if self.engine is not None else self.net
        with _autocast(self.cfg, self.device):
            v = model(xt, sigma.to(self.device), text.to(self.device), mask.to(self.device),
                      batch.camera.to(self.device), mode=d.attention_mode, chunk_lens=chunk_lens)
        loss = flow_matching_loss(v, x0, noise.to(self.device), sigma.to(self.device))
        return loss, B * F_ * h * w

    def train_step(self, stage: StageConfig) -> StepResult:
        ds = self.datasets[stage.latent_frames]
        batch = ds.collate(self.samplers[stage.latent_frames].next_batch(stage.batch_size))
        lr = self.scheduler.get_last_lr()[0]
        if self.engine is not None:
            loss, tokens = self._forward_loss(batch)
            self.engine.backward(loss)
            self.engine.step()
            gn = self.engine.get_global_grad_norm()
            grad_norm = float(gn) if gn is not None else float("nan")
        else:
            self.optimizer.zero_grad(set_to_none=True)
            loss, tokens = self._forward_loss(batch)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.optim.grad_clip))
            self.optimizer.step()
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.net)
        self.state.step += 1
        return StepResult(self.state.step, float(loss.detach()), grad_norm, lr, tokens * self.world)

    # ------------------------------------------------------------------ loop
    def run(self, stop_after: int | None = None) -> list[StepResult]:
        """Train until ``cfg.total_steps`` (or ``stop_after`` steps of this call, to simulate a kill).

        Resumes from the latest checkpoint in ``ckpt_dir`` first. Returns this call's step results.
        """
        self.load_latest()
        self.logger.log_params({"train." + k: v for k, v in flatten(self.cfg.to_dict()).items()})
        results: list[StepResult] = []
        self.net.train()
        from tqdm.auto import tqdm

        bar = tqdm(total=self.cfg.total_steps, initial=self.state.step, desc="train", disable=not self.progress,
                   dynamic_ncols=True)
        ema_loss = None
        while self.state.step < self.cfg.total_steps:
            if stop_after is not None and len(results) >= stop_after:
                break
            _, stage = self.cfg.stage_at(self.state.step)
            t0 = time.perf_counter()
            r = self.train_step(stage)
            dt = time.perf_counter() - t0
            results.append(r)
            tok_s = r.tokens / max(dt, 1e-9)
            ema_loss = r.loss if ema_loss is None else 0.9 * ema_loss + 0.1 * r.loss
            bar.update(1)
            bar.set_postfix(loss=f"{ema_loss:.4f}", gnorm=f"{r.grad_norm:.2f}", tok_s=f"{tok_s:.0f}")
            if self.progress_every and (r.step % self.progress_every == 0 or r.step == self.cfg.total_steps):
                print(f"[progress] train step {r.step}/{self.cfg.total_steps} loss {ema_loss:.4f} "
                      f"grad_norm {r.grad_norm:.2f} lr {r.lr:.2e} {tok_s:.0f} tok/s {dt:.2f} s/step", flush=True)
            if r.step % self.cfg.log_every == 0:
                self.logger.log_metrics({"loss": r.loss, "loss_smooth": ema_loss, "grad_norm": r.grad_norm,
                                         "lr": r.lr, "tokens_per_s": tok_s, "step_seconds": dt,
                                         "peak_memory_mb": _peak_memory_mb(self.device)}, step=r.step)
            if self.on_sample is not None and self.sample_every and r.step % self.sample_every == 0:
                self.net.eval()
                self.on_sample(r.step)  # e.g. a short sample video logged to MLflow (long runs)
                self.net.train()
            every = self.cfg.checkpoint_every
            if every and r.step % every == 0 and r.step < self.cfg.total_steps:
                self.save_checkpoint()
        bar.close()
        if self.state.step >= self.cfg.total_steps:
            self.save_checkpoint()
        return results

    # ------------------------------------------------------------------ checkpoints
    def _client_state(self) -> dict[str, Any]:
        return {"step": self.state.step,
                "samplers": {str(F): s.state_dict() for F, s in self.samplers.items()},
                "gen": self.gen.get_state(), "torch_rng": torch.get_rng_state()}

    def _restore_client_state(self, cs: dict[str, Any]) -> None:
        self.state.step = int(cs["step"])
        for F, s in cs["samplers"].items():
            if int(F) in self.samplers:
                self.samplers[int(F)].load_state_dict(s)
        self.gen.set_state(cs["gen"])
        torch.set_rng_state(cs["torch_rng"])

    def save_checkpoint(self) -> Path:
        """Write ``ckpt_dir/step-XXXXXXXX`` atomically and point ``ckpt_dir/latest`` at it."""
        tag = f"step-{self.state.step:08d}"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        final = self.ckpt_dir / tag
        if self.engine is not None:
            # DeepSpeed writes its own sharded layout (one optimizer shard per rank) under ckpt_dir/tag.
            self.engine.save_checkpoint(str(self.ckpt_dir), tag=tag, client_state=self._client_state())
            if self.ema is not None and self.rank == 0:
                save_file(_cpu_sd(self.ema.module), str(final / "ema.safetensors"))
        else:
            tmp = Path(tempfile.mkdtemp(dir=self.ckpt_dir, prefix=f".{tag}."))
            save_file(_cpu_sd(self.net), str(tmp / "model.safetensors"))
            if self.ema is not None:
                save_file(_cpu_sd(self.ema.module), str(tmp / "ema.safetensors"))
            torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                        "client": self._client_state()}, tmp / "trainer_state.pt")
            (tmp / "train_config.json").write_text(self.cfg.to_json())
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        if self.rank == 0:
            _atomic_write_text(self.ckpt_dir / "latest_step", tag)
        return final

    def latest_checkpoint(self) -> Path | None:
        p = self.ckpt_dir / "latest_step"
        if not p.exists():
            return None
        tag = p.read_text().strip()
        return self.ckpt_dir / tag if (self.ckpt_dir / tag).is_dir() else None

    def load_latest(self) -> bool:
        """Restore the latest checkpoint if there is one. Returns whether something was loaded."""
        ck = self.latest_checkpoint()
        if ck is None:
            return False
        if self.engine is not None:
            _, cs = self.engine.load_checkpoint(str(self.ckpt_dir), tag=ck.name)
            self._restore_client_state(cs)
        else:
            self.net.load_state_dict(load_file(str(ck / "model.safetensors")))
            st = torch.load(ck / "trainer_state.pt", weights_only=True)
            self.optimizer.load_state_dict(st["optimizer"])
            self.scheduler.load_state_dict(st["scheduler"])
            self._restore_client_state(st["client"])
        if self.ema is not None and (ck / "ema.safetensors").exists():
            self.ema.module.load_state_dict(load_file(str(ck / "ema.safetensors")))
        return True

    def final_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights to ship (EMA if enabled), full tensors on CPU even under ZeRO-3."""
        src = self.ema.module if self.ema is not None else self.net
        if self.engine is not None and self.cfg.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(src.parameters()), modifier_rank=None):
                return _cpu_sd(src)
        return _cpu_sd(src)


def _cpu_sd(m: nn.Module) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share storage, and we must not alias live params.
    return {k: v.detach().cpu().clone().contiguous() for k, v in m.state_dict().items()}


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


