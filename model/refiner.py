"""Stage-2 long-video refiner: diffusers' ``SanaWMLTX2Refiner`` (the released LTX-2 chunk-causal refiner),
loaded from a local directory and run as the release runs it.

The release's recipe (``SanaWMLTX2Refiner.__call__``, NVlabs' streaming script): stage-1 latents are
re-noised to σ = 0.909375 and denoised in 3 Euler steps (0.909375, 0.725, 0.421875, 0) block by block
(``block_size`` 3 latent frames); each block attends to a sliding K/V window of 1 sink frame (the clean
first latent, never refined) plus recent refined history, ``kv_max_frames`` = 11 frames in all, so the
cost is linear in video length. We wrap that pipeline; the network and the loop are diffusers'.

The paper preset's refiner is the ~17 B checkpoint (``refiner_diffusers/`` of the streaming release,
copied into a bundle by ``python -m model import --sana-streaming``); the CPU presets and the tests use a
tiny configuration of the same classes (``tiny_refiner``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["LongVideoRefiner", "RefinerConfig", "tiny_refiner"]


@dataclass(frozen=True)
class RefinerConfig:
    """The release's stage-2 settings (``inference_sana_wm_streaming.py`` defaults)."""

    sink_size: int = 1
    block_size: int = 3
    kv_max_frames: int = 11  # sink + history + active block, in latent frames
    sigmas: tuple[float, ...] = (0.909375, 0.725, 0.421875, 0.0)
    seed: int = 42

    def __post_init__(self) -> None:
        s = tuple(float(v) for v in self.sigmas)
        if len(s) < 2 or s[-1] != 0.0 or any(a <= b for a, b in zip(s, s[1:])) or not 0 < s[0] <= 1:
            raise ValueError(f"RefinerConfig.sigmas must decrease strictly from (0, 1] to exactly 0, got {self.sigmas}")
        if self.kv_max_frames < self.sink_size + self.block_size:
            raise ValueError(f"RefinerConfig.kv_max_frames ({self.kv_max_frames}) must be >= sink_size + block_size "
                             f"({self.sink_size + self.block_size}): each block must see the whole previous block")


class LongVideoRefiner:
    """A ``SanaWMLTX2Refiner`` plus the settings it runs with.

    ``refine(latents (B,C,F,h,w), prompt, fps)`` -> refined latents (B,C,F,h,w), in the same normalised
    LTX-2 latent space the stage-1 model works in; the first ``sink_size`` frames come back unchanged.
    """

    def __init__(self, pipe: Any, cfg: RefinerConfig | None = None) -> None:
        self.pipe = pipe
        self.cfg = cfg or RefinerConfig()

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu",
                        cfg: RefinerConfig | None = None) -> LongVideoRefiner:
        """Load a ``SanaWMLTX2Refiner.save_pretrained`` directory (local files only)."""
        from diffusers.pipelines.sana_wm.refiner import SanaWMLTX2Refiner

        d = Path(directory)
        if not (d / "model_index.json").is_file():
            raise FileNotFoundError(f"refiner directory {str(d)!r} has no model_index.json "
                                    f"(expected a SanaWMLTX2Refiner.save_pretrained folder)")
        pipe = SanaWMLTX2Refiner.from_pretrained(str(d), local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe.to(device), cfg)

    def save_pretrained(self, directory: str | Path) -> Path:
        from model.checkpoint import atomic_directory

        with atomic_directory(directory) as tmp:
            self.pipe.save_pretrained(str(tmp))
        return Path(directory)

    @torch.no_grad()
    def refine(self, latents: torch.Tensor, prompt: str, fps: float, seed: int | None = None) -> torch.Tensor:
        if latents.ndim != 5:
            raise ValueError(f"refine expects latents (B,C,F,h,w), got shape {tuple(latents.shape)}")
        if latents.shape[2] <= self.cfg.sink_size:
            raise ValueError(f"refine needs more than sink_size={self.cfg.sink_size} latent frames, "
                             f"got {latents.shape[2]}")
        c = self.cfg
        gen = torch.Generator(device=latents.device).manual_seed(c.seed if seed is None else int(seed))
        return self.pipe(latents, prompt, fps=float(fps), sink_size=c.sink_size, generator=gen,
                         block_size=c.block_size, kv_max_frames=c.kv_max_frames, sigmas=tuple(c.sigmas),
                         output_type="latent")


def tiny_refiner(latent_channels: int, temporal_stride: int = 4, spatial_stride: int = 8, seed: int = 0,
                 cfg: RefinerConfig | None = None) -> LongVideoRefiner:
    """A random-weight ``SanaWMLTX2Refiner`` of the release's classes in a tiny configuration (2 blocks,
    hidden 32; a 1-layer Gemma-3 text encoder with a word-level tokenizer): CPU presets and tests."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SanaWMLTX2RefinerTransformer3DModel
    from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors
    from diffusers.pipelines.sana_wm.refiner import SanaWMLTX2Refiner
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3TextConfig,
        PreTrainedTokenizerFast,
        SiglipVisionConfig,
    )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = SanaWMLTX2RefinerTransformer3DModel(
            in_channels=latent_channels, out_channels=latent_channels, num_attention_heads=2, attention_head_dim=16,
            cross_attention_dim=32, vae_scale_factors=(temporal_stride, spatial_stride, spatial_stride), num_layers=2,
            audio_in_channels=8, audio_out_channels=8, audio_num_attention_heads=2, audio_attention_head_dim=8,
            audio_cross_attention_dim=16, caption_channels=32)
        connectors = LTX2TextConnectors(
            caption_channels=32, text_proj_in_factor=2, video_connector_num_attention_heads=2,
            video_connector_attention_head_dim=16, video_connector_num_layers=1,
            video_connector_num_learnable_registers=4, audio_connector_num_attention_heads=2,
            audio_connector_attention_head_dim=16, audio_connector_num_layers=1,
            audio_connector_num_learnable_registers=4, video_hidden_dim=32, audio_hidden_dim=32)
        words = ["<pad>", "<unk>", "<bos>", "<eos>", "a", "the", "room", "street", "walk", "forward", "turn"]
        tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                            bos_token="<bos>", eos_token="<eos>")
        text_encoder = Gemma3ForConditionalGeneration(Gemma3Config(
            text_config=Gemma3TextConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                         head_dim=16),
            vision_config=SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, image_size=16, patch_size=8),
            mm_tokens_per_image=4))
    pipe = SanaWMLTX2Refiner(transformer=transformer, connectors=connectors, tokenizer=tokenizer,
                             text_encoder=text_encoder, scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0),
                             text_max_sequence_length=16)
    pipe.set_progress_bar_config(disable=True)
    return LongVideoRefiner(pipe, cfg)
