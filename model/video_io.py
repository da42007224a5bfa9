"""Video in and out through PyAV (the FFmpeg bundled in the ``av`` wheel, with libx264): the stack's one
video I/O module (files and in-memory mp4), below every layer so the model CLI, serving and the steps share it.

Every clip in the stack is H.264 / yuv420p in an mp4 container: the format every decoder, browser and
the VAE data loaders agree on. yuv420p subsamples chroma 2x2, so width and height must be even;
:func:`write_video` refuses odd sizes instead of silently padding or cropping them.

Frames are ``uint8`` RGB arrays shaped ``(N, H, W, 3)`` (or ``(H, W, 3)`` for one frame).

Failures while opening or decoding (corrupt data, a truncated file, something that is not a video)
raise :class:`VideoDecodeError`, a ``ValueError`` whose message names the file and the cause, so a
batch ingest can record the reason per file and carry on.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from model.atomic import atomic_path

__all__ = [
    "VideoDecodeError",
    "VideoInfo",
    "decode_mp4",
    "encode_mp4",
    "iter_frames",
    "iter_timed_frames",
    "probe_video",
    "read_video",
    "write_video",
]


class VideoDecodeError(ValueError):
    """A video could not be opened or decoded; the message names the file and the cause."""

    def __init__(self, path: str | os.PathLike, cause: str) -> None:
        self.path = str(path)
        self.cause = cause
        super().__init__(f"cannot decode video {self.path!r}: {cause}")


@dataclass(frozen=True)
class VideoInfo:
    """Container-level facts about the first video stream of a file.

    ``frames`` is the frame count (from the header, or counted from packets when the container does
    not store it, e.g. webm/mkv); ``duration`` is in seconds; ``codec`` is FFmpeg's decoder name.
    """

    frames: int
    fps: float
    height: int
    width: int
    duration: float
    codec: str


def _fps_fraction(fps: float) -> Fraction:
    """Rational frame rate for the encoder; 1001-denominators keep NTSC rates (29.97) exact."""
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
    return Fraction(fps).limit_denominator(1001)


def _check_frames(frames: np.ndarray, what: str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (N,H,W,3), got shape {frames.shape} for {what}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype} for {what}")
    n, h, w, _ = frames.shape
    if n == 0:
        raise ValueError(f"cannot write an empty video (0 frames) to {what}")
    if h % 2 or w % 2:
        raise ValueError(f"H.264 yuv420p needs even height and width, got {h}x{w} for {what}")
    return frames


@functools.cache
def _x264_params() -> str:
    """x264 options that make its output a function of the frames alone on this CPU.

    x264's AVX-512 code path is not repeatable: the same clip encoded twice in one process gave different
    bitstreams (and decoded frames up to 50 grey levels apart) on an AVX-512 machine, while capping the
    instruction set at AVX2 (or turning off macroblock-tree rate control) gave identical bytes every time,
    at the same speed. Unrepeatable clips defeat DVC's content hashes and make every annotation run differ.
    The cap is applied only where the CPU reports both AVX2 and AVX-512 (Linux /proc/cpuinfo); forcing
    AVX2 on a CPU without it would crash, so elsewhere x264 detects the CPU as usual.
    """
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return ""
    return "asm=AVX2" if {"avx2", "avx512f"} <= flags else ""


def _encode(frames: np.ndarray, target, fps: float, crf: int, faststart: bool = True) -> None:
    """H.264 yuv420p mp4 of checked frames into ``target`` (a path, or a binary file object: then without
    faststart, which rewrites the finished file by name)."""
    if not 0 <= int(crf) <= 51:
        raise ValueError(f"crf must be in [0, 51], got {crf}")
    rate = _fps_fraction(fps)
    _, h, w, _ = frames.shape
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(target, mode="w", format="mp4", options=options) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(int(crf)), **({"x264-params": _x264_params()} if _x264_params() else {})}
        for frame in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            container.mux(stream.encode(vf))
        container.mux(stream.encode(None))  # flush delayed (B-)frames


def write_video(frames: np.ndarray, path: str | os.PathLike, fps: float, crf: int = 18) -> Path:
    """Encode ``frames`` uint8 (N,H,W,3) RGB as H.264 yuv420p mp4 at ``path``; returns the path.

    The file is written to a temporary name in the same directory and renamed into place, so readers
    never see a half-written clip. ``crf`` is x264's constant rate factor (0 lossless .. 51 worst;
    18 is visually near-lossless). The moov atom is moved to the front (faststart) so the clip
    streams from object stores and a truncated copy is detectable from its header.
    """
    path = Path(path)
    frames = _check_frames(frames, str(path))
    with atomic_path(path) as tmp:
        _encode(frames, str(tmp), fps, crf)
    return path


def encode_mp4(frames: np.ndarray, fps: float, crf: int = 18) -> bytes:
    """The same H.264 mp4 as ``write_video``, in memory (shard samples carry their clip as bytes)."""
    buf = io.BytesIO()
    _encode(_check_frames(frames, "an in-memory mp4"), buf, fps, crf, faststart=False)
    return buf.getvalue()


def decode_mp4(data: bytes, name: str = "in-memory mp4") -> np.ndarray:
    """uint8 (N,H,W,3) RGB frames of an in-memory mp4; ``VideoDecodeError`` naming ``name`` on bad data."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.error.FFmpegError, ValueError) as e:
        raise VideoDecodeError(name, str(e)) from e
    if not frames:
        raise VideoDecodeError(name, "no video frames")
    return np.stack(frames)


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"video file not found: {p}")
    try:
        container = av.open(str(p), mode="r")
    except av.FFmpegError as e:
        raise VideoDecodeError(p, f"not a readable video container ({e})") from e
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(p, "the file has no video stream")
    return container


def _stream_fps(stream: av.video.stream.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise ValueError(f"cannot determine frame rate of stream {stream}")
    return float(rate)


def iter_timed_frames(path: str | os.PathLike) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(t_seconds, frame uint8 (H,W,3))`` for every decoded frame, in presentation order.

    Timestamps come from the stream's PTS, so variable-frame-rate sources resample correctly.
    Raises :class:`VideoDecodeError` on corrupt data, and when the stream ends before the frame count
    its header declares (a truncated file).
    """
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame+slice threads: decoding is the ingest bottleneck
        declared = int(stream.frames or 0)
        fps = _stream_fps(stream)
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        count = 0
        try:
            for frame in container.decode(stream):
                t = float(frame.time) - start if frame.time is not None else count / fps
                yield t, frame.to_ndarray(format="rgb24")
                count += 1
        except av.FFmpegError as e:
            raise VideoDecodeError(path, f"decoding failed after {count} frames ({e})") from e
        if count == 0:
            raise VideoDecodeError(path, "the video stream holds no decodable frames")
        if declared and count < declared:
            raise VideoDecodeError(path, f"truncated: header declares {declared} frames, decoded {count}")
    finally:
        container.close()


def iter_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Yield every frame of ``path`` as uint8 (H,W,3) RGB; see :func:`iter_timed_frames` for errors."""
    for _, frame in iter_timed_frames(path):
        yield frame


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode ``path`` into ``(frames uint8 (N,H,W,3), fps)``; at most ``max_frames`` frames if given."""
    if max_frames is not None and max_frames <= 0:
        raise ValueError(f"max_frames must be positive or None, got {max_frames}")
    fps = probe_video(path).fps
    out: list[np.ndarray] = []
    gen = iter_frames(path)
    try:
        for frame in gen:
            out.append(frame)
            if max_frames is not None and len(out) >= max_frames:
                break
    finally:
        gen.close()  # stop early without running the truncation check on a partial read
    return np.stack(out), fps


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read container metadata of ``path`` without decoding pixels -> :class:`VideoInfo`."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        fps = _stream_fps(stream)
        frames = int(stream.frames or 0)
        if frames == 0:
            # mkv/webm do not store a frame count: count packets (demux only, no decode).
            try:
                frames = sum(1 for pkt in container.demux(stream) if pkt.size > 0)
            except av.FFmpegError as e:
                raise VideoDecodeError(path, f"demuxing failed ({e})") from e
        if stream.duration is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = frames / fps
        ctx = stream.codec_context
        if ctx.width <= 0 or ctx.height <= 0:
            raise VideoDecodeError(path, f"invalid frame size {ctx.width}x{ctx.height}")
        return VideoInfo(frames=frames, fps=fps, height=ctx.height, width=ctx.width,
                         duration=duration, codec=ctx.name)
    finally:
        container.close()
