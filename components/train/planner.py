"""Capacity plan for the cluster run: parameters, memory per GPU under ZeRO, FLOPs, step time, days.

Nothing here is a guess that could be measured instead:

* parameters are counted on the real ``SanaWM`` built on the meta device (no memory allocated);
* activation memory per block is measured by running that meta network forward on a short clip at the
  real latent size (880 tokens/frame) under ``torch.autograd.graph.saved_tensors_hooks`` and summing the
  bytes autograd keeps for backward, per token; it scales linearly with tokens except attention scores,
  which a GPU run never stores (flash attention keeps O(T) statistics), so saved tensors with two
  token-count axes are dropped. With activation checkpointing a GPU holds every block's input (the
  checkpoint boundary) plus one block's saved activations while it recomputes that block.

Model state per GPU under mixed precision (bf16 params/grads, fp32 master + Adam m, v = 12 B/param):
  ZeRO 0: 2 + 2 + 12 = 16 B/param;  1: 4 + 12/d;  2: 2 + 14/d;  3: 16/d (+ one gathered block).

FLOPs per clip: 6 * N * T for the linears (2N forward, 4N backward) plus one more forward (2N * T) for
the recomputation checkpointing causes, plus the attention terms a parameter count misses: softmax
blocks do QK^T and AV, 4 * T_ctx * T * D per pass for the main and the camera path; GDN blocks do a
D x D state update per frame and head (~(6 S D^2 + 2 D^3) per frame per head per path).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from components.train.config import StageConfig, paper_stages
from model.config import WorldModelConfig, get_preset

GB = 1e9
H100_BF16_DENSE_FLOPS = 989e12  # H100 SXM dense BF16 peak (no sparsity)
PAPER_CLIPS = 213_000
PAPER_DAYS, PAPER_GPUS = 15.0, 64


@dataclass
class Plan:
    """All figures of one plan (bytes are per GPU, FLOPs per optimizer step for the whole job)."""

    preset: str
    params: int
    params_breakdown: dict[str, int]
    nodes: int
    gpus_per_node: int
    zero_stage: int
    latent_frames: int
    tokens_per_clip: int
    model_state_gb: float
    activation_gb: float
    activation_boundary_gb: float
    activation_block_gb: float
    overhead_gb: float
    total_gb: float
    gpu_mem_gb: float
    fits: bool
    flops_per_clip: float
    flops_linear_per_clip: float
    flops_attention_per_clip: float
    step_time_s: float
    mfu: float
    stage_days: list[float]
    total_days: float
    epochs: list[float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_parameters(cfg: WorldModelConfig) -> tuple[int, dict[str, int]]:
    """Parameters of the real network built on the meta device, and its per-component breakdown."""
    from model.network import SanaWM

    with torch.device("meta"):
        net = SanaWM(cfg.network, cfg.chunks)
    return sum(p.numel() for p in net.parameters()), net.parameter_breakdown()


def model_state_bytes(params: int, zero_stage: int, dp: int, block_params: int = 0) -> float:
    """Bytes per GPU for bf16 params + bf16 grads + fp32 master/Adam (12 B) under ZeRO ``zero_stage``."""
    if zero_stage == 0:
        return 16.0 * params
    if zero_stage == 1:
        return 4.0 * params + 12.0 * params / dp
    if zero_stage == 2:
        return 2.0 * params + 14.0 * params / dp
    if zero_stage == 3:
        # ZeRO-3 gathers one block's full bf16 params (and grads) while it runs.
        return 16.0 * params / dp + 4.0 * block_params
    raise ValueError(f"zero_stage must be 0..3, got {zero_stage}")


def _saved_bytes_per_block(cfg: WorldModelConfig, frames: int) -> dict[int, float]:
    """Bytes autograd saves for backward inside each block for a ``frames``-frame clip (bf16, meta)."""
    from model.camera import CameraCondition
    from model.network import SanaWM

    h, w = cfg.latent_hw
    S = h * w
    T = S * frames
    with torch.device("meta"):
        net = SanaWM(cfg.network, cfg.chunks).to(torch.bfloat16)
        x = torch.empty(1, cfg.network.latent_channels, frames, h, w, dtype=torch.bfloat16)
        sigma = torch.empty(1, frames)
        text = torch.empty(1, 8, cfg.network.text_dim, dtype=torch.bfloat16)
        mask = torch.ones(1, 8, dtype=torch.bool)
        cam = CameraCondition(torch.empty(1, frames, 20), torch.empty(1, frames, cfg.network.plucker_channels, h, w))
    per_block: dict[int, float] = {}
    current = [-1]

    def pack(t: torch.Tensor) -> torch.Tensor:
        # attention scores (two token-count axes) are never stored by flash attention: skip them
        if current[0] >= 0 and t.is_floating_point() and sum(1 for d in t.shape if d >= T) < 2:
            per_block[current[0]] = per_block.get(current[0], 0.0) + t.numel() * t.element_size()
        return t

    hooks = []
    for i, blk in enumerate(net.blocks):
        hooks.append(blk.register_forward_pre_hook(lambda m, a, i=i: current.__setitem__(0, i)))
        hooks.append(blk.register_forward_hook(lambda m, a, o: current.__setitem__(0, -1)))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        # bidirectional: same saved tensors as chunk-causal minus the (T, T) mask, which is excluded anyway
        net(x, sigma, text, mask, cam, mode="bidirectional")
    for hk in hooks:
        hk.remove()
    return per_block


def measure_block_activation_bytes(cfg: WorldModelConfig, probe_frames: tuple[int, int] = (4, 8)) -> dict[str, float]:
    """Marginal bytes autograd saves per token in the worst GDN block and the worst softmax block.

    Two meta-device probes at the real latent size; the difference divided by the token difference drops
    everything that does not grow with the clip (the weights autograd also saves). Views of one storage
    saved by several ops are counted each time, so this is an upper bound.
    """
    S = cfg.latent_hw[0] * cfg.latent_hw[1]
    a, b = (_saved_bytes_per_block(cfg, f) for f in probe_frames)
    dT = S * (probe_frames[1] - probe_frames[0])
    marg = {i: (b[i] - a.get(i, 0.0)) / dT for i in b}
    gdn = [v for i, v in marg.items() if not cfg.network.is_softmax_block(i)]
    sm = [v for i, v in marg.items() if cfg.network.is_softmax_block(i)]
    return {"gdn_per_token": max(gdn, default=0.0), "softmax_per_token": max(sm, default=0.0)}


def flops_per_clip(cfg: WorldModelConfig, params: int, latent_frames: int, recompute: bool = True) -> tuple[float, float]:
    """(linear FLOPs, attention+scan FLOPs) for one training clip (forward + backward [+ recompute])."""
    n = cfg.network
    h, w = cfg.latent_hw
    S = h * w
    T = S * latent_frames
    passes = 4.0 if recompute else 3.0  # forward, (recompute forward), backward = 2 forwards
    linear = 2.0 * params * T * passes
    lens = cfg.chunks.chunk_lengths(latent_frames)
    # chunk-causal softmax: each chunk attends to itself and every earlier chunk
    ctx_tokens = 0.0
    start = 0
    for L in lens:
        start += L
        ctx_tokens += (L * S) * (start * S)
    paths = 2 if n.camera_branch else 1
    D = n.hidden_dim
    softmax = len(n.softmax_blocks) * paths * 4.0 * ctx_tokens * D
    Dh, H = n.head_dim, n.num_heads
    gdn_blocks = n.num_blocks - len(n.softmax_blocks)
    gdn = gdn_blocks * paths * latent_frames * H * (6.0 * S * Dh ** 2 + 2.0 * Dh ** 3)
    return linear, (softmax + gdn) * passes


def plan(preset: str = "sana_wm_2b6", nodes: int = 8, gpus_per_node: int = 8, zero_stage: int = 3,
         mfu: float = 0.35, gpu_mem_gb: float = 80.0, latent_frames: int = 121,
         stages: tuple[StageConfig, ...] | None = None, clips: int = PAPER_CLIPS,
         peak_flops: float = H100_BF16_DENSE_FLOPS) -> Plan:
    """Build the plan. Micro batch 1 clip per GPU; global batch = nodes * gpus_per_node."""
    cfg = get_preset(preset)
    dp = nodes * gpus_per_node
    params, breakdown = count_parameters(cfg)
    block_params = max(1, params // cfg.network.num_blocks)
    h, w = cfg.latent_hw
    T = latent_frames * h * w
    act = measure_block_activation_bytes(cfg)
    boundary = cfg.network.num_blocks * T * cfg.network.hidden_dim * 2.0  # bf16 block inputs kept
    block = max(act["gdn_per_token"], act["softmax_per_token"]) * T
    overhead = 4.0 * GB  # CUDA context, NCCL buffers, allocator fragmentation (rule of thumb)
    state = model_state_bytes(params, zero_stage, dp, block_params)
    total = state + boundary + block + overhead
    lin, att = flops_per_clip(cfg, params, latent_frames)
    step_time = (lin + att) / (peak_flops * mfu)  # one clip per GPU per step
    stages = stages or paper_stages()
    days, epochs = [], []
    for st in stages:
        l2, a2 = flops_per_clip(cfg, params, st.latent_frames)
        days.append(st.steps * (l2 + a2) * st.batch_size / (peak_flops * mfu) / 86400)
        epochs.append(st.steps * st.batch_size * dp / clips)
    return Plan(preset, params, breakdown, nodes, gpus_per_node, zero_stage, latent_frames, T,
                state / GB, (boundary + block) / GB, boundary / GB, block / GB, overhead / GB, total / GB,
                gpu_mem_gb, total <= gpu_mem_gb * GB, lin + att, lin, att, step_time, mfu, days, sum(days), epochs)


def format_plan(p: Plan) -> str:
    """Human-readable report, including the comparison with the paper's 15 days on 64 H100."""
    dp = p.nodes * p.gpus_per_node
    lines = [
        (f"SANA-WM training plan: preset {p.preset}, {p.nodes} nodes x {p.gpus_per_node} GPUs = {dp} GPUs, "
        f"ZeRO stage {p.zero_stage}, micro batch 1 clip/GPU (global batch {dp})"),
        f"parameters: {p.params:,} ({p.params / 1e9:.3f} B), counted on the meta device",
    ]
    lines += [f"  {k:<45s} {v:>15,}" for k, v in sorted(p.params_breakdown.items(), key=lambda kv: -kv[1])
              if k != "total"]
    lines += [
        (f"clip: {p.latent_frames} latent frames x {p.tokens_per_clip // p.latent_frames} tokens = "
        f"{p.tokens_per_clip:,} tokens (961 raw frames at 720p for 121)"),
        "memory per GPU:",
        f"  model state (bf16 params+grads, fp32 master+Adam, ZeRO {p.zero_stage}): {p.model_state_gb:8.2f} GB",
        (f"  activations, checkpointed: block inputs {p.activation_boundary_gb:.2f} GB + one block recomputed "
        f"{p.activation_block_gb:.2f} GB = {p.activation_gb:8.2f} GB"),
        f"  overhead (context, NCCL, fragmentation):              {p.overhead_gb:8.2f} GB",
        f"  total {p.total_gb:.2f} GB of {p.gpu_mem_gb:.0f} GB -> {'FITS' if p.fits else 'DOES NOT FIT'}",
        (f"FLOPs per clip (60 s stage): {p.flops_per_clip:.3e} = linears 8*N*T {p.flops_linear_per_clip:.3e} "
        f"(6NT + 2NT recompute) + attention/scan {p.flops_attention_per_clip:.3e}"),
        f"FLOPs per step (all GPUs): {p.flops_per_clip * dp:.3e}",
        f"step time at MFU {p.mfu:.2f} on H100 (989 TFLOP/s bf16 dense): {p.step_time_s:.1f} s",
        "schedule (assumed; the paper states only 4 progressive stages, ~213K clips, 15 days on 64 H100):",
    ]
    for i, (d, e) in enumerate(zip(p.stage_days, p.epochs)):
        lines.append(f"  stage {i + 1}: {d:6.2f} days, {e:5.2f} epochs over {PAPER_CLIPS:,} clips")
    ratio = PAPER_DAYS * PAPER_GPUS / max(p.total_days * dp, 1e-9)
    lines += [
        (f"total: {p.total_days:.2f} days on {dp} GPUs ({p.total_days * dp:.0f} GPU-days) vs paper "
        f"{PAPER_DAYS:.0f} days on {PAPER_GPUS} H100 ({PAPER_DAYS * PAPER_GPUS:.0f} GPU-days): paper is "
        f"{ratio:.1f}x ours"),
        ("why the gap: (1) the MFU assumed here is for dense GEMMs; the frame-wise GDN scan (121 sequential "
        "small D x D updates per block), the per-ray camera transforms and chunk-causal masking run far below "
        "peak, realistic end-to-end MFU for this hybrid is 10-20%; (2) the paper's step counts/epochs are not "
        "published (ours assume 1-2 epochs per stage, listed above); (3) online VAE encoding of 720p video (LTX-2 encoder) "
        "and data loading, evaluation, checkpointing and restarts are not in the FLOP count; (4) the 15 days "
        "may include the camera-branch fine-tuning and ablations. Rerun with --mfu 0.12 to see the effect of (1)."),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m components.train plan", description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="sana_wm_2b6")
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--zero-stage", type=int, default=3, choices=[0, 1, 2, 3])
    ap.add_argument("--mfu", type=float, default=0.35)
    ap.add_argument("--gpu-mem-gb", type=float, default=80.0)
    ap.add_argument("--latent-frames", type=int, default=121)
    a = ap.parse_args(argv)
    if not 0 < a.mfu <= 1:
        ap.error(f"--mfu must lie in (0, 1], got {a.mfu}")
    p = plan(a.preset, a.nodes, a.gpus_per_node, a.zero_stage, a.mfu, a.gpu_mem_gb, a.latent_frames)
    print(format_plan(p))
    return 0 if math.isfinite(p.total_days) else 1
