"""Batch annotation of a raw clip directory into shards: filters -> poses -> shards + manifest.

Raw directory (components.ingest's output): ``manifest.jsonl`` (one row per clip with ``id`` and ``path``,
optionally ``kind``) + ``<id>.mp4`` + optional ``<id>.npz`` carrying ``depth`` (N,H,W) metres and/or
``intrinsics``. The scale source per clip: sensor depth from the npz, else the configured monocular depth
model, else scale-free (flagged ``metric: false``).

Resumability: every clip's result is cached under ``cache_dir/<key>.npz`` + ``<key>.json`` where ``key`` is a
SHA-256 of the clip's bytes (video + npz) and the estimator config. The json is written last and is the
commit marker, so a killed run leaves no half result; a rerun skips every clip whose key is cached, and
only re-packs the shards (cheap). A video that cannot be decoded fails that clip (status ``failed`` with
the reason) and never the batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import json
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from components.annotate.poses import PoseEstimatorConfig, estimate_poses
from components.annotate.shards import ShardSample, write_manifest, write_shards
from model.atomic import atomic_path, write_bytes

__all__ = ["BatchConfig", "annotate_clip", "clip_cache_key", "run_batch"]

_CACHE_VERSION = "annotate-v2"  # bump when the result format or the estimator's semantics change


@dataclass
class BatchConfig:
    """Batch options. ``depth_model_path``: local transformers metric-depth checkpoint used for clips without
    sensor depth (None: those clips are annotated scale-free). ``use_filters``: run components.ingest.filters
    when that module exists. ``cache_dir`` defaults to ``<out>/.cache``."""

    workers: int = 2
    shard_size: int = 16
    cache_dir: str | None = None
    depth_model_path: str | None = None
    use_filters: bool = True
    progress: bool = True
    estimator: PoseEstimatorConfig = field(default_factory=PoseEstimatorConfig)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"BatchConfig.workers must be >= 1, got {self.workers}")
        if self.shard_size < 1:
            raise ValueError(f"BatchConfig.shard_size must be >= 1, got {self.shard_size}")


def clip_cache_key(video: Path, npz: Path | None, cfg: BatchConfig) -> str:
    """SHA-256 over the clip's content and everything that changes its result."""
    h = hashlib.sha256()
    h.update(_CACHE_VERSION.encode())
    est = dataclasses.asdict(cfg.estimator)
    est.pop("focal_split_workers")  # how many processes map the focal check's groups: same poses for any count
    h.update(json.dumps(est, sort_keys=True).encode())
    h.update(str(cfg.depth_model_path).encode())
    h.update(str(cfg.use_filters and _filters_module() is not None).encode())
    for p in (video, npz):
        if p is not None and p.exists():
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        h.update(b"|")
    return h.hexdigest()


def _filters_module():
    """components.ingest.filters when present (score_clip, apply_filters), else None."""
    if importlib.util.find_spec("components.ingest") is None:
        return None
    if importlib.util.find_spec("components.ingest.filters") is None:
        return None
    return importlib.import_module("components.ingest.filters")


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def annotate_clip(clip_id: str, video: Path, npz: Path | None, cfg: BatchConfig, cache_dir: Path) -> dict:
    """Annotate one clip (or return its cached record). Returns a manifest record:
    id, status (kept|dropped|failed), reason, key, cached (bool), scores, confidence, metric, num_frames.
    Poses of kept clips are in ``cache_dir/<key>.npz``. Never raises on bad clip data.
    """
    from model.video_io import read_video  # the ingest package owns decoding

    try:
        key = clip_cache_key(video, npz, cfg)
    except OSError as e:
        return {"id": clip_id, "status": "failed", "reason": f"cannot read clip files: {e}", "cached": False}
    rec_path = cache_dir / f"{key}.json"
    if rec_path.exists():
        rec = json.loads(rec_path.read_text())
        rec["cached"] = True
        return rec
    rec: dict = {"id": clip_id, "key": key, "status": "failed", "reason": "", "scores": {}}
    try:
        frames, fps = read_video(video)
        rec["num_frames"] = len(frames)
        filters = _filters_module() if cfg.use_filters else None
        if filters is not None:
            scores = filters.score_clip(frames, fps)
            keep, reason = filters.apply_filters(scores, None)  # None: the filter module's defaults
            rec["scores"] = _jsonable(scores)
            if not keep:
                rec.update(status="dropped", reason=str(reason or "filtered"))
                write_bytes(rec_path, json.dumps(rec, sort_keys=True).encode())
                rec["cached"] = False
                return rec
        depth = K = None
        if npz is not None and npz.exists():
            with np.load(npz) as z:
                depth = z["depth"] if "depth" in z.files else None
                K = z["intrinsics"] if "intrinsics" in z.files else None
        if depth is not None and len(depth) != len(frames):
            raise ValueError(f"depth has {len(depth)} frames but the video has {len(frames)}")
        if K is not None and K.ndim == 3 and len(K) != len(frames):
            raise ValueError(f"intrinsics have {len(K)} frames but the video has {len(frames)}")
        depth_model = None
        if depth is None and cfg.depth_model_path:
            from components.annotate.depth import load_hf_depth_model

            depth_model = load_hf_depth_model(cfg.depth_model_path)
        res = estimate_poses(frames, fps, intrinsics=K, depth=depth, depth_model=depth_model,
                             scale_free=depth is None and depth_model is None, config=cfg.estimator)
        buf_path = cache_dir / f"{key}.npz"
        with atomic_path(buf_path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, c2w=res.c2w, intrinsics=res.intrinsics, fps=np.float64(res.fps),
                     confidence=np.float64(res.confidence), registered=res.registered)
        unreg = {str(i): r for i, r in enumerate(res.unregistered_reason) if r}
        rec.update(status="kept", confidence=res.confidence, metric=res.metric, scale_source=res.scale_source,
                   intrinsics_source=res.intrinsics_source, focal_confidence=res.focal_confidence,
                   focal_px=float(res.intrinsics[0, 0, 0]), registered_fraction=float(res.registered.mean()),
                   unregistered=unreg, shot_starts=list(res.shot_starts),
                   reprojection_rmse_px=res.diagnostics.get("reprojection_rmse_px"),
                   focal_fallback=res.diagnostics.get("focal_fallback", ""))
    except ValueError as e:  # VideoDecodeError is a ValueError; so are bad shapes in a clip's npz
        rec.update(status="failed", reason=f"{type(e).__name__}: {e}")
    except Exception as e:  # noqa: BLE001 - one bad clip must never stop a batch; the reason is recorded
        rec.update(status="failed", reason=f"{type(e).__name__}: {e}")
    write_bytes(rec_path, json.dumps(_jsonable(rec), sort_keys=True).encode())
    rec["cached"] = False
    return rec


def _worker(args):
    import cv2

    cv2.setNumThreads(1)  # processes already give the parallelism; nested OpenCV threads oversubscribe
    return annotate_clip(*args)


def _read_raw_manifest(raw: Path) -> list[dict]:
    path = raw / "manifest.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"raw directory {str(raw)!r} has no manifest.jsonl")
    rows = []
    for i, line in enumerate(path.read_text().splitlines()):
        if line.strip():
            row = json.loads(line)
            if "id" not in row:
                raise ValueError(f"{path}:{i + 1}: manifest row has no 'id'")
            # Ingest lists its failed/dropped inputs too (no video behind them): only ok clips are work.
            if row.get("status", "ok") != "ok":
                continue
            rows.append(row)
    return rows


def run_batch(raw_dir: str | os.PathLike, out_dir: str | os.PathLike, cfg: BatchConfig | None = None,
              captioner=None, ids: Sequence[str] | None = None) -> dict:
    """Annotate every clip listed in ``raw_dir/manifest.jsonl`` and write shards + manifest to ``out_dir``.

    ``captioner``: optional callable (frames uint8 (N,H,W,3), fps) -> str, run on kept clips when packing.
    ``ids``: annotate only these clips (one group of ``components.annotate.fanout``'s plan), in manifest
    order; an id the manifest lacks is a ValueError.
    With ``cfg.workers > 1`` the workers come from a forkserver: as with spawn, a script that calls this
    needs the ``if __name__ == "__main__":`` guard (the package CLIs and KFP executors have it).
    Returns a summary dict(kept, dropped, failed, computed, cached, shards, records).
    """
    cfg = cfg or BatchConfig()
    raw, out = Path(raw_dir), Path(out_dir)
    rows = _read_raw_manifest(raw)
    if ids is not None:
        if not ids:
            raise ValueError("ids is empty: pass None for every clip, or at least one clip id")
        unknown = sorted(set(ids) - {r["id"] for r in rows})
        if unknown:
            raise ValueError(f"ids {unknown} are not in {raw / 'manifest.jsonl'}")
        wanted = set(ids)
        rows = [r for r in rows if r["id"] in wanted]
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else out / ".cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    if cfg.workers > 1 and len(rows) > 1:
        # Clips already run side by side: a clip's focal check maps its track groups in its own process
        # (a lone clip keeps the estimator's focal_split_workers: the CLI passes --workers there).
        cfg = dataclasses.replace(cfg, estimator=dataclasses.replace(cfg.estimator, focal_split_workers=1))
    jobs = []
    for row in rows:
        video = raw / row.get("path", f"{row['id']}.mp4")
        npz_name = row.get("annotation", f"{row['id']}.npz")
        npz = raw / npz_name if (raw / npz_name).exists() else None
        jobs.append((row["id"], video, npz, cfg, cache_dir))
    if cfg.workers == 1 or len(jobs) <= 1:
        records = [_worker(j) for j in tqdm(jobs, disable=not cfg.progress, desc="annotate")]
    else:
        # forkserver, not fork: a forked child of a process whose OpenMP pool (torch, OpenCV) or other threads
        # already ran can hang for ever on a lock held at fork time (seen in the suite's worker processes).
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        with ProcessPoolExecutor(max_workers=cfg.workers, mp_context=ctx) as pool:
            records = list(tqdm(pool.map(_worker, jobs), total=len(jobs), disable=not cfg.progress, desc="annotate"))
    by_id = {r["id"]: r for r in rows}
    samples, manifest = [], []
    for rec in records:
        row = by_id[rec["id"]]
        entry = {k: rec.get(k) for k in ("id", "status", "reason", "key", "confidence", "metric", "scores")}
        entry["kind"] = row.get("kind", "")
        if rec["status"] == "kept":
            sample = _load_sample(rec, row, raw, cache_dir, captioner)
            entry["shard"] = len(samples) // cfg.shard_size
            samples.append(sample)
        manifest.append(entry)
    shards = write_shards(samples, out, cfg.shard_size)
    write_manifest(manifest, out)
    count = {s: sum(r["status"] == s for r in records) for s in ("kept", "dropped", "failed")}
    return {**count, "computed": sum(not r["cached"] for r in records), "cached": sum(r["cached"] for r in records),
            "shards": [str(p) for p in shards], "records": records}


def _load_sample(rec: dict, row: dict, raw: Path, cache_dir: Path, captioner) -> ShardSample:
    video = raw / row.get("path", f"{rec['id']}.mp4")
    with np.load(cache_dir / f"{rec['key']}.npz") as z:
        poses = {k: z[k] for k in ("c2w", "intrinsics", "fps", "confidence")}
    caption = ""
    if captioner is not None:
        from model.video_io import read_video

        frames, fps = read_video(video)
        caption = str(captioner(frames, fps))
    # Calibration and registration travel with the clip: scale-free (metric False) and self-calibrated
    # clips are labelled so the training step can weigh or skip them.
    meta = {"scores": rec.get("scores", {}), "caption": caption, "kind": row.get("kind", ""),
            "metric": rec.get("metric"), "confidence": rec.get("confidence"), "source": row.get("source", ""),
            **{k: rec.get(k) for k in ("scale_source", "intrinsics_source", "focal_confidence", "focal_px", "registered_fraction",
                                       "unregistered", "shot_starts", "reprojection_rmse_px",
                                       "focal_fallback")}}
    return ShardSample(id=rec["id"], mp4=video.read_bytes(), poses=poses, meta=meta)
