"""Distillation of the teacher into a 4-step chunk-causal student: ODE-pair init, then self-forcing DMD.

``run_distill`` is the whole step; ``few_step_errors`` is the measurement the step reports: on held-out
conditions and fixed noise, the student's 4-step output vs the teacher's 50-step output, next to the
teacher's own 4-step output vs its 50-step output (relative MSE over generated latent frames).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from components.distill.dmd import DMDConfig, dmd_train
from components.distill.ode_init import ClipConditions, OdePairs, collect_ode_pairs, ode_regression_step
from model.sampling import Conditioning, sample_chunk_causal, sample_few_step

__all__ = [
    "ClipConditions",
    "DMDConfig",
    "DistillConfig",
    "conditions_from_dataset",
    "few_step_errors",
    "run_distill",
]


@dataclass(frozen=True)
class DistillConfig:
    """ODE init + DMD settings. ``teacher_steps`` is the N of the teacher's Euler trajectories (ODE pairs)."""

    latent_frames: int = 7
    teacher_steps: int = 50
    ode_steps: int = 200
    ode_lr: float = 3e-4
    ode_batch: int = 4
    guidance_scale: float = 1.0  # teacher CFG for the ODE pairs (1 = unguided; CPU presets)
    camera_guidance: float = 1.0  # teacher camera guidance (model.sampling) for the ODE pairs and references
    ode_inputs: str = "interpolant"  # or "trajectory" (see ode_init.collect_ode_pairs)
    noises_per_condition: int = 4
    dmd: DMDConfig = field(default_factory=DMDConfig)
    heldout_fraction: float = 0.25
    eval_reference_steps: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if self.teacher_steps < 4 or self.ode_steps < 0 or self.ode_batch < 1:
            raise ValueError(f"DistillConfig: need teacher_steps >= 4, ode_steps >= 0, ode_batch >= 1; got "
                             f"{self.teacher_steps}, {self.ode_steps}, {self.ode_batch}")
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"DistillConfig.heldout_fraction must be in (0, 1), got {self.heldout_fraction}")


def conditions_from_dataset(ds: Any, cfg: Any) -> ClipConditions:
    """All clips of a ``ClipLatentDataset`` as conditions (first latent frame, caption features, camera)."""
    batch = ds.collate(list(range(len(ds))))
    F_ = batch.x0.shape[2]
    return ClipConditions(batch.x0[:, :, :1].clone(), Conditioning(batch.text, batch.text_mask, batch.camera),
                          F_, cfg.chunks.chunk_lengths(F_))


def split(conds: ClipConditions, heldout_fraction: float, seed: int) -> tuple[ClipConditions, ClipConditions]:
    """(train, held-out) split of the conditions; at least one of each."""
    n = len(conds)
    if n < 2:
        raise ValueError(f"distillation needs at least 2 clips (train + held-out), got {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    k = min(n - 1, max(1, round(n * heldout_fraction)))
    return conds.select(perm[k:]), conds.select(perm[:k])


def _rel_mse(a: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative MSE over generated frames (frame 0 is the shared condition)."""
    return float((a[:, :, 1:] - ref[:, :, 1:]).pow(2).mean() / ref[:, :, 1:].pow(2).mean().clamp_min(1e-12))


@torch.no_grad()
def few_step_errors(student: nn.Module, teacher: nn.Module, conds: ClipConditions, sigmas: tuple[float, ...],
                    shift: float, guidance_scale: float, reference_steps: int = 50, seed: int = 1234,
                    cache: dict[str, torch.Tensor] | None = None, camera_guidance: float = 1.0) -> dict[str, float]:
    """Relative MSE to the teacher's ``reference_steps`` output, same noise for every sampler.

    Returns student_4step_vs_teacher_50, teacher_4step_vs_teacher_50 (the teacher on its own 4-step
    shifted Euler schedule), and the student's stochastic (re-noising) 4-step error for reference.
    """
    def run(fn, **kw):
        return fn(cond_latent=conds.cond_latent, num_frames=conds.num_frames, cond=conds.cond,
                  chunk_lens=conds.chunk_lens, generator=torch.Generator().manual_seed(seed), **kw)

    cache = {} if cache is None else cache  # the teacher's outputs do not change between evaluations
    if "ref" not in cache:
        cache["ref"] = run(lambda **kw: sample_chunk_causal(teacher, **kw), num_steps=reference_steps,
                           guidance_scale=guidance_scale, shift=shift, camera_guidance=camera_guidance)
        cache["t4"] = run(lambda **kw: sample_chunk_causal(teacher, **kw), num_steps=len(sigmas),
                          guidance_scale=guidance_scale, shift=shift, camera_guidance=camera_guidance)
    ref, t4 = cache["ref"], cache["t4"]
    s4 = run(lambda **kw: sample_few_step(student, **kw), sigmas=sigmas, stochastic=False)
    s4s = run(lambda **kw: sample_few_step(student, **kw), sigmas=sigmas, stochastic=True)
    n = len(sigmas)
    return {f"student_{n}step_vs_teacher_{reference_steps}": _rel_mse(s4, ref),
            f"teacher_{n}step_vs_teacher_{reference_steps}": _rel_mse(t4, ref),
            f"student_{n}step_stochastic_vs_teacher_{reference_steps}": _rel_mse(s4s, ref)}


def run_distill(teacher: nn.Module, conds: ClipConditions, world_cfg: Any, cfg: DistillConfig,
                log: Callable[[dict[str, float], int], None] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Distil ``teacher`` (frozen, not modified) into a new student. Returns (student, report)."""
    torch.manual_seed(cfg.seed)
    sigmas = tuple(world_cfg.sampler.distilled_sigmas)
    shift = world_cfg.sampler.flow_shift
    teacher = teacher.eval().requires_grad_(False)
    train_c, held_c = split(conds, cfg.heldout_fraction, cfg.seed)
    report: dict[str, Any] = {"clips_train": len(train_c), "clips_heldout": len(held_c), "sigmas": list(sigmas)}
    tcache: dict[str, torch.Tensor] = {}
    errors = partial(few_step_errors, teacher=teacher, conds=held_c, sigmas=sigmas, shift=shift,
                     guidance_scale=cfg.guidance_scale, reference_steps=cfg.eval_reference_steps, cache=tcache,
                     camera_guidance=cfg.camera_guidance)
    report["before"] = errors(teacher)

    pairs: OdePairs = collect_ode_pairs(teacher, train_c, sigmas, cfg.teacher_steps, shift, cfg.guidance_scale,
                                        cfg.seed, cfg.ode_inputs, cfg.noises_per_condition, cfg.camera_guidance)
    train_c = pairs.conds  # repeated per noise draw
    student = copy.deepcopy(teacher).requires_grad_(True).train()
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.ode_lr, weight_decay=0.0)
    rng = random.Random(cfg.seed)
    losses = []
    n = len(train_c)
    for step in range(cfg.ode_steps):
        idx = rng.sample(range(n), min(cfg.ode_batch, n))
        sub = OdePairs(pairs.x0[idx], [[s[idx] for s in per] for per in pairs.states], pairs.sigmas,
                       train_c.select(idx))
        loss = ode_regression_step(student, sub, rng)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if log is not None and (step + 1) % 10 == 0:
            log({"ode_loss": sum(losses[-10:]) / 10}, step + 1)
    report["ode_loss_first"] = losses[0] if losses else None
    report["ode_loss_last"] = losses[-1] if losses else None
    student.eval()
    report["after_ode"] = errors(student)

    if cfg.dmd.steps > 0:
        fake = copy.deepcopy(teacher).requires_grad_(True).train()
        student.train()
        hist = dmd_train(student, teacher, fake, train_c, sigmas, cfg.dmd, cfg.ode_batch, cfg.seed + 1,
                         log=(lambda m: log(m, cfg.ode_steps + m["dmd_step"])) if log is not None else None)
        report["dmd"] = hist
        student.eval()
    report["final"] = errors(student)
    return student.requires_grad_(False), report
