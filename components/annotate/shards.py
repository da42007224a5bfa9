"""Annotated clips as webdataset tar shards: the training data loader's input.

Layout of ``<shard_dir>``:
- ``shard-000000.tar``, ``shard-000001.tar``, ...: one sample per clip, keyed by the clip id:
  ``<id>.mp4`` (the H.264 clip, bytes as ingested), ``<id>.poses.npz`` (``c2w`` (N,4,4) f64, ``intrinsics``
  (N,3,3) f64, ``fps`` f64, ``confidence`` f64), ``<id>.json`` (``scores``, ``caption`` ("" unless a captioner
  ran), ``kind``, ``metric``, ...);
- ``manifest.jsonl``: every clip seen, kept or not, with ``status`` (kept | dropped | failed), ``reason``
  and, for kept clips, the ``shard`` it went to.

webdataset groups tar members by the part of the name before the FIRST dot, so clip ids must not contain
dots. Every file is written to a temp name in the same directory and renamed, so a crash never leaves a
half-written shard under a final name.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import webdataset as wds

from model.atomic import atomic_path
from model.video_io import decode_mp4

__all__ = ["ShardSample", "iter_shard_samples", "poses_npz_bytes", "write_manifest", "write_shards"]


@dataclass
class ShardSample:
    """One kept clip: ``id`` (no dots or slashes), ``mp4`` bytes, ``poses`` dict (c2w (N,4,4),
    intrinsics (N,3,3), fps, confidence) and ``meta`` (JSON-serialisable: scores, caption, kind, ...)."""

    id: str
    mp4: bytes
    poses: dict
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.id or any(c in self.id for c in "./\\") or self.id.startswith("_"):
            raise ValueError(f"clip id {self.id!r} is not a valid shard key (no '.', '/', '\\', leading '_')")
        missing = {"c2w", "intrinsics", "fps", "confidence"} - set(self.poses)
        if missing:
            raise ValueError(f"poses of clip {self.id!r} lack {sorted(missing)}")


def poses_npz_bytes(c2w: np.ndarray, intrinsics: np.ndarray, fps: float, confidence: float) -> bytes:
    """Serialise one clip's poses to .npz bytes (c2w (N,4,4) f64, intrinsics (N,3,3) f64, fps, confidence)."""
    buf = io.BytesIO()
    np.savez(buf, c2w=np.asarray(c2w, np.float64), intrinsics=np.asarray(intrinsics, np.float64),
             fps=np.float64(fps), confidence=np.float64(confidence))
    return buf.getvalue()


def write_shards(samples: Iterable[ShardSample], shard_dir: str | os.PathLike, shard_size: int = 16) -> list[Path]:
    """Write samples into ``shard-%06d.tar`` files of at most ``shard_size`` samples each.

    Old ``shard-*.tar`` files in ``shard_dir`` beyond the new count are removed so the directory always
    describes one run. Returns the shard paths in order.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    out = Path(shard_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    batch: list[ShardSample] = []

    def flush() -> None:
        path = out / f"shard-{len(paths):06d}.tar"
        with atomic_path(path) as tmp, wds.TarWriter(str(tmp)) as sink:
            for s in batch:
                sink.write({
                    "__key__": s.id,
                    "mp4": s.mp4,
                    "poses.npz": poses_npz_bytes(**{k: s.poses[k] for k in ("c2w", "intrinsics", "fps", "confidence")}),
                    "json": json.dumps(s.meta, sort_keys=True).encode(),
                })
        paths.append(path)
        batch.clear()

    seen: set[str] = set()
    for s in samples:
        if s.id in seen:
            raise ValueError(f"duplicate clip id {s.id!r} in shard samples")
        seen.add(s.id)
        batch.append(s)
        if len(batch) == shard_size:
            flush()
    if batch:
        flush()
    keep = {p.name for p in paths}
    for old in out.glob("shard-*.tar"):
        if old.name not in keep:
            old.unlink()
    return paths


def write_manifest(rows: Iterable[dict], shard_dir: str | os.PathLike) -> Path:
    """Write ``manifest.jsonl`` (one JSON object per clip: id, status, reason, ...) atomically."""
    from components.ingest.sources import write_manifest as write_jsonl  # the same atomic JSON-lines writer

    return write_jsonl(rows, Path(shard_dir) / "manifest.jsonl")


def _every_shard(urls):
    return urls


def iter_shard_samples(shard_dir: str | os.PathLike, decode: bool = True) -> Iterator[dict]:
    """Iterate the samples of every ``shard-*.tar`` in ``shard_dir`` (sorted, deterministic order).

    Yields dict(id, frames uint8 (N,H,W,3) (None when ``decode`` is False), c2w (N,4,4) f64,
    intrinsics (N,3,3) f64, fps float, confidence float, meta dict). Raises ValueError when the directory
    has no shards or a sample misses a member.
    """
    shards = sorted(Path(shard_dir).glob("shard-*.tar"))
    if not shards:
        raise ValueError(f"no shard-*.tar files in {str(shard_dir)!r}")
    # nodesplitter: every reader sees every shard; rank-splitting is the training loader's job (and
    # webdataset's default splitter refuses to run under torchrun, where RANK/WORLD_SIZE are set).
    ds = wds.WebDataset([str(p) for p in shards], shardshuffle=False, empty_check=False,
                        nodesplitter=_every_shard)
    for s in ds:
        key = s["__key__"]
        missing = {"mp4", "poses.npz", "json"} - set(s)
        if missing:
            raise ValueError(f"shard sample {key!r} lacks {sorted(missing)}")
        with np.load(io.BytesIO(s["poses.npz"])) as z:
            c2w, K, fps, conf = z["c2w"], z["intrinsics"], float(z["fps"]), float(z["confidence"])
        yield {
            "id": key,
            "frames": decode_mp4(s["mp4"], f"shard sample {key!r}") if decode else None,
            "c2w": c2w,
            "intrinsics": K,
            "fps": fps,
            "confidence": conf,
            "meta": json.loads(s["json"]),
        }
