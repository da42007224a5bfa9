"""Streaming rollout benchmark: memory and time per chunk as the video grows (issue #2, item 10).

For the ``small`` preset, generate N and 4N latent frames with the streaming sampler
(``model.sampling.sample_chunk_causal``), once with the hybrid model (frame-wise GDN + softmax blocks with a
sink + 2 recent chunk K/V window) and once with an all-softmax variant of the same model that keeps a FULL
K/V cache. Reports, per case, the peak heap in use during generation above the level before it, the size of
the carried stream state, and seconds per chunk (first regular chunk vs the mean of the last three).

Peak memory on CPU: torch has no allocator statistics for CPU tensors, so a sampler thread polls glibc's
``mallinfo2`` (heap in use + mmapped blocks, which is where large tensors live) every ~0.5 ms while torch
releases the GIL inside its kernels. Runs the cases in one process, in order, after a warm-up.

    .venv/bin/python bench/rollout.py [--frames 16] [--steps 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.camera import camera_condition
from model.config import get_preset
from model.network import SanaWM
from model.sampling import Conditioning, sample_chunk_causal
from model.trajectory import default_intrinsics, trajectory_from_actions


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


class HeapPeak:
    """Poll glibc heap usage in a thread; ``peak - base`` is the extra memory a block of work needed."""

    def __init__(self, interval_s: float = 0.0005) -> None:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        self._mallinfo2 = libc.mallinfo2
        self.interval_s = interval_s

    def in_use(self) -> int:
        m = self._mallinfo2()
        return int(m.uordblks + m.hblkhd)

    def __enter__(self) -> HeapPeak:
        gc.collect()
        self.base = self.peak = self.in_use()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.in_use())
            time.sleep(self.interval_s)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.in_use())


class ChunkTimer(torch.nn.Module):
    """Wraps the network; records wall time of every ``forward_chunk`` call, grouped by chunk."""

    def __init__(self, net: SanaWM) -> None:
        super().__init__()
        self.net = net
        self.per_chunk: dict[int, float] = {}
        self.state_bytes = 0

    def init_stream_state(self):
        return self.net.init_stream_state()

    def forward_chunk(self, x, sigma, text, mask, camera, state):
        t0 = time.perf_counter()
        v, nxt = self.net.forward_chunk(x, sigma, text, mask, camera, state)
        self.per_chunk[state.frame_offset] = self.per_chunk.get(state.frame_offset, 0.0) + time.perf_counter() - t0
        self.state_bytes = max(self.state_bytes, nxt.num_bytes())
        return v, nxt


def run_case(cfg, all_softmax: bool, frames: int, steps: int, seed: int = 0) -> dict:
    net_cfg, chunks = cfg.network, cfg.chunks
    if all_softmax:
        net_cfg = replace(net_cfg, softmax_blocks=tuple(range(net_cfg.num_blocks)))
        chunks = replace(chunks, kv_recent_chunks=10 ** 6)  # full K/V cache: every past chunk is kept
    torch.manual_seed(seed)
    net = SanaWM(net_cfg, chunks).eval()
    timer = ChunkTimer(net)
    h, w = cfg.latent_hw
    N = cfg.vae.num_raw_frames(frames)
    K = default_intrinsics(cfg.video_height, cfg.video_width)
    tr = trajectory_from_actions("w 2s; q 1s; d 1s; e 2s", fps=cfg.fps, K=K, num_frames=N)
    cam = camera_condition(torch.tensor(tr.c2w, dtype=torch.float32)[None],
                           torch.tensor(tr.intrinsics, dtype=torch.float32)[None],
                           (cfg.video_height, cfg.video_width), (h, w), cfg.vae.temporal_stride)
    g = torch.Generator().manual_seed(seed)
    cond_latent = torch.randn(1, net_cfg.latent_channels, 1, h, w, generator=g)
    cond = Conditioning(text=torch.randn(1, 8, net_cfg.text_dim, generator=g),
                        text_mask=torch.ones(1, 8, dtype=torch.bool), camera=cam)
    lens = chunks.chunk_lengths(frames)
    with HeapPeak() as mem:
        t0 = time.perf_counter()
        out = sample_chunk_causal(timer, cond_latent, frames, cond, chunk_lens=lens, num_steps=steps,
                                  guidance_scale=1.0, shift=cfg.sampler.flow_shift, generator=g)
        total = time.perf_counter() - t0
    assert out.shape[2] == frames and torch.isfinite(out).all()
    secs = [timer.per_chunk[k] for k in sorted(timer.per_chunk)]
    return {
        "variant": "all_softmax_full_kv" if all_softmax else "hybrid_gdn",
        "latent_frames": frames, "raw_frames": N, "chunks": len(lens), "steps_per_chunk": steps,
        "peak_mem_mb": round((mem.peak - mem.base) / 2 ** 20, 2),
        "stream_state_mb": round(timer.state_bytes / 2 ** 20, 3),
        "sec_first_chunk": round(secs[1] if len(secs) > 1 else secs[0], 4),  # first regular (3-frame) chunk
        "sec_last_chunks": round(sum(secs[-3:]) / len(secs[-3:]), 4),
        "sec_total": round(total, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--frames", type=int, default=16, help="N latent frames (the long case is 4N)")
    p.add_argument("--steps", type=int, default=4, help="denoising steps per chunk")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "rollout.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = get_preset(args.preset)
    run_case(cfg, False, 7, 1)  # warm-up: first-call allocations and kernel selection
    rows = []
    for all_softmax in (False, True):
        for frames in (args.frames, 4 * args.frames):
            row = run_case(cfg, all_softmax, frames, args.steps)
            rows.append(row)
            print(json.dumps(row))
    summary = {}
    for variant in ("hybrid_gdn", "all_softmax_full_kv"):
        a, b = [r for r in rows if r["variant"] == variant]
        summary[variant] = {
            "peak_mem_ratio_4N_over_N": round(b["peak_mem_mb"] / max(a["peak_mem_mb"], 1e-9), 3),
            "state_ratio_4N_over_N": round(b["stream_state_mb"] / max(a["stream_state_mb"], 1e-9), 3),
            "last_over_first_chunk_time_4N": round(b["sec_last_chunks"] / b["sec_first_chunk"], 3),
        }
    result = {"preset": args.preset, "torch_threads": args.threads, "cpu_count": os.cpu_count(),
              "device": "cpu", "cases": rows, "summary": summary}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)
    print(json.dumps(summary, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
