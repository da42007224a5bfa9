"""Serving benchmark: interactive sessions, streaming and a bad-session storm on a REAL tritonserver (issue 11).

On a random-weight ``small`` bundle (CPU), one server with the three models of ``serving.triton_repo``:

* 1, 4 and 8 concurrent sessions x ``--chunks`` chunks each (``sana_wm_session``, few-step student):
  per-chunk latency p50/p95/p99, chunks/s, RSS of the session model's stub process once every session
  has made chunk 2 and again at the last chunk (ratio: goal <= 1.05), also from chunk 6 (after the
  K/V window has filled; the in-process session's state size per chunk says when), memory per live
  session;
* time to first frames of the decoupled ``sana_wm`` (gRPC stream) vs the whole-video time of
  ``sana_wm_video`` for the same request;
* Triton round trip vs in-process ``StreamingSession.step`` for the same chunk (goal <= 1.10);
* a storm of bad session requests interleaved with valid sessions: every bad request must get an
  error that names the problem, no valid chunk may fail, the server stays ready, and the stub's RSS
  after the sessions end is compared with its level before them.

    .venv/bin/python bench/serve.py [--preset small] [--chunks 20] [--sessions 1 4 8] [--out bench/results/serve.json]

The figures go into the results file under the preset's key (``small``, ``tiny``), beside the others.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.atomic import write_json
from model.config import get_preset
from model.pipeline import WorldModelPipeline
from model.trajectory import default_intrinsics, trajectory_from_actions
from serving.client import SessionClient, request_video, stream_video
from serving.server import TritonServer
from serving.session import StreamingSession
from serving.triton_repo import build_repository

ACTIONS = ("w", "w+q", "d", "e", "w+r", "s", "a+e", "f", "hold", "w 2")


def stub_rss(model: str) -> int:
    """RSS bytes of the Python-backend stub process serving ``model`` (found by its command line)."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if not any(b"triton_python_backend_stub" in c for c in cmd[:1]):
                continue
            if not any(f"/{model}/1/model.py".encode() in c for c in cmd):
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def pct(xs, q) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def run_sessions(url: str, n: int, chunks: int, image: np.ndarray) -> dict:
    """``n`` sessions at once, ``chunks`` chunks each; RSS sampled when all have made chunk 2 and chunk N."""
    marks: dict[str, int] = {}
    at2 = threading.Barrier(n, action=lambda: marks.__setitem__("chunk2", stub_rss("sana_wm_session")))
    # A session's state grows until its K/V window (sink + recent chunks) is full, a few chunks in; RSS
    # once every session is past that separates the window's warm-up from growth with session length.
    at6 = threading.Barrier(n, action=lambda: marks.__setitem__("chunk6", stub_rss("sana_wm_session")))
    atN = threading.Barrier(n, action=lambda: marks.__setitem__("chunkN", stub_rss("sana_wm_session")))
    lat: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def one(k: int) -> None:
        try:
            with SessionClient(url) as s:
                for c in range(chunks):
                    t0 = time.perf_counter()
                    if c == 0:
                        s.start(image, action=ACTIONS[k % len(ACTIONS)], seed=k)
                    else:
                        s.step(action=ACTIONS[(k + c) % len(ACTIONS)])
                    dt = time.perf_counter() - t0
                    with lock:
                        lat.append(dt)
                    if c == 1:
                        at2.wait()
                    if c == 5 and chunks > 6:
                        at6.wait()
                    if c == chunks - 1:
                        atN.wait()
        except Exception as err:  # noqa: BLE001 - counted and reported
            with lock:
                failures.append(f"{type(err).__name__}: {err}")
            at2.abort()
            at6.abort()
            atN.abort()

    before = stub_rss("sana_wm_session")
    t0 = time.perf_counter()
    threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    after = stub_rss("sana_wm_session")
    return {
        "sessions": n, "chunks_per_session": chunks, "failures": failures,
        "chunk_latency_s": {"p50": pct(lat, 50), "p95": pct(lat, 95), "p99": pct(lat, 99), "n": len(lat)},
        "chunks_per_s": len(lat) / wall, "wall_s": wall,
        "rss_before_mb": before / 2**20, "rss_chunk2_mb": marks.get("chunk2", 0) / 2**20,
        "rss_last_chunk_mb": marks.get("chunkN", 0) / 2**20,
        "rss_last_over_chunk2": marks["chunkN"] / marks["chunk2"] if "chunk2" in marks and "chunkN" in marks else None,
        "rss_chunk6_mb": marks.get("chunk6", 0) / 2**20,
        "rss_last_over_chunk6": marks["chunkN"] / marks["chunk6"] if "chunk6" in marks and "chunkN" in marks else None,
        "mb_per_live_session": (marks.get("chunk2", before) - before) / n / 2**20,
        "rss_after_end_mb": after / 2**20,
    }


def storm(url: str, image: np.ndarray, max_sessions: int, valid_chunks: int = 6) -> dict:
    """Bad requests of every kind while two valid sessions run; count errors and valid failures."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    before = stub_rss("sana_wm_session")
    valid_fail: list[str] = []
    valid_ok = [0]

    def valid(k: int) -> None:
        try:
            with SessionClient(url) as s:
                s.start(image, action="w", seed=100 + k)
                valid_ok[0] += 1
                for c in range(valid_chunks - 1):
                    s.step(action=ACTIONS[c % len(ACTIONS)])
                    valid_ok[0] += 1
        except Exception as err:  # noqa: BLE001
            valid_fail.append(f"{type(err).__name__}: {err}")

    workers = [threading.Thread(target=valid, args=(k,)) for k in range(2)]
    for t in workers:
        t.start()
    time.sleep(1.0)
    results = []

    def bad(name: str, fn) -> None:
        t0 = time.perf_counter()
        try:
            fn()
            results.append({"case": name, "error": None, "s": time.perf_counter() - t0})
        except InferenceServerException as err:
            results.append({"case": name, "error": err.message(), "s": time.perf_counter() - t0})

    chunk = 12
    bad("chunk before START", lambda: SessionClient(url).step(action="w"))
    bad("unknown correlation id", lambda: SessionClient(url, sequence_id=987654321).step(action="w"))
    s = SessionClient(url)
    s.start(image, action="w")
    bad("START twice", lambda: s.start(image, action="w"))
    bad("oversized ACTION", lambda: s.step(action="w" * 4096))
    bad("NaN C2W", lambda: s.step(c2w=np.full((chunk, 4, 4), np.nan, np.float32)))
    bad("wrong image size", lambda: SessionClient(url).start(image[: image.shape[0] // 2], action="w"))
    bad("START without IMAGE", lambda: SessionClient(url)._infer(SessionClient._steer("w", None), start=True))
    s.step(action="w")  # the session survived all of the above
    s.end()
    ended = SessionClient(url, sequence_id=s.sequence_id)
    ended.live = True
    bad("END twice", ended.end)
    # Fill every place (2 valid sessions may be live), then one more START.
    fillers = []
    while True:
        f = SessionClient(url)
        try:
            f.start(image, action="hold")
            fillers.append(f)
        except InferenceServerException as err:
            results.append({"case": "too many sessions", "error": err.message(), "live_fillers": len(fillers)})
            break
        if len(fillers) > max_sessions:
            results.append({"case": "too many sessions", "error": None})
            break
    for f in fillers:
        f.close()
    for t in workers:
        t.join()
    with grpcclient.InferenceServerClient(url) as c:
        ready = c.is_server_ready() and c.is_model_ready("sana_wm_session")
    time.sleep(1.0)
    after = stub_rss("sana_wm_session")
    return {
        "bad_requests": results,
        "bad_without_error": [r["case"] for r in results if not r["error"]],
        "valid_chunks_ok": valid_ok[0], "valid_failures": valid_fail, "server_ready_after": ready,
        "rss_before_mb": before / 2**20, "rss_after_mb": after / 2**20, "rss_after_over_before": after / before,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--chunks", type=int, default=20)
    p.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "serve.json"))
    args = p.parse_args(argv)

    cfg = get_preset(args.preset)
    h, w = cfg.video_height, cfg.video_width
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    pipe = WorldModelPipeline.from_config(cfg, seed=0)
    pipe.save_pretrained(work / "bundle")
    max_sessions = max(max(args.sessions), 4)  # the storm runs 3 sessions of its own
    repo = build_repository(work / "bundle", work / "repo", default_mode="few_step", session_mode="few_step",
                            max_sessions=max_sessions, idle_timeout_s=300)
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 128)], -1).astype(np.uint8)
    result: dict = {"preset": args.preset, "size_hw": [h, w], "fps": cfg.fps, "mode": "few_step",
                    "cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg(), "chunk_raw_frames": cfg.vae.temporal_stride * cfg.chunks.chunk_frames}

    # In-process reference for the same chunk (before the server takes the cores).
    s = StreamingSession(pipe, image, seed=0)
    inproc, state_bytes = [], []
    for c in range(10):  # timed: chunks 0..5; state size: every chunk (when does the window fill?)
        t0 = time.perf_counter()
        s.step(action=ACTIONS[c])
        if c < 6:
            inproc.append(time.perf_counter() - t0)
        state_bytes.append(s.num_bytes())
    del s
    print("in-process chunk s:", [round(x, 3) for x in inproc], flush=True)

    with TritonServer(repo, log_file=work / "server.log", ready_timeout_s=600) as server:
        # Round trip for the same chunks, one session, nothing else running.
        rt = []
        with SessionClient(server.grpc_url) as sc:
            for c in range(6):
                t0 = time.perf_counter()
                (sc.start(image, action=ACTIONS[c], seed=0) if c == 0 else sc.step(action=ACTIONS[c]))
                rt.append(time.perf_counter() - t0)
        result["round_trip"] = {
            "in_process_chunk_s_median": float(np.median(inproc[1:])),
            "triton_chunk_s_median": float(np.median(rt[1:])),
            "ratio": float(np.median(rt[1:]) / np.median(inproc[1:])),
            "in_process_s": inproc, "triton_s": rt, "note": "chunks 1..5 (chunk 0 also encodes the image)"}
        result["session_state_bytes_after_chunk"] = state_bytes  # StreamingSession.num_bytes, chunks 1..10
        print(json.dumps(result["round_trip"]), flush=True)

        # Time to first frames: decoupled stream vs the whole video over HTTP.
        n = 1 + 12 * 5  # 61 raw frames = 5 chunks
        traj = trajectory_from_actions("w 3s; q 2s; e 3s", fps=cfg.fps, K=default_intrinsics(h, w), num_frames=n)
        t0 = time.perf_counter()
        arrivals = []
        for chunk in stream_video(server.grpc_url, image, traj.c2w, traj.intrinsics, seed=1):
            arrivals.append((time.perf_counter() - t0, len(chunk)))
        t1 = time.perf_counter()
        whole = request_video(server.http_url, image, traj.c2w, traj.intrinsics, seed=1)
        t_whole = time.perf_counter() - t1
        result["time_to_first_frames"] = {
            "frames": n, "stream_first_chunk_s": arrivals[0][0], "stream_all_s": arrivals[-1][0],
            "whole_video_http_s": t_whole, "first_over_whole": arrivals[0][0] / t_whole,
            "chunk_arrivals": arrivals, "http_frames": int(whole.shape[0])}
        print(json.dumps(result["time_to_first_frames"]), flush=True)

        result["concurrency"] = []
        for k in args.sessions:
            row = run_sessions(server.grpc_url, k, args.chunks, image)
            result["concurrency"].append(row)
            print(json.dumps(row), flush=True)

        result["storm"] = storm(server.grpc_url, image, max_sessions)
        print(json.dumps(result["storm"], indent=1), flush=True)

    result["load_avg_at_end"] = os.getloadavg()  # the machine is shared: read the figures against this
    result["command"] = "bench/serve.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result["git_commit"] = _git_commit()
    out = Path(args.out)
    write_json(out, merge_results(out, args.preset, result))
    print(f"wrote {out} [{args.preset}]")
    return 0


def merge_results(out: Path, preset: str, result: dict) -> dict:
    """The results file's figures with ``result`` under key ``preset`` (other presets' figures kept).

    A file from before the per-preset layout holds one preset's figures at the top level (it has a
    string ``preset`` key): those move under their own preset's key first, so no run is lost."""
    data = json.loads(out.read_text()) if out.is_file() else {}
    if isinstance(data.get("preset"), str):
        data = {data["preset"]: data}
    data[preset] = result
    return data


def _git_commit() -> str | None:
    """HEAD of the checkout the bench ran from (with ``+dirty`` when it had uncommitted changes)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


if __name__ == "__main__":
    raise SystemExit(main())
