"""Released SANA-WM directories (tiny, random, written by diffusers/transformers themselves) -> our bundle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.interop import (
    diffusers_velocity,
    load_diffusers_transformer,
    load_sana_checkpoint,
    save_diffusers_transformer,
)
from model.pipeline import WorldModelPipeline
from model.trajectory import default_intrinsics, trajectory_from_actions
from tests.model.release_fixtures import write_diffusers_pipeline_dir, write_streaming_release_dir

diffusers = pytest.importorskip("diffusers")


def _generate(pipe: WorldModelPipeline, mode: str):
    cfg = pipe.config
    K = default_intrinsics(cfg.video_height, cfg.video_width)
    tr = trajectory_from_actions("w 1s", fps=cfg.fps, K=K, num_frames=9)
    image = np.random.default_rng(0).integers(0, 255, (cfg.video_height, cfg.video_width, 3), dtype=np.uint8)
    return pipe.generate(image, tr.c2w, tr.intrinsics, prompt="walk forward", mode=mode, num_steps=2)


def test_import_diffusers_pipeline_directory(tmp_path):
    from model.__main__ import main

    src = write_diffusers_pipeline_dir(tmp_path / "release")
    assert main(["import", "--diffusers", str(src), "--out", str(tmp_path / "bundle"), "--size", "64x64"]) == 0
    pipe = WorldModelPipeline.from_pretrained(tmp_path / "bundle")
    assert pipe.config.vae.kind == "ltx2" and pipe.config.text.kind == "hf" and pipe.config.sampler.flow_shift == 3.0
    assert (tmp_path / "bundle" / "text_encoder" / "tokenizer.json").is_file()
    # the bundle's network is the release's transformer, key for key and output for output
    ref = diffusers.SanaWMTransformer3DModel.from_pretrained(src / "transformer").eval()
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(1, 8, 3, 4, 4, generator=g), torch.tensor([[[999.0, 500.0, 3.0]]])
    y, mask = torch.randn(1, 1, 5, 48, generator=g), torch.ones(1, 5, dtype=torch.long)
    with torch.no_grad():
        want = ref(x, t, y, mask).sample
        got = diffusers_velocity(pipe.network, x, t, y, mask)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)  # float32; the reference rounds inside
    video = _generate(pipe, "bidirectional")
    assert video.shape == (9, 64, 64, 3) and video.dtype == np.uint8


def test_import_streaming_release_directory(tmp_path):
    from model.__main__ import main

    src = write_streaming_release_dir(tmp_path / "release")
    assert main(["import", "--sana-streaming", str(src), "--out", str(tmp_path / "bundle"), "--size", "64x64"]) == 0
    pipe = WorldModelPipeline.from_pretrained(tmp_path / "bundle")
    assert pipe.metadata["kind"] == "student" and pipe.metadata["info"]["sampler_mode"] == "few_step"
    assert pipe.config.sampler.distilled_sigmas == (1.0, 0.96, 0.889, 0.727)
    assert (tmp_path / "bundle" / "refiner" / "model_index.json").is_file()
    sd = load_sana_checkpoint(src / "sana_dit" / "model.pt")
    assert "pos_embed" not in sd and not any(k.startswith("module.") for k in sd)
    for k, v in pipe.network.state_dict().items():
        torch.testing.assert_close(v, sd[k].to(v.dtype))
    assert _generate(pipe, "few_step").shape == (9, 64, 64, 3)
    # stage 2 came along and runs on the stage-1 latents (release window and schedule)
    cfg = pipe.config
    K = default_intrinsics(cfg.video_height, cfg.video_width)
    tr = trajectory_from_actions("w 1s", fps=cfg.fps, K=K, num_frames=9)
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    refined = pipe.generate(image, tr.c2w, tr.intrinsics, mode="few_step", refine=True)
    assert refined.shape == (9, 64, 64, 3)


def test_sana_checkpoint_loader_refuses_pickled_objects(tmp_path):
    import argparse

    # a checkpoint that needs arbitrary unpickling (here a harmless Namespace; it could be anything)
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": argparse.Namespace(a=1)}, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="tensors-only"):
        load_sana_checkpoint(tmp_path / "model.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_sana_checkpoint(tmp_path / "missing.pt")


def test_diffusers_round_trip_and_strict_errors(tmp_path):
    from model.checkpoint import CheckpointMismatchError
    from model.config import get_preset
    from model.network import SanaWM

    cfg = get_preset("tiny")
    torch.manual_seed(0)
    net = SanaWM(cfg.network, cfg.chunks).eval()
    save_diffusers_transformer(net, tmp_path / "t")
    ref = diffusers.SanaWMTransformer3DModel.from_pretrained(tmp_path / "t")
    back = load_diffusers_transformer(tmp_path / "t")
    for k, v in net.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]) and torch.equal(v, ref.state_dict()[k])
    # a checkpoint with a missing key is named, not silently half-loaded
    from safetensors.torch import load_file, save_file

    sd = load_file(tmp_path / "t" / "diffusion_pytorch_model.safetensors")
    sd.pop("blocks.0.attn.qkv.weight")
    save_file(sd, tmp_path / "t" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(CheckpointMismatchError, match=r"missing keys: blocks.0.attn.qkv.weight"):
        load_diffusers_transformer(tmp_path / "t")


def test_unsupported_reference_options_are_named():
    from model.interop import network_config_from_diffusers

    with pytest.raises(ValueError, match=r"ffn_type='mlp'"):
        network_config_from_diffusers({"ffn_type": "mlp"})
    with pytest.raises(ValueError, match=r"unknown option 'fancy'"):
        network_config_from_diffusers({"fancy": 1})
