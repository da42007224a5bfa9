"""Training data: annotated clips -> (VAE latents, camera poses, text features), cached per clip.

Encoding a clip with the VAE is the expensive part on CPU (~0.7 s for 9x64x64 with the tiny Wan VAE),
so each clip's latents are cached on disk as safetensors keyed by a hash of (clip pixels, poses, the
VAE's weights, target size and frame count): a retrain over the same shards with the same VAE reads the
cache; any change to the VAE or the stage's clip length misses it. Text features are cached the same way.

The sampler is a deterministic epoch permutation with a ``state_dict`` (epoch, position), which is what
lets a resumed run draw exactly the batches the uninterrupted run would have drawn.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from model.camera import CameraCondition, camera_condition, rescale_intrinsics
from model.config import WorldModelConfig


@dataclass
class ClipItem:
    """One training clip, ready for the network.

    Attributes:
        latents: (C, F, h, w) normalised VAE latents.
        c2w: (N, 4, 4) float64 camera-to-world per raw frame, N = 1 + t_stride*(F-1).
        intrinsics: (N, 3, 3) float64 pixel intrinsics at the model's video size.
        text: (L, Dt) caption features; text_mask: (L,) bool.
        clip_id: the shard sample id.
    """

    latents: torch.Tensor
    c2w: torch.Tensor
    intrinsics: torch.Tensor
    text: torch.Tensor
    text_mask: torch.Tensor
    clip_id: str


@dataclass
class Batch:
    """A training batch. x0 (B,C,F,h,w); camera with plucker (B,F,6ts,h,w) / rays (B,F,S,4,4); text (B,L,Dt)."""

    x0: torch.Tensor
    camera: CameraCondition
    text: torch.Tensor
    text_mask: torch.Tensor


def synthetic_samples(n: int, num_frames: int, height: int = 64, width: int = 64, seed: int = 0) -> list[dict]:
    """``n`` clips in the shard-reader schema (id, frames uint8 (N,H,W,3), c2w (N,4,4), intrinsics (N,3,3),
    fps, meta) showing a textured plane seen by a camera moving forward/sideways.

    Used by tests and the smoke demo when no shards exist; the camera motion is visible in the pixels
    (the texture scrolls with the translation), so a model can learn the camera-content link.
    """
    g = np.random.default_rng(seed)
    out = []
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(n):
        freq = g.uniform(0.05, 0.2, size=3)
        phase = g.uniform(0, 2 * np.pi, size=3)
        vel = g.uniform(-1.5, 1.5, size=2)  # pixels of texture scroll per frame
        frames = np.empty((num_frames, height, width, 3), np.uint8)
        c2w = np.tile(np.eye(4), (num_frames, 1, 1))
        for t in range(num_frames):
            sx, sy = vel * t
            for c in range(3):
                v = np.sin(freq[c] * (xx + sx) + phase[c]) * np.cos(freq[(c + 1) % 3] * (yy + sy) + phase[c])
                frames[t, :, :, c] = np.clip(127.5 + 120 * v, 0, 255).astype(np.uint8)
            c2w[t, 0, 3], c2w[t, 1, 3] = 0.05 * sx, 0.05 * sy
        f = 0.8 * width
        K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float64)
        out.append({"id": f"synthetic-{seed}-{i:04d}", "frames": frames, "c2w": c2w,
                        "intrinsics": np.tile(K, (num_frames, 1, 1)), "fps": 8.0,
                        "meta": {"caption": f"a textured wall, camera drifting {'left' if vel[0] < 0 else 'right'}"}})
    return out


def iter_samples(shards: str | Path) -> Iterator[dict]:
    """Annotated shard samples (``components.annotate.shards.iter_shard_samples``), with a clear error."""
    path = Path(shards)
    if not path.is_dir():
        raise FileNotFoundError(f"shards directory {str(path)!r} does not exist")
    from components.annotate.shards import iter_shard_samples

    # webdataset refuses to iterate when RANK/WORLD_SIZE say "multi-node" unless a node splitter is given;
    # every rank wants every clip here (EpochSampler shards the batches), so read as a single node.
    saved = {k: os.environ.pop(k) for k in ("RANK", "WORLD_SIZE") if k in os.environ}
    try:
        samples = list(iter_shard_samples(path))
    finally:
        os.environ.update(saved)
    yield from samples


def fit_latent_frames(samples: list[dict], temporal_stride: int, cap: int) -> int:
    """The most latent frames (at most ``cap``) that EVERY clip can supply: F with 1 + ts·(F−1) ≤ the
    shortest clip. Steps that take ``--latent-frames`` default to this so they fit whatever clip length the
    data was cut at, instead of failing on a hard-coded size."""
    if not samples:
        raise ValueError("no clips in the shards")
    shortest = min(int(s["c2w"].shape[0]) for s in samples)
    if shortest < 1 + temporal_stride:
        raise ValueError(f"the shortest clip has {shortest} frames; at least {1 + temporal_stride} "
                         f"(2 latent frames at temporal stride {temporal_stride}) are needed")
    return max(2, min(cap, 1 + (shortest - 1) // temporal_stride))


def _module_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha1()
    # named_buffers adds non-persistent buffers (VideoVAE's latent mean/std): new statistics change latents
    for k, v in sorted({**dict(module.named_buffers()), **module.state_dict()}.items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
    os.replace(tmp, path)


def _caption(sample: dict) -> str:
    meta = sample.get("meta") or {}
    cap = meta.get("caption") if isinstance(meta, dict) else None
    return str(cap) if cap else ""


def prepare_clip(sample: dict, cfg: WorldModelConfig, latent_frames: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Cut the first N raw frames of a sample and resize to the model's video size.

    Returns pixels (1,3,N,H,W) in [-1,1], c2w (N,4,4) and intrinsics (N,3,3) rescaled to (H,W).
    Raises ``ValueError`` naming the clip when it is too short.
    """
    n = cfg.vae.num_raw_frames(latent_frames)
    frames = np.asarray(sample["frames"])
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"clip {sample.get('id')!r}: frames must be (N,H,W,3) uint8, got {frames.shape}")
    if frames.shape[0] < n:
        raise ValueError(f"clip {sample.get('id')!r} has {frames.shape[0]} frames, the stage needs {n} "
                         f"(= 1 + {cfg.vae.temporal_stride}*({latent_frames}-1))")
    src_hw = frames.shape[1:3]
    dst_hw = (cfg.video_height, cfg.video_width)
    px = torch.from_numpy(frames[:n]).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (N,3,H,W)
    if tuple(src_hw) != dst_hw:
        # Plain resize (no crop): anisotropic scaling is exact for pinhole intrinsics (fx, fy scale apart).
        px = F.interpolate(px, size=dst_hw, mode="bilinear", align_corners=False, antialias=True)
    K = rescale_intrinsics(np.asarray(sample["intrinsics"][:n], np.float64), src_hw, dst_hw)
    return px.permute(1, 0, 2, 3).unsqueeze(0).clamp(-1, 1), np.asarray(sample["c2w"][:n], np.float64), K.numpy()


class ClipLatentDataset:
    """In-memory list of ``ClipItem`` built from shard samples through the VAE and text encoder.

    Args:
        samples: iterable of shard-reader dicts (see ``iter_samples`` / ``synthetic_samples``).
        cfg: the model config (video size, VAE strides).
        latent_frames: F per clip for this stage; clips shorter than needed are skipped (counted).
        vae: object with ``encode(pixels (B,3,N,H,W)) -> (B,C,F,h,w)``.
        text_encoder: object with ``encode(list[str]) -> (feats (B,L,D), mask (B,L))``.
        cache_dir: where per-clip safetensors are cached (None disables caching).
    """

    def __init__(self, samples: Iterable[dict], cfg: WorldModelConfig, latent_frames: int, vae: Any,
                 text_encoder: Any, cache_dir: str | Path | None = None):
        self.cfg = cfg
        self.items: list[ClipItem] = []
        self.skipped: list[str] = []
        self.cache_hits = 0
        vae_key = _module_digest(vae) if isinstance(vae, torch.nn.Module) else type(vae).__name__
        cache = Path(cache_dir) if cache_dir else None
        for s in samples:
            try:
                px, c2w, K = prepare_clip(s, cfg, latent_frames)
            except ValueError as e:
                self.skipped.append(str(e))
                continue
            cap = _caption(s)
            h = hashlib.sha1()
            for part in (px.numpy().tobytes(), c2w.tobytes(), K.tobytes(), vae_key.encode(), cap.encode(),
                         repr((cfg.video_height, cfg.video_width, latent_frames, cfg.text)).encode()):
                h.update(part)
            path = cache / f"{h.hexdigest()}.safetensors" if cache else None
            if path is not None and path.exists():
                t = load_file(str(path))
                self.cache_hits += 1
            else:
                lat = vae.encode(px)[0].float()
                feats, mask = text_encoder.encode([cap])
                t = {"latents": lat, "text": feats[0].float(), "text_mask": mask[0].bool()}
                if path is not None:
                    _atomic_save(t, path)
            self.items.append(ClipItem(t["latents"], torch.from_numpy(c2w), torch.from_numpy(K), t["text"],
                                       t["text_mask"].bool(), str(s.get("id"))))
        if not self.items:
            raise ValueError(f"no usable clips for {latent_frames} latent frames "
                             f"({len(self.skipped)} skipped; first reason: {self.skipped[:1]})")

    def __len__(self) -> int:
        return len(self.items)

    def collate(self, idx: list[int]) -> Batch:
        """Stack items ``idx`` into a ``Batch`` (camera condition computed here, it is cheap)."""
        its = [self.items[i] for i in idx]
        c2w = torch.stack([it.c2w for it in its])
        K = torch.stack([it.intrinsics for it in its])
        cam = camera_condition(c2w, K, (self.cfg.video_height, self.cfg.video_width), self.cfg.latent_hw,
                               self.cfg.vae.temporal_stride, dtype=torch.float32)
        return Batch(torch.stack([it.latents for it in its]), cam, torch.stack([it.text for it in its]),
                     torch.stack([it.text_mask for it in its]))


class EpochSampler:
    """Deterministic shuffled batches over ``n`` items with resumable (epoch, position) state.

    Each epoch is a permutation drawn from ``seed + epoch``; a batch wraps into the next epoch when the
    current one runs out, so every batch has exactly ``batch_size`` items (``rank``/``world`` take a
    strided share for data parallelism).
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1):
        if n < 1:
            raise ValueError(f"EpochSampler needs at least one item, got n={n}")
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.epoch, self.pos = 0, 0

    def _perm(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def next_batch(self, batch_size: int) -> list[int]:
        """Indices of this rank's next batch (global batch = batch_size * world)."""
        need = batch_size * self.world
        out: list[int] = []
        while len(out) < need:
            perm = self._perm()
            take = perm[self.pos:self.pos + need - len(out)]
            out += take
            self.pos += len(take)
            if self.pos >= self.n:
                self.epoch, self.pos = self.epoch + 1, 0
        return out[self.rank::self.world]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])


def write_synthetic_shards(shard_dir: str | Path, n: int, num_frames: int, height: int = 64, width: int = 64,
                           seed: int = 0) -> Path:
    """Write ``synthetic_samples`` as annotated shards (``components.annotate.shards.write_shards``).

    For tests and the offline demo: exercises the real shard format end to end without the annotator.
    """
    from components.annotate.shards import ShardSample, write_shards
    from model.video_io import encode_mp4

    rows = []
    for s in synthetic_samples(n, num_frames, height, width, seed):
        rows.append(ShardSample(id=s["id"], mp4=encode_mp4(s["frames"], s["fps"], crf=10),
                                poses={"c2w": s["c2w"], "intrinsics": s["intrinsics"], "fps": s["fps"],
                                       "confidence": 1.0},
                                meta=s["meta"]))
    write_shards(rows, shard_dir)
    return Path(shard_dir)
