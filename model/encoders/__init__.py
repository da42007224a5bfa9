"""Frozen encoders around the diffusion network: the video VAE and the text encoder."""

from model.encoders.text import (
    Gemma2TextEncoder,
    HFTextEncoder,
    MiniLMTextEncoder,
    TextEncoder,
    build_text_encoder,
)
from model.encoders.vae import VideoVAE, build_vae

__all__ = [
    "Gemma2TextEncoder",
    "HFTextEncoder",
    "MiniLMTextEncoder",
    "TextEncoder",
    "VideoVAE",
    "build_text_encoder",
    "build_vae",
]
