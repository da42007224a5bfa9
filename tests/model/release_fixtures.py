"""Tiny stand-ins for the released SANA-WM directories, written by the libraries' own ``save_pretrained``.

Random weights, real formats: a diffusers ``SanaWMPipeline``-style directory (transformer/, vae/,
text_encoder/, tokenizer/, scheduler/) and the NVlabs streaming release layout (sana_dit/model.pt,
ltx2_causal_vae/, refiner_diffusers/, text_encoder/, tokenizer/). Latent geometry: 8 channels, temporal
stride 4, spatial stride 8, so 64x64 video has an 8x8 latent grid.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.model.reference import randomise_zero_parameters, tiny_reference_kwargs

TEXT_DIM = 48
TINY_LTX2_VAE = dict(
    latent_channels=8, block_out_channels=(8, 16), decoder_block_out_channels=(16, 32),
    down_block_types=("LTX2VideoDownBlock3D", "LTX2VideoDownBlock3D"), layers_per_block=(1, 1, 1),
    decoder_layers_per_block=(1, 1, 1), spatio_temporal_scaling=(True, True),
    decoder_spatio_temporal_scaling=(True, True), decoder_inject_noise=(False, False, False),
    downsample_type=("spatiotemporal", "spatiotemporal"), upsample_type=("spatiotemporal", "spatiotemporal"),
    upsample_residual=(True, True), upsample_factor=(2, 2), patch_size=2, patch_size_t=1,
)


def write_tiny_transformer(directory: Path, seed: int = 0):
    from diffusers import SanaWMTransformer3DModel

    torch.manual_seed(seed)
    model = SanaWMTransformer3DModel(**tiny_reference_kwargs(caption_channels=TEXT_DIM))
    randomise_zero_parameters(model, std=0.05, seed=seed)
    model.save_pretrained(directory)
    return model


def write_tiny_vae(directory: Path, seed: int = 0) -> None:
    from diffusers import AutoencoderKLLTX2Video

    torch.manual_seed(seed)
    AutoencoderKLLTX2Video(**TINY_LTX2_VAE).save_pretrained(directory)


def write_tiny_text_encoder(model_dir: Path, tokenizer_dir: Path) -> None:
    """A 1-layer Gemma-2 (hidden 48) and a word-level tokenizer the test builds."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import Gemma2Config, Gemma2Model, PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "<bos>", "<eos>", "a", "the", "room", "walk", "forward", "street", "camera", "world"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>",
                            eos_token="<eos>").save_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    cfg = Gemma2Config(vocab_size=len(words), hidden_size=TEXT_DIM, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=24, pad_token_id=0)
    Gemma2Model(cfg).save_pretrained(model_dir)


def write_diffusers_pipeline_dir(root: Path) -> Path:
    from diffusers import FlowMatchEulerDiscreteScheduler

    write_tiny_transformer(root / "transformer")
    write_tiny_vae(root / "vae")
    write_tiny_text_encoder(root / "text_encoder", root / "tokenizer")
    FlowMatchEulerDiscreteScheduler(shift=3.0).save_pretrained(root / "scheduler")
    return root


def write_streaming_release_dir(root: Path) -> Path:
    """sana_dit/model.pt carries the release's wrapping: {"state_dict": {"module.<key>": ...}, "step": ...},
    plus the fixed ``pos_embed`` buffer the loader drops."""
    model = write_tiny_transformer(root / "transformer-tmp", seed=1)
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    sd["module.pos_embed"] = torch.zeros(1, 4, TEXT_DIM)
    (root / "sana_dit").mkdir(parents=True)
    torch.save({"state_dict": sd, "step": 1234}, root / "sana_dit" / "model.pt")
    cfg = json.loads((root / "transformer-tmp" / "config.json").read_text())
    (root / "sana_dit" / "config.json").write_text(json.dumps(cfg))
    import shutil

    shutil.rmtree(root / "transformer-tmp")
    write_tiny_vae(root / "ltx2_causal_vae", seed=1)
    write_tiny_text_encoder(root / "text_encoder", root / "tokenizer")
    from model.refiner import tiny_refiner

    tiny_refiner(latent_channels=8).save_pretrained(root / "refiner_diffusers")  # diffusers' own save_pretrained
    return root
