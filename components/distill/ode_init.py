"""ODE-pair initialisation of the 4-step chunk-causal student (CausVid / Self-Forcing recipe, DESIGN.md §5).

The frozen teacher samples each condition with its N-step chunk-causal Euler sampler
(``model.sampling.sample_chunk_causal``, streaming). A recording proxy around the teacher keeps, for
every chunk and every Euler step, the chunk input x_i, its sigma_i and the velocity v_i. Euler's path is
linear in sigma between grid points, x(s) = x_i + (s - sigma_i) v_i, so the teacher's trajectory state at
each distilled sigma s_k (1.0, 0.75, 0.5, 0.25) is read off exactly, without adding grid points.

The student (initialised from the teacher) then regresses the teacher's final clean chunk x0 from
(x(s_k), s_k), seeing the teacher's own clean earlier chunks as context, which is what it sees at
inference in chunk-causal streaming: x0_pred = x - s * v_student.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from model.sampling import Conditioning, FlowMatchScheduler, sample_chunk_causal


@dataclass
class ClipConditions:
    """A batch of conditions. cond_latent (B,C,1,h,w) clean image latent; cond: text, mask, camera (F frames)."""

    cond_latent: torch.Tensor
    cond: Conditioning
    num_frames: int
    chunk_lens: list[int]

    def select(self, idx: list[int]) -> ClipConditions:
        """Sub-batch ``idx``."""
        cam = self.cond.camera
        cam = None if cam is None else cam.select_batch(idx)
        return ClipConditions(self.cond_latent[idx], Conditioning(self.cond.text[idx], self.cond.text_mask[idx], cam),
                              self.num_frames, self.chunk_lens)

    def __len__(self) -> int:
        return self.cond_latent.shape[0]


class _Recorder:
    """Proxy with the streaming API of ``SanaWM`` that records every denoising call of a rollout."""

    def __init__(self, net: nn.Module):
        self.net = net
        self.calls: list[dict[str, Any]] = []

    def init_stream_state(self) -> Any:
        return self.net.init_stream_state()

    def forward_chunk(self, x, sigma, text, text_mask, camera, state):
        v, nxt = self.net.forward_chunk(x, sigma, text, text_mask, camera, state)
        if bool((sigma > 0).any()):  # denoising step (the sigma-0 pass only advances the state)
            self.calls.append({"offset": state.frame_offset, "x": x.detach()})
        return v, nxt


@dataclass
class OdePairs:
    """Teacher trajectories. x0 (B,C,F,h,w) final teacher samples; states[k][j] (B,C,f_k,h,w) the chunk-k
    state at distilled sigma j (chunk 0 includes its clean frame 0)."""

    x0: torch.Tensor
    states: list[list[torch.Tensor]]
    sigmas: tuple[float, ...]
    conds: ClipConditions


@torch.no_grad()
def collect_ode_pairs(teacher: nn.Module, conds: ClipConditions, sigmas: tuple[float, ...], num_steps: int,
                      shift: float, guidance_scale: float, seed: int, inputs: str = "interpolant",
                      noises_per_condition: int = 1, camera_guidance: float = 1.0) -> OdePairs:
    """Run the teacher's N-step streaming sampler and build the student's inputs at the distilled ``sigmas``.

    ``inputs="trajectory"``: the teacher's own state at each s (Euler is linear in sigma inside a step, so
    interpolating neighbouring recorded states is exact). ``inputs="interpolant"``: (1-s) x0 + s eps with
    eps the trajectory's starting noise: the points a deterministic few-step sampler visits when its x0
    predictions are right, so training inputs match sampling inputs (the reflow view of ODE pairs).
    ``noises_per_condition`` draws several trajectories per condition (more pairs, less over-fitting).
    ``guidance_scale`` / ``camera_guidance``: the teacher's guidance, distilled into the student.
    """
    if inputs not in ("interpolant", "trajectory"):
        raise ValueError(f"inputs must be 'interpolant' or 'trajectory', got {inputs!r}")
    if noises_per_condition > 1:
        conds = conds.select([i for i in range(len(conds)) for _ in range(noises_per_condition)])
    B = len(conds)
    rec = _Recorder(teacher)
    gen = torch.Generator().manual_seed(seed)
    x0 = sample_chunk_causal(rec, conds.cond_latent, conds.num_frames, conds.cond, chunk_lens=conds.chunk_lens,
                             num_steps=num_steps, guidance_scale=guidance_scale, shift=shift, generator=gen,
                             camera_guidance=camera_guidance)
    states: list[list[torch.Tensor]] = []
    for k, n in enumerate(conds.chunk_lens):
        off = sum(conds.chunk_lens[:k])
        steps = [c["x"][:B] for c in rec.calls if c["offset"] == off]  # [:B] drops the guidance branches' copies
        grid = FlowMatchScheduler(shift).sigmas(num_steps).tolist()
        if len(steps) != num_steps:
            raise AssertionError(f"chunk {k}: recorded {len(steps)} denoising calls, expected {num_steps}")
        path = steps + [x0[:, :, off:off + n]]  # states at grid[0..N]
        per_sigma = []
        for s in sigmas:
            if inputs == "interpolant":
                per_sigma.append(torch.lerp(x0[:, :, off:off + n], path[0], s))  # path[0] is the noise
                continue
            i = next(i for i in range(num_steps) if grid[i] >= s >= grid[i + 1])
            t = (grid[i] - s) / (grid[i] - grid[i + 1])
            per_sigma.append(torch.lerp(path[i], path[i + 1], t))
        states.append(per_sigma)
    return OdePairs(x0, states, tuple(sigmas), conds)


def student_x0(student: nn.Module, x_full: torch.Tensor, sigma_full: torch.Tensor, conds: ClipConditions,
               upto_chunk: int) -> torch.Tensor:
    """x0 prediction of the student for clip prefix ``x_full`` (B,C,b,h,w) with per-frame ``sigma_full`` (B,b)."""
    b = x_full.shape[2]
    cam = conds.cond.camera.slice_frames(0, b) if conds.cond.camera is not None else None
    v = student(x_full, sigma_full, conds.cond.text, conds.cond.text_mask, cam, mode="chunk_causal",
                chunk_lens=conds.chunk_lens[:upto_chunk + 1])
    return x_full - sigma_full[:, None, :, None, None] * v


def ode_regression_step(student: nn.Module, pairs: OdePairs, rng: random.Random) -> torch.Tensor:
    """Loss of one regression example per call: random chunk k and distilled sigma j, whole batch."""
    lens = pairs.conds.chunk_lens
    k = rng.randrange(len(lens))
    j = rng.randrange(len(pairs.sigmas))
    a = sum(lens[:k])
    b = a + lens[k]
    s = pairs.sigmas[j]
    x_k = pairs.states[k][j]
    x_full = torch.cat([pairs.x0[:, :, :a], x_k], dim=2) if a > 0 else x_k
    B = x_full.shape[0]
    sigma = torch.zeros(B, b)
    sigma[:, a:] = s
    if k == 0:
        sigma[:, 0] = 0.0  # the conditioning image is clean
        x_full = x_full.clone()
        x_full[:, :, :1] = pairs.conds.cond_latent
    pred = student_x0(student, x_full, sigma, pairs.conds, k)
    first = 1 if k == 0 else a
    return (pred[:, :, first:b] - pairs.x0[:, :, first:b]).pow(2).mean()
