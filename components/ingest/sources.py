"""Ingest real videos: folders, manifests or URLs -> shot-split, resampled, overlapping clips.

Per input video (mp4, mov, webm, mkv, ... anything the bundled FFmpeg decodes):

1. fetch it if it is a URL (``s3://``, ``gs://``, ``http(s)://``, ``memory://`` ... through fsspec; a
   scheme whose fsspec backend is not installed fails that input with the install hint);
2. split it into shots with PySceneDetect's ``ContentDetector`` (hard cuts would otherwise teach the
   model that the camera teleports);
3. stream-decode it, resampling each shot to ``IngestConfig.fps`` by picking the source frame nearest
   to each target time (from PTS, so variable-frame-rate sources work);
4. cut each shot into windows of ``clip_frames`` frames overlapping by ``overlap`` frames (paper: 961
   frames at 16 fps = 60 s, overlap 640), optionally resize, optionally score and filter them
   (:mod:`components.ingest.filters`), and write them as H.264 mp4.

Only one window of frames is held in memory, so hour-long sources ingest in bounded memory.
A failing input (corrupt, truncated, unreadable, unsupported scheme) is recorded in the manifest as
``status="failed"`` with a ``reason`` and never stops the batch; its partial clips are removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from tqdm.auto import tqdm

from components.ingest.filters import FilterConfig, apply_filters, score_clip
from model.video_io import VideoDecodeError, iter_timed_frames, probe_video, write_video

__all__ = [
    "VIDEO_EXTENSIONS",
    "IngestConfig",
    "ingest_videos",
    "read_manifest",
    "resolve_sources",
    "write_manifest",
]

VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v")
_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


@dataclass(frozen=True)
class IngestConfig:
    """How videos become clips.

    ``fps``: output frame rate. ``clip_frames``: frames per clip; ``overlap``: frames shared by
    consecutive clips of one shot (stride = clip_frames - overlap). ``min_clip_frames``: a shot (or
    a shot's tail) shorter than a full clip still yields one clip if it has at least this many new
    frames; None means only full clips. ``split_shots`` with ``shot_threshold`` / ``min_shot_frames``
    are PySceneDetect ContentDetector settings. ``resize``: (height, width) of output clips, or None to
    keep the source size (cropped to even sizes for yuv420p). ``filters``: score every clip and drop
    the ones :func:`~components.ingest.filters.apply_filters` rejects (recorded as ``status="dropped"``).
    """

    fps: float = 16.0
    clip_frames: int = 961
    overlap: int = 640
    min_clip_frames: int | None = None
    split_shots: bool = True
    shot_threshold: float = 27.0
    min_shot_frames: int = 15
    resize: tuple[int, int] | None = None
    crf: int = 18
    filters: FilterConfig | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise ValueError(f"IngestConfig.fps must be > 0, got {self.fps}")
        if self.clip_frames < 1:
            raise ValueError(f"IngestConfig.clip_frames must be >= 1, got {self.clip_frames}")
        if not 0 <= self.overlap < self.clip_frames:
            raise ValueError(
                f"IngestConfig.overlap must be in [0, clip_frames={self.clip_frames}), got {self.overlap}")
        if self.min_clip_frames is not None and not 1 <= self.min_clip_frames <= self.clip_frames:
            raise ValueError(
                f"IngestConfig.min_clip_frames must be in [1, {self.clip_frames}] or None, got {self.min_clip_frames}")
        if self.resize is not None:
            h, w = self.resize
            if h < 2 or w < 2 or h % 2 or w % 2:
                raise ValueError(f"IngestConfig.resize must be even (height, width) >= 2, got {self.resize}")
        if self.min_shot_frames < 1:
            raise ValueError(f"IngestConfig.min_shot_frames must be >= 1, got {self.min_shot_frames}")


# --------------------------------------------------------------------------------------------------
# Manifests


def write_manifest(rows: Iterable[dict], path: str | os.PathLike) -> Path:
    """Write ``rows`` as JSON lines to ``path`` atomically (temp file in the same dir + rename)."""
    from model.atomic import write_text

    return write_text(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def read_manifest(path: str | os.PathLike, status: str | None = "ok") -> list[dict]:
    """Rows of a ``manifest.jsonl``; only those with ``status`` (rows without one count as "ok"),
    or all rows when ``status`` is None."""
    rows = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e})") from e
            if status is None or row.get("status", "ok") == status:
                rows.append(row)
    return rows


def resolve_sources(sources: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """Expand ``sources`` into a list of video paths/URLs.

    Each item may be a URL, a video file, a directory (searched recursively for
    :data:`VIDEO_EXTENSIONS`), a ``.jsonl`` manifest (rows with ``path`` or ``url``; relative paths
    are relative to the manifest; rows whose status is not "ok" are skipped) or a ``.txt`` list (one
    path/URL per line, ``#`` comments).
    """
    items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    out: list[str] = []
    for item in items:
        s = str(item)
        if _URL_RE.match(s) and not s.startswith("file://"):
            out.append(s)
            continue
        p = Path(s.removeprefix("file://"))
        if p.is_dir():
            out.extend(str(f) for f in sorted(p.rglob("*"))
                       if f.suffix.lower() in VIDEO_EXTENSIONS and f.is_file() and not f.name.startswith("."))
        elif p.suffix.lower() == ".jsonl":
            for row in read_manifest(p, status="ok"):
                ref = row.get("url") or row.get("path")
                if not ref:
                    raise ValueError(f"{p}: manifest row has neither 'path' nor 'url': {row}")
                out.append(ref if _URL_RE.match(ref) else str(p.parent / ref))
        elif p.suffix.lower() == ".txt":
            for line in p.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    out.append(line if _URL_RE.match(line) else str(p.parent / line))
        else:
            # a single file; a missing one is reported per input by ingest_videos, not here
            out.append(str(p))
    return out


# --------------------------------------------------------------------------------------------------
# One input


def _fetch(url: str, tmp_dir: Path) -> Path:
    """Copy a URL to a local temp file via fsspec; clear error when the scheme's backend is missing."""
    import fsspec  # optional: only remote inputs need it

    protocol = url.split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(protocol)
    except (ImportError, ValueError) as e:
        raise RuntimeError(f"cannot read {protocol}:// URLs: {e} (install the fsspec backend, e.g. "
                           f"s3fs, gcsfs, adlfs or aiohttp for http)") from e
    suffix = Path(url.split("?", 1)[0]).suffix or ".mp4"
    local = tmp_dir / f"remote-{hashlib.sha1(url.encode()).hexdigest()[:10]}{suffix}"
    with fsspec.open(url, "rb") as src, open(local, "wb") as dst:
        shutil.copyfileobj(src, dst, length=8 << 20)
    return local


def _shot_starts(path: Path, cfg: IngestConfig) -> list[int]:
    """Frame indices where shots start (always includes 0)."""
    if not cfg.split_shots:
        return [0]
    from scenedetect import ContentDetector, detect  # installed --no-deps; imported where used

    level = av.logging.get_level()
    try:
        scenes = detect(str(path), ContentDetector(threshold=cfg.shot_threshold, min_scene_len=cfg.min_shot_frames),
                        backend="pyav", start_in_scene=True)
    except Exception as e:  # scenedetect raises backend-specific types; report them as decode errors
        raise VideoDecodeError(path, f"shot detection failed ({type(e).__name__}: {e})") from e
    finally:
        # scenedetect's PyAV backend re-installs FFmpeg's default stderr logger process-wide; put
        # PyAV's (silent by default) setting back so later encodes do not spam x264 statistics
        av.logging.set_level(level)
    starts = sorted({0, *(int(s.frame_num) for s, _ in scenes)})
    return starts


def _even_crop(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    return frame[: h - h % 2, : w - w % 2]


def _safe_stem(src: str) -> str:
    stem = Path(src.split("?", 1)[0]).stem or "video"
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem)[:40]
    return f"{stem}-{hashlib.sha1(src.encode()).hexdigest()[:6]}"


class _ShotCutter:
    """Collects resampled frames of one shot and emits overlapping windows."""

    def __init__(self, cfg: IngestConfig) -> None:
        self.cfg = cfg
        self.buf: list[np.ndarray] = []
        self.times: list[float] = []
        self.new = 0  # frames in buf not yet part of an emitted clip
        self.emitted = 0  # resampled frames consumed before buf[0]
        self.total = 0  # resampled frames pushed (the shot's length at cfg.fps)

    def push(self, t: float, frame: np.ndarray):
        """Add one frame; returns (start_index, start_time, frames) when a full window is ready."""
        self.buf.append(frame)
        self.times.append(t)
        self.new += 1
        self.total += 1
        if len(self.buf) < self.cfg.clip_frames:
            return None
        clip = (self.emitted, self.times[0], np.stack(self.buf))
        keep = self.cfg.overlap
        drop = len(self.buf) - keep
        self.buf, self.times = self.buf[drop:], self.times[drop:]
        self.emitted += drop
        self.new = 0
        return clip

    def flush(self):
        """End of shot: a shorter final clip if allowed and it holds enough new frames."""
        m = self.cfg.min_clip_frames
        if m is None or self.new < m or not self.buf:
            return None
        return self.emitted, self.times[0], np.stack(self.buf)


def _ingest_one(src: str, out_dir: Path, cfg: IngestConfig, tmp_dir: Path) -> list[dict]:
    local = _fetch(src, tmp_dir) if _URL_RE.match(src) and not src.startswith("file://") else Path(
        src.removeprefix("file://"))
    info = probe_video(local)  # fails fast on non-video files before the slower shot detection
    starts = _shot_starts(local, cfg)
    stem = _safe_stem(src)
    rows: list[dict] = []
    written: list[Path] = []
    dt = 1.0 / cfg.fps

    def emit(shot: int, k: int, clip) -> None:
        start_idx, start_t, frames = clip
        clip_id = f"{stem}-s{shot:03d}-c{k:03d}"
        row = {"id": clip_id, "source": src, "shot": shot, "clip": k, "start_frame": int(start_idx),
               "start_time": round(float(start_t), 6), "frames": int(frames.shape[0]), "fps": float(cfg.fps),
               "height": int(frames.shape[1]), "width": int(frames.shape[2]),
               "h": int(frames.shape[1]), "w": int(frames.shape[2]), "source_fps": info.fps}
        if cfg.filters is not None:
            scores = score_clip(frames, cfg.fps, cfg.filters)
            keep, reason = apply_filters(scores, cfg.filters)
            row["scores"] = scores
            if not keep:
                rows.append({**row, "path": None, "status": "dropped", "reason": reason})
                return
        path = write_video(frames, out_dir / f"{clip_id}.mp4", cfg.fps, crf=cfg.crf)
        written.append(path)
        rows.append({**row, "path": path.name, "status": "ok", "reason": None})

    shot_lengths: list[int] = []  # resampled frames per shot, for the reason when no clip comes out
    try:
        shot = -1
        cutter = None
        n_clips = 0
        next_t = 0.0
        prev: tuple[float, np.ndarray] | None = None
        for i, (t, frame) in enumerate(iter_timed_frames(local)):
            if cfg.resize is not None:
                frame = cv2.resize(frame, (cfg.resize[1], cfg.resize[0]), interpolation=cv2.INTER_AREA)
            else:
                frame = _even_crop(frame)
            if shot + 1 < len(starts) and i >= starts[shot + 1]:
                if cutter is not None:
                    shot_lengths.append(cutter.total)
                    if (clip := cutter.flush()) is not None:
                        emit(shot, n_clips, clip)
                shot, cutter, n_clips, next_t, prev = shot + 1, _ShotCutter(cfg), 0, t, None
            # nearest-frame resampling: every target time at or before t takes prev or this frame
            while next_t <= t + 1e-9:
                use_prev = prev is not None and (next_t - prev[0]) < (t - next_t)
                chosen = prev[1] if use_prev else frame
                if (clip := cutter.push(next_t, chosen)) is not None:
                    emit(shot, n_clips, clip)
                    n_clips += 1
                next_t += dt
            prev = (t, frame)
        if cutter is not None:
            shot_lengths.append(cutter.total)
            if (clip := cutter.flush()) is not None:
                emit(shot, n_clips, clip)
    except BaseException:
        for p in written:  # a file that fails mid-way must not leave orphan clips behind
            p.unlink(missing_ok=True)
        raise
    if not rows:
        # Never lose an input in silence: say why it gave nothing and how to get clips out of it.
        rows.append({"id": None, "path": None, "source": src, "status": "empty", "shots": len(shot_lengths),
                     "shot_frames": shot_lengths, "reason": _no_clip_reason(shot_lengths, cfg)})
    return rows


def _no_clip_reason(shot_lengths: list[int], cfg: IngestConfig) -> str:
    """One line: why an input with these shot lengths (frames at cfg.fps) yielded no clip."""
    if not shot_lengths or max(shot_lengths) == 0:
        return "no decodable frames"
    longest = max(shot_lengths)
    need = cfg.clip_frames if cfg.min_clip_frames is None else cfg.min_clip_frames
    return (f"all {len(shot_lengths)} shots are shorter than {need} frames at {cfg.fps:g} fps (longest {longest}); "
            f"pass --min-clip-frames N with N <= {longest} (IngestConfig.min_clip_frames) to keep shorter shots, "
            f"or --no-shot-split")


def ingest_videos(sources, out_dir: str | os.PathLike, cfg: IngestConfig | None = None) -> list[dict]:
    """Ingest ``sources`` (see :func:`resolve_sources`) into clips under ``out_dir``.

    Writes ``<out_dir>/<id>.mp4`` per kept clip and ``<out_dir>/manifest.jsonl`` with one row per clip
    (id, path relative to out_dir, frames, fps, height, width, h, w, source, shot, clip, start_frame,
    start_time, status="ok") plus rows for dropped clips (status="dropped", reason, scores), failed
    inputs (status="failed", reason, source) and inputs that decoded but yielded no clip (status="empty",
    reason, shots, shot_frames), so every input has at least one row. Returns the same rows. Readers of the manifest should
    keep ``status == "ok"`` rows (:func:`read_manifest` does by default).
    """
    cfg = cfg or IngestConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    srcs = resolve_sources(sources)
    rows: list[dict] = []
    tmp_dir = Path(tempfile.mkdtemp(prefix=".fetch-", dir=out))
    try:
        for src in tqdm(srcs, desc="ingest", unit="video", disable=not cfg.progress):
            try:
                rows.extend(_ingest_one(src, out, cfg, tmp_dir))
            except Exception as e:  # noqa: BLE001  one bad input never fails the batch; reason recorded
                rows.append({"id": None, "path": None, "source": src, "status": "failed",
                             "reason": f"{type(e).__name__}: {e}"})
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    write_manifest(rows, out / "manifest.jsonl")
    return rows
