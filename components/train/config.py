"""Typed training configuration: progressive stages, diffusion forcing, optimiser, checkpoints.

The paper trains in 4 progressive stages from short clips to 60 s (DESIGN.md §5). A stage fixes the
clip length (latent frames F; raw frames N = 1 + t_stride*(F-1)), its step budget, batch size and
learning rate; the trainer walks the list in order and the global step counter runs across stages, so
a resume lands in the right stage.

Validation in ``__post_init__`` names the field and the value, as ``model.config`` does.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

TimestepStrategy = Literal["same_t", "incremental", "last_chunk_anchor", "clean_teacher_forcing"]
TIMESTEP_STRATEGIES: tuple[str, ...] = ("same_t", "incremental", "last_chunk_anchor", "clean_teacher_forcing")


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass(frozen=True)
class StageConfig:
    """One progressive stage: clips of ``latent_frames`` latent frames for ``steps`` optimizer steps.

    ``batch_size`` is per data-parallel rank (the DeepSpeed micro batch). ``lr`` is the peak LR of the stage.
    """

    latent_frames: int = 4
    steps: int = 10
    batch_size: int = 2
    lr: float = 1e-3

    def __post_init__(self) -> None:
        _require(self.latent_frames >= 1, f"StageConfig.latent_frames must be >= 1, got {self.latent_frames}")
        _require(self.steps >= 1, f"StageConfig.steps must be >= 1, got {self.steps}")
        _require(self.batch_size >= 1, f"StageConfig.batch_size must be >= 1, got {self.batch_size}")
        _require(self.lr > 0, f"StageConfig.lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class DiffusionConfig:
    """Flow matching with logit-normal timesteps + shift, and diffusion-forcing chunk strategies.

    ``strategy_weights`` gives the sampling probability of each per-chunk timestep strategy; sigma is
    per latent frame (B, F) and constant inside a chunk.
    """

    flow_shift: float = 3.0
    logit_mean: float = 0.0
    logit_std: float = 1.0
    strategy_weights: dict[str, float] = field(
        default_factory=lambda: {"same_t": 0.4, "incremental": 0.2, "last_chunk_anchor": 0.2,
                                 "clean_teacher_forcing": 0.2})
    image_condition_prob: float = 0.9  # latent frame 0 kept clean (sigma = 0) with this probability
    text_dropout: float = 0.1  # captions replaced by the empty prompt (classifier-free guidance)
    attention_mode: Literal["chunk_causal", "bidirectional"] = "chunk_causal"

    def __post_init__(self) -> None:
        _require(self.flow_shift > 0, f"DiffusionConfig.flow_shift must be > 0, got {self.flow_shift}")
        _require(self.logit_std > 0, f"DiffusionConfig.logit_std must be > 0, got {self.logit_std}")
        bad = sorted(set(self.strategy_weights) - set(TIMESTEP_STRATEGIES))
        _require(not bad, f"DiffusionConfig.strategy_weights: unknown strategies {bad}; "
                          f"choose from {list(TIMESTEP_STRATEGIES)}")
        _require(all(w >= 0 for w in self.strategy_weights.values()) and sum(self.strategy_weights.values()) > 0,
                 f"DiffusionConfig.strategy_weights must be >= 0 with a positive sum, got {self.strategy_weights}")
        for name in ("image_condition_prob", "text_dropout"):
            v = getattr(self, name)
            _require(0.0 <= v <= 1.0, f"DiffusionConfig.{name} must lie in [0, 1], got {v}")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW + linear warmup, constant LR (per stage peak), optional linear cooldown, grad clipping, optional EMA.

    ``decay_steps``: the LR falls linearly from the peak to 0 over the run's last ``decay_steps`` steps (the
    "warmup-stable-decay" shape: a constant-LR run can be cooled down at its end, and so can a base bundle
    continued with ``train --init``, where a longer constant phase had stopped lowering the held-out loss).
    """

    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    eps: float = 1e-8
    grad_clip: float = 1.0
    warmup_steps: int = 0
    decay_steps: int = 0
    ema_decay: float | None = None  # e.g. 0.999; None disables the EMA copy

    def __post_init__(self) -> None:
        _require(self.grad_clip > 0, f"OptimConfig.grad_clip must be > 0, got {self.grad_clip}")
        _require(self.warmup_steps >= 0, f"OptimConfig.warmup_steps must be >= 0, got {self.warmup_steps}")
        _require(self.decay_steps >= 0, f"OptimConfig.decay_steps must be >= 0, got {self.decay_steps}")
        _require(self.ema_decay is None or 0.0 < self.ema_decay < 1.0,
                 f"OptimConfig.ema_decay must be None or in (0, 1), got {self.ema_decay}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything the trainer needs besides the data: model preset, stages, diffusion, optimiser, runtime.

    ``precision="auto"`` means bf16 autocast on CUDA and fp32 on CPU (CPU bf16 autocast is slow and
    changes numerics of the resume test). ``zero_stage`` is only used on the DeepSpeed path.
    """

    preset: str = "tiny"
    stages: tuple[StageConfig, ...] = (StageConfig(),)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    activation_checkpointing: bool = True
    checkpoint_every: int = 0  # steps; 0 = only at the end
    log_every: int = 1
    deepspeed: bool = False
    zero_stage: int = 2
    num_workers: int = 0

    def __post_init__(self) -> None:
        _require(len(self.stages) >= 1, "TrainConfig.stages must hold at least one stage")
        _require(self.zero_stage in (0, 1, 2, 3), f"TrainConfig.zero_stage must be 0..3, got {self.zero_stage}")
        _require(self.checkpoint_every >= 0, f"TrainConfig.checkpoint_every must be >= 0, got {self.checkpoint_every}")
        _require(self.log_every >= 1, f"TrainConfig.log_every must be >= 1, got {self.log_every}")

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    def stage_at(self, step: int) -> tuple[int, StageConfig]:
        """(stage index, stage) that global optimizer step ``step`` (0-based) belongs to."""
        _require(0 <= step < self.total_steps, f"step {step} outside [0, {self.total_steps})")
        start = 0
        for i, st in enumerate(self.stages):
            if step < start + st.steps:
                return i, st
            start += st.steps
        raise AssertionError("unreachable")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        _require(not unknown, f"TrainConfig: unknown keys {unknown}")
        kw = dict(d)
        if "stages" in kw:
            kw["stages"] = tuple(s if isinstance(s, StageConfig) else StageConfig(**s) for s in kw["stages"])
        if isinstance(kw.get("diffusion"), dict):
            kw["diffusion"] = DiffusionConfig(**kw["diffusion"])
        if isinstance(kw.get("optim"), dict):
            o = dict(kw["optim"])
            if "betas" in o:
                o["betas"] = tuple(o["betas"])
            kw["optim"] = OptimConfig(**o)
        return cls(**kw)


def default_train_config(preset: str, steps: int, *, batch_size: int | None = None,
                         latent_frames: int | None = None, lr: float | None = None, **overrides: Any) -> TrainConfig:
    """A single-stage config sized for the local presets (``tiny``/``small``) or the paper's 4 stages.

    For ``sana_wm_2b6`` it returns the paper-shaped progressive schedule (short clips first, 60 s last);
    the step counts there are the planner's assumptions, not the paper's (which it does not publish).
    """
    if preset == "sana_wm_2b6":
        stages = paper_stages()
    else:
        stages = (StageConfig(latent_frames=latent_frames or 4, steps=steps, batch_size=batch_size or 2,
                              lr=lr or 1e-3),)
    return TrainConfig(preset=preset, stages=stages, **overrides)


def paper_stages() -> tuple[StageConfig, ...]:
    """Four progressive stages for the 2.6B model, 720p: 5 s -> 15 s -> 30 s -> 60 s (121 latent frames).

    Assumptions (the paper gives only "4 stages, ~213K clips, 15 days on 64 H100"): global batch 64 clips
    (one per GPU), roughly two epochs over the clips in early stages and one in the last, LR 1e-4.
    """
    return (
        StageConfig(latent_frames=11, steps=6000, batch_size=1, lr=1e-4),    # 81 raw frames, ~5 s
        StageConfig(latent_frames=31, steps=4000, batch_size=1, lr=1e-4),    # 241 raw frames, ~15 s
        StageConfig(latent_frames=61, steps=3300, batch_size=1, lr=1e-4),    # 481 raw frames, ~30 s
        StageConfig(latent_frames=121, steps=3300, batch_size=1, lr=5e-5),   # 961 raw frames, 60 s
    )
