"""``WorldModelPipeline``: image + camera trajectory (+ prompt) -> video, and the model bundle format.

The pipeline owns the glue the network does not: input validation, VAE encode of the conditioning
image (latent frame 0), text features, the camera condition, the sampling loop (``model.sampling``) and
the VAE decode. Three modes (DESIGN.md §4): ``bidirectional`` (offline, best quality), ``streaming``
(chunk-causal autoregressive, constant memory) and ``few_step`` (the distilled student).

Bundle layout (docs/INTERFACES.md), written atomically (temp directory + rename), never pickled:
    config.json     WorldModelConfig.to_json()
    network/        safetensors (sharded past 5 GB) of the SanaWM state dict
    vae/            the diffusers VAE config.json + safetensors
    metadata.json   {"format", "format_version", "package_version", "kind", "info"}
The text encoder is frozen and external (the MiniLM package or ``cfg.text.pretrained_path``), so the
bundle does not copy it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from model.camera import camera_condition, validate_trajectory
from model.checkpoint import atomic_directory, load_into, write_state_dict
from model.config import WorldModelConfig
from model.encoders import VideoVAE, build_text_encoder, build_vae
from model.encoders.vae import load_vae
from model.sampling import Conditioning, sample_bidirectional, sample_chunk_causal, sample_few_step

__all__ = ["BUNDLE_FORMAT", "BUNDLE_FORMAT_VERSION", "WorldModelPipeline", "generate_to_file"]

BUNDLE_FORMAT = "sana-wm-bundle"
BUNDLE_FORMAT_VERSION = 1
Mode = Literal["streaming", "bidirectional", "few_step"]
MODES = ("streaming", "bidirectional", "few_step")


def sampler_mode_of(metadata: dict[str, Any] | None) -> str:
    """How a bundle samples when nobody says: ``few_step`` for a distilled student (``kind`` "student",
    ``info.sampler_mode`` "few_step", or a quantized bundle not made from a teacher: the DAG quantizes the
    student, and the quantize step records ``info.source_kind``), else ``streaming`` (a teacher, quantized
    or not)."""
    meta = metadata or {}
    info = meta.get("info") or {}
    distilled = (meta.get("kind") == "student" or info.get("sampler_mode") == "few_step"
                 or (meta.get("kind") == "quantized" and info.get("source_kind") != "teacher"))
    return "few_step" if distilled else "streaming"


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sana-wm-stack")
    except PackageNotFoundError:
        return "0+unknown"


def _build_network(config: WorldModelConfig) -> nn.Module:
    from model.network import SanaWM  # imported late: the network is the heaviest import of the package

    return SanaWM(config.network, config.chunks)


class WorldModelPipeline:
    """Camera-controlled image-to-video generation around a ``SanaWM`` network.

    Args:
        config: the ``WorldModelConfig`` everything was built from.
        network: a ``SanaWM`` (or any module with its forward / forward_chunk signature).
        vae: ``VideoVAE`` matching ``config.vae``.
        text_encoder: a ``TextEncoder`` (``encode(list[str]) -> (feats (B,L,D), mask (B,L))``).
        metadata: free-form bundle metadata (kind, info), kept through save/load.
    """

    def __init__(self, config: WorldModelConfig, network: nn.Module, vae: VideoVAE, text_encoder: Any,
                 metadata: dict[str, Any] | None = None):
        self.config = config
        self.network = network.eval()
        self.vae = vae.eval()
        self.text_encoder = text_encoder
        self.metadata = dict(metadata or {})
        self.refiner_dir: Path | None = None  # a bundle's stage-2 refiner (loaded on first use)
        self._refiner = None

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: WorldModelConfig, device: str | torch.device = "cpu",
                    seed: int = 0) -> WorldModelPipeline:
        """Random-weight pipeline; ``seed`` makes the initialisation reproducible without touching the
        caller's global RNG (it runs inside ``torch.random.fork_rng``)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = _build_network(config).to(device)
            vae = build_vae(config.vae, device)
        return cls(config, network, vae, build_text_encoder(config.text, device))

    # ------------------------------------------------------------------ generation
    def _validate(self, image: np.ndarray, c2w: np.ndarray, intrinsics: np.ndarray) -> int:
        cfg = self.config
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
        if image.shape[:2] != (cfg.video_height, cfg.video_width):
            raise ValueError(f"image is {image.shape[0]}x{image.shape[1]} (HxW) but this model generates "
                             f"{cfg.video_height}x{cfg.video_width}; resize it (and its intrinsics) first")
        c2w, intrinsics = np.asarray(c2w), np.asarray(intrinsics)
        if c2w.ndim != 3 or intrinsics.ndim != 3:
            raise ValueError(f"c2w must be (N, 4, 4) and intrinsics (N, 3, 3), got {c2w.shape} and {intrinsics.shape}")
        validate_trajectory(c2w, intrinsics, name="trajectory")
        n, ts = c2w.shape[0], cfg.vae.temporal_stride
        if n < 1 + ts or (n - 1) % ts:
            raise ValueError(f"trajectory has {n} frames; this model needs N = 1 + {ts}*k frames with k >= 1 "
                             f"(e.g. {1 + ts}, {1 + 2 * ts}, ...)")
        return cfg.vae.num_latent_frames(n)

    @torch.no_grad()
    def generate(self, image: np.ndarray, c2w: np.ndarray, intrinsics: np.ndarray, prompt: str = "",
                 seed: int = 0, mode: Mode = "streaming", num_steps: int | None = None,
                 guidance_scale: float | None = None, progress: bool = False, refine: bool = False,
                 camera_guidance_scale: float | None = None) -> np.ndarray:
        """Generate a video that starts at ``image`` and follows the camera trajectory.

        Args:
            image: uint8 (H, W, 3) first frame, H x W = config.video_height x video_width.
            c2w: (N, 4, 4) camera-to-world poses per output frame (OpenCV axes, metres), N = 1 + ts*k.
            intrinsics: (N, 3, 3) pixel intrinsics at image resolution.
            prompt: optional text; "" still goes through the text encoder (an empty caption).
            seed: noise seed (same seed, same video).
            mode: "streaming" | "bidirectional" | "few_step".
            num_steps, guidance_scale, camera_guidance_scale: default ``config.sampler``; ``few_step`` uses
                ``config.sampler.distilled_sigmas`` and guidance 1 (distilled in) and ignores all three.
            refine: run the bundle's stage-2 refiner (``<bundle>/refiner``) on the latents before decoding.
        Returns:
            uint8 (N, H, W, 3) video; frame 0 is the VAE reconstruction of ``image``.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        F = self._validate(image, c2w, intrinsics)
        cfg, dev = self.config, self.device
        steps = cfg.sampler.num_steps if num_steps is None else int(num_steps)
        guidance = cfg.sampler.guidance_scale if guidance_scale is None else float(guidance_scale)
        cam_guidance = (cfg.sampler.camera_guidance_scale if camera_guidance_scale is None
                        else float(camera_guidance_scale))
        if steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {steps}")

        pixels = torch.tensor(np.asarray(image), device=dev).permute(2, 0, 1)[None, :, None]
        cond_latent = self.vae.encode(pixels.float() / 127.5 - 1.0)  # (1, C, 1, h, w)
        text, mask = self.text_encoder.encode([prompt])
        camera = camera_condition(torch.as_tensor(np.asarray(c2w))[None], torch.as_tensor(np.asarray(intrinsics))[None],
                                  (cfg.video_height, cfg.video_width), cfg.latent_hw, cfg.vae.temporal_stride,
                                  dtype=torch.float32).to(dev)
        cond = Conditioning(text.to(dev), mask.to(dev), camera)
        gen = torch.Generator().manual_seed(int(seed))
        lens = cfg.chunks.chunk_lengths(F)
        if mode == "bidirectional":
            latents = sample_bidirectional(self.network, cond_latent, F, cond, num_steps=steps,
                                           guidance_scale=guidance, shift=cfg.sampler.flow_shift, generator=gen,
                                           chunk_lens=lens, progress=progress, camera_guidance=cam_guidance)
        elif mode == "streaming":
            latents = sample_chunk_causal(self.network, cond_latent, F, cond, chunk_lens=lens, num_steps=steps,
                                          guidance_scale=guidance, shift=cfg.sampler.flow_shift, generator=gen,
                                          progress=progress, camera_guidance=cam_guidance)
        else:
            latents = sample_few_step(self.network, cond_latent, F, cond, chunk_lens=lens,
                                      sigmas=cfg.sampler.distilled_sigmas, generator=gen, progress=progress)
        if refine:
            latents = self.refiner().refine(latents, prompt, fps=cfg.fps, seed=seed)
        video = self.vae.decode(latents)[0]  # (3, N, H, W) in [-1, 1]
        return ((video + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()

    def refiner(self):
        """The bundle's stage-2 ``LongVideoRefiner`` (raises naming the bundle when it has none)."""
        if self._refiner is None:
            if self.refiner_dir is None:
                raise FileNotFoundError("this model bundle has no stage-2 refiner (<bundle>/refiner); import one "
                                        "with `python -m model import --sana-streaming DIR`")
            from model.refiner import LongVideoRefiner

            self._refiner = LongVideoRefiner.from_pretrained(self.refiner_dir, device=self.device)
        return self._refiner

    # ------------------------------------------------------------------ bundles
    def save_pretrained(self, directory: str | os.PathLike, kind: str | None = None,
                        info: dict[str, Any] | None = None, max_shard_bytes: int = 5 * 1024**3) -> Path:
        """Write the bundle atomically to ``directory`` (replacing it). ``kind`` (e.g. "teacher",
        "student", "quantized") and ``info`` (JSON-serialisable) default to this pipeline's metadata."""
        meta = {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "package_version": _package_version(),
            "kind": kind if kind is not None else self.metadata.get("kind", "teacher"),
            "info": info if info is not None else self.metadata.get("info", {}),
        }
        meta_text = json.dumps(meta, indent=2, sort_keys=True)  # fails before any write if not JSON-able
        with atomic_directory(directory) as tmp:
            (tmp / "config.json").write_text(self.config.to_json())
            (tmp / "network").mkdir()
            write_state_dict(self.network.state_dict(), tmp / "network", max_shard_bytes)
            self.vae.save_to(tmp / "vae")
            if self.config.text.kind == "hf" and not self.config.text.pretrained_path:
                # the bundle carries its own text encoder (e.g. an imported Gemma-2): model + tokenizer files
                self.text_encoder.model.save_pretrained(tmp / "text_encoder", safe_serialization=True)
                self.text_encoder.tokenizer.save_pretrained(tmp / "text_encoder")
            (tmp / "metadata.json").write_text(meta_text)
            if self.refiner_dir is not None and self.refiner_dir.resolve() != (Path(directory) / "refiner").resolve():
                shutil.copytree(self.refiner_dir, tmp / "refiner")
        self.metadata = {"kind": meta["kind"], "info": meta["info"]}
        return Path(directory)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> WorldModelPipeline:
        """Rebuild a pipeline from a bundle; strict loading (``CheckpointMismatchError`` lists any key or
        shape mismatch), ``FileNotFoundError`` naming whatever part of the bundle is missing."""
        d = Path(directory)
        if not d.is_dir():
            raise FileNotFoundError(f"model bundle {str(d)!r} does not exist")
        missing = [p for p in ("config.json", "network", "vae", "metadata.json") if not (d / p).exists()]
        if missing:
            raise FileNotFoundError(f"model bundle {str(d)!r} is incomplete: missing {missing}")
        meta = json.loads((d / "metadata.json").read_text())
        if meta.get("format") != BUNDLE_FORMAT or meta.get("format_version") != BUNDLE_FORMAT_VERSION:
            raise ValueError(f"{d / 'metadata.json'}: expected format {BUNDLE_FORMAT!r} v{BUNDLE_FORMAT_VERSION}, "
                             f"got {meta.get('format')!r} v{meta.get('format_version')}")
        config = WorldModelConfig.from_dict(json.loads((d / "config.json").read_text()))
        with torch.random.fork_rng(devices=[]):  # the random init is overwritten; keep the caller's RNG
            network = _build_network(config)
        load_into(network, d / "network", strict=True)
        vae = load_vae(d / "vae", config.vae, device)
        pipe = cls(config, network.to(device), vae, build_text_encoder(config.text, device, bundle_dir=d),
                   metadata={"kind": meta.get("kind"), "info": meta.get("info", {})})
        if (d / "refiner" / "model_index.json").is_file():
            pipe.refiner_dir = d / "refiner"
        return pipe


def generate_to_file(pipeline: WorldModelPipeline, image_path: str | os.PathLike,
                     trajectory_path: str | os.PathLike, out_path: str | os.PathLike, **generate_kwargs: Any) -> Path:
    """Read an RGB image and a SANA-WM-Bench ``.npz`` trajectory, generate, and write ``out_path``
    (``.mp4`` via PyAV at the trajectory's fps, or ``.npy`` of the uint8 (N,H,W,3) frames) atomically."""
    from PIL import Image

    from model.trajectory import load_trajectory

    image = np.asarray(Image.open(image_path).convert("RGB"))
    traj = load_trajectory(trajectory_path)
    video = pipeline.generate(image, traj.c2w, traj.intrinsics, **generate_kwargs)
    out = Path(out_path)
    if out.suffix not in (".mp4", ".npy"):
        raise ValueError(f"output must end in .mp4 or .npy, got {str(out)!r}")
    from model.atomic import atomic_path

    with atomic_path(out) as tmp:
        if out.suffix == ".npy":
            with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a name
                np.save(f, video)
        else:
            from model.video_io import write_video

            write_video(video, tmp, traj.fps)
    return out
