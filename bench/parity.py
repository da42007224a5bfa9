"""Our SanaWM vs the released SANA-WM (diffusers ``SanaWMTransformer3DModel``) at the same config and weights.

Bidirectional forward on CPU, fp32, ``--threads`` intra-op threads: max relative error of ours against the
reference (also in float64 with the reference's internal fp32/bf16 casts lifted, which compares the maths),
and seconds per forward for both (median of ``--repeats``, the two run alternately, after a warm-up). Then our streaming mode: seconds
per chunk, and the carried stream state at N and 4N latent frames (the release has no streaming mode).
The config is the ``small`` preset's network (8 blocks, hidden 192, 4 heads x 48, softmax blocks 3 and 7)
on a 16x24 latent grid unless ``--preset`` says otherwise.

    .venv/bin/python bench/parity.py [--preset small] [--frames 10] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.camera import camera_condition, look_at
from model.config import get_preset
from model.interop import diffusers_config, diffusers_velocity
from model.network import SanaWM
from tests.model.reference import lift_reference_casts, randomise_zero_parameters


def _timed_pair(fa, fb, repeats: int) -> tuple[float, float]:
    """Median seconds of fa and fb, run alternately (a shared machine's load then biases neither)."""
    fa(), fb()  # warm-up
    ta, tb = [], []
    for _ in range(repeats):
        for fn, acc in ((fa, ta), (fb, tb)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--frames", type=int, default=10, help="latent frames of the clip")
    p.add_argument("--grid", default="16x24", help="latent grid h x w")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "parity.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from diffusers import SanaWMTransformer3DModel

    cfg = get_preset(args.preset)
    n = cfg.network
    h, w = (int(v) for v in args.grid.split("x"))
    F_, ts = args.frames, n.temporal_stride
    torch.manual_seed(0)
    ref = SanaWMTransformer3DModel(**diffusers_config(n)).eval()
    randomise_zero_parameters(ref, std=0.05)
    ours = SanaWM(n, cfg.chunks).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)

    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, n.latent_channels, F_, h, w, generator=g)
    t = torch.randint(0, 1000, (1, 1, F_), generator=g).float()
    y = torch.randn(1, 1, 16, n.text_dim, generator=g)
    mask = torch.ones(1, 16, dtype=torch.long)
    N = 1 + ts * (F_ - 1)
    c2w = torch.stack([look_at((0.05 * i, 0.0, 0.2 * i), (0.3 + 0.05 * i, 0.0, 5.0)) for i in range(N)])[None]
    K = torch.tensor([[8.0 * w, 0, 4.0 * w], [0, 8.0 * w, 4.0 * h], [0, 0, 1]], dtype=torch.float64)
    cam = camera_condition(c2w, K.expand(1, N, 3, 3), (8 * h, 8 * w), (h, w), ts, dtype=torch.float32)
    rc, cp = cam.diffusers_inputs()

    with torch.no_grad():
        r32 = ref(x, t, y, mask, camera_conditions=rc, chunk_plucker=cp).sample
        o32 = diffusers_velocity(ours, x, t, y, mask, rc, cp)
        ref64, ours64 = ref.double(), ours.double()
        with lift_reference_casts():
            r64 = ref64(x.double(), t.double(), y.double(), mask, camera_conditions=rc.double(),
                        chunk_plucker=cp.double()).sample
        o64 = diffusers_velocity(ours64, x.double(), t.double(), y.double(), mask, rc.double(), cp.double())
        ref.float(), ours.float()
    err32 = float((o32 - r32).abs().max() / r32.abs().max())
    err64 = float((o64 - r64).abs().max() / r64.abs().max())

    with torch.no_grad():
        t_ours, t_ref = _timed_pair(lambda: diffusers_velocity(ours, x, t, y, mask, rc, cp),
                                    lambda: ref(x, t, y, mask, camera_conditions=rc, chunk_plucker=cp), args.repeats)

    # streaming: a clip of 4x the frames, chunk by chunk, state size after N and after 4N frames
    lens = cfg.chunks.chunk_lengths(4 * F_)
    x4 = torch.randn(1, n.latent_channels, 4 * F_, h, w, generator=g)
    N4 = 1 + ts * (4 * F_ - 1)
    c2w4 = torch.stack([look_at((0.05 * i, 0.0, 0.2 * i), (0.3 + 0.05 * i, 0.0, 5.0)) for i in range(N4)])[None]
    cam4 = camera_condition(c2w4, K.expand(1, N4, 3, 3), (8 * h, 8 * w), (h, w), ts, dtype=torch.float32)
    text, tmask = y[:, 0], mask.bool()
    state, s, chunk_times, bytes_at = ours.init_stream_state(), 0, [], {}
    with torch.no_grad():
        for k in lens:
            t0 = time.perf_counter()
            _, state = ours.forward_chunk(x4[:, :, s:s + k], torch.full((1, k), 0.5), text, tmask,
                                          cam4.slice_frames(s, s + k), state)
            chunk_times.append(time.perf_counter() - t0)
            s += k
            if s >= F_ and "N" not in bytes_at:
                bytes_at["N"] = state.num_bytes()
    bytes_at["4N"] = state.num_bytes()

    result = {
        "config": {"preset": args.preset, "blocks": n.num_blocks, "hidden": n.hidden_dim, "heads": n.num_heads,
                   "head_dim": n.head_dim, "softmax_blocks": list(n.softmax_blocks), "frames": F_, "grid": [h, w],
                   "tokens": F_ * h * w, "threads": args.threads, "dtype": "float32"},
        "max_rel_err_fp32": err32, "max_rel_err_fp64_lifted": err64,
        "seconds_per_forward": {"ours": t_ours, "reference": t_ref, "ours_over_reference": t_ours / t_ref},
        "streaming": {"chunks": len(lens), "seconds_per_chunk_first": chunk_times[0],
                      "seconds_per_chunk_last3_mean": statistics.mean(chunk_times[-3:]),
                      "state_bytes_N": bytes_at["N"], "state_bytes_4N": bytes_at["4N"],
                      "state_4N_over_N": bytes_at["4N"] / bytes_at["N"]},
    }
    print(f"config: {args.preset} network, {F_} latent frames x {h}x{w} = {F_ * h * w} tokens, "
          f"{args.threads} threads, fp32")
    print(f"max relative error vs reference: fp32 {err32:.2e} (the reference computes its softmax camera "
          f"attention in bf16), fp64 with its casts lifted {err64:.2e}")
    print(f"seconds per bidirectional forward: ours {t_ours:.3f}, reference {t_ref:.3f} "
          f"(ours/reference {t_ours / t_ref:.2f})")
    st = result["streaming"]
    print(f"streaming {len(lens)} chunks: {st['seconds_per_chunk_first']:.3f} s first chunk, "
          f"{st['seconds_per_chunk_last3_mean']:.3f} s last three; carried state {st['state_bytes_N'] / 1e6:.2f} MB "
          f"at N, {st['state_bytes_4N'] / 1e6:.2f} MB at 4N (x{st['state_4N_over_N']:.3f})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
