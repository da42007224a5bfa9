"""The ``vae`` step (components.vae): fitting the presets' tiny LTX-2 VAE, its CLI/cache, and train --vae."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from components.ingest.synthetic import KINDS, ClipSpec, render_clip
from components.vae.fit import default_vae_steps, fit_vae, video_psnr
from model.config import get_preset
from model.encoders.vae import build_vae, load_vae

TINY = get_preset("tiny")


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    # 4 rendered rooms, 32x32, 9 frames: one clip is held out for the PSNR
    return [render_clip(ClipSpec(kind=KINDS[i % len(KINDS)], num_frames=9, height=32, width=32, seed=i)).frames
            for i in range(4)]


def _random_vae():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_vae(TINY.vae)


@pytest.fixture(scope="module")
def fitted(clips):
    vae = _random_vae()
    report = fit_vae(vae, clips, steps=30, lr=2e-3, batch=2, frames_per_sample=5, seed=0, progress=False,
                     eval_every=10, eval_windows=2)
    return vae, report


def test_tiny_preset_vae_is_a_tiny_ltx2():
    from diffusers import AutoencoderKLLTX2Video

    vae = _random_vae()
    assert isinstance(vae.vae, AutoencoderKLLTX2Video)  # the paper preset's class: one code path
    assert sum(p.numel() for p in vae.parameters()) < 1_000_000
    z = vae.encode(torch.zeros(1, 3, 9, 64, 64))
    assert z.shape == (1, TINY.vae.latent_channels, 3, 8, 8)
    assert vae.decode(z).shape == (1, 3, 9, 64, 64)


def test_fit_raises_heldout_psnr_over_random_vae(fitted):
    _, r = fitted
    assert r["held_out"] and r["eval_clips"] == 1 and r["train_clips"] == 3 and r["init"] == "pca"
    assert len(r["losses"]) == 30
    # a random decoder gives ~10 dB on these rooms; the PCA start must reconstruct unseen clips far better
    assert r["psnr_init"] > r["psnr_before"] + 5.0, (r["psnr_before"], r["psnr_init"])
    # the guarded fine-tune keeps the best evaluated state: never worse than the start
    assert r["psnr_after"] >= r["psnr_init"] - 1e-6
    assert max(p for _, p in r["curve"]) <= r["psnr_after"] + 1e-6
    assert [s for s, _ in r["curve"]] == [0, 10, 20, 30] and r["curve"][-1][1] == r["psnr_after"]
    p = r["preview"]
    assert p["target"].shape == p["before"].shape == p["after"].shape == (9, 32, 32, 3)


def _patch_vae_and_clips(base_dim: int, n: int, seed: int):
    """A "patch"-layout tiny LTX-2 VAE (32 latent channels, stride 8x8x4) and n rendered 13-frame 32x32
    clips as unit tensors (3,13,32,32), plus the uint8 frames."""
    from components.vae.fit import _to_unit
    from model.config import VAEConfig

    cfg = VAEConfig(kind="ltx2", latent_channels=32, temporal_stride=4, spatial_stride=8, base_dim=base_dim,
                    num_layers=0, layout="patch")
    clips = [render_clip(ClipSpec(kind=KINDS[i % len(KINDS)], num_frames=13, height=32, width=32,
                                  seed=seed + i)).frames for i in range(n)]
    return build_vae(cfg), [_to_unit(c, "c") for c in clips], clips


def test_pca_start_reaches_the_linear_bound_of_its_geometry():
    """The closed-form start equals (within 0.5 dB) an ideal block-PCA autoencoder with the same latent
    size on the training clips: the norm/SiLU stages are kept ~linear by the carrier channels."""
    from components.vae.fit import reconstruction_psnr
    from components.vae.pca_init import pca_init

    vae, px, clips = _patch_vae_and_clips(128, 3, seed=10)
    pca_init(vae, px)
    got = reconstruction_psnr(vae, torch.stack(px))  # 13 frames: frame 0 alone + three 4-frame blocks
    # ideal: PCA over 8x8x4 RGB blocks with 32 components, fitted and scored on the same blocks
    a = np.concatenate([((c[1:13].astype(np.float64) / 127.5 - 1).reshape(3, 4, 4, 8, 4, 8, 3)
                         .transpose(0, 2, 4, 1, 3, 5, 6).reshape(-1, 768)) for c in clips])
    mu = a.mean(0)
    _, _, vt = np.linalg.svd(a - mu, full_matrices=False)
    rec = (a - mu) @ vt[:32].T @ vt[:32] + mu
    ideal = 10 * np.log10(1.0 / np.mean(((rec - a) / 2) ** 2))
    assert got > ideal - 1.0, (got, ideal)  # the per-frame spatial and decoder bases cost a little
    assert got > 20.0


def test_pca_start_survives_float16_weights():
    """The shipped base bundle stores the VAE in float16: rounding every weight must cost < 0.3 dB. (The
    decoder's conv_out once split the carriers' constant between weights and a bias that cancel: 5-6 dB.)"""
    from components.vae.fit import reconstruction_psnr
    from components.vae.pca_init import pca_init

    vae, px, _ = _patch_vae_and_clips(64, 4, seed=20)
    pca_init(vae, px[:3])
    held = torch.stack(px[3:])
    full = reconstruction_psnr(vae, held)
    vae.vae.load_state_dict({k: v.half().float() for k, v in vae.vae.state_dict().items()})
    half = reconstruction_psnr(vae, held)
    assert full > 18.0, full
    assert half > full - 0.3, (full, half)


def test_pca_init_rejects_a_pyramid_vae():
    from components.vae.pca_init import pca_init
    from model.config import VAEConfig

    vae = build_vae(VAEConfig(kind="ltx2", latent_channels=8, temporal_stride=4, spatial_stride=8, base_dim=16))
    with pytest.raises(ValueError, match="layout='patch'"):
        pca_init(vae, [torch.zeros(3, 5, 32, 32)])


def test_latents_are_normalised_and_stats_survive_save_load(fitted, clips, tmp_path):
    vae, r = fitted
    px = torch.from_numpy(np.stack(clips)).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0  # (B,3,9,32,32)
    z = vae.encode(px)  # (B,C,3,4,4)
    flat = z.transpose(0, 1).reshape(z.shape[1], -1)
    std, mean = flat.std(1), flat.mean(1)
    # "patch" layout: one pooled std (PCA channels keep their relative scale), overall ~unit RMS
    assert 0.6 < float(flat.pow(2).mean().sqrt()) < 1.6, flat.pow(2).mean().sqrt()
    assert std[0] > 2 * std[-1]  # ordered by variance, not equalised
    assert len(set(r["latents_std"])) == 1 and r["latents_std"][0] != 1.0  # replaced, pooled
    assert torch.all(mean.abs() < 0.75), mean
    # LTX-2 keeps them as persistent buffers, so a saved VAE encodes to the same normalised latents
    vae.save_to(tmp_path / "vae")
    again = load_vae(tmp_path / "vae", TINY.vae)
    torch.testing.assert_close(again.encode(px), z)
    assert abs(video_psnr(again, clips[0]) - video_psnr(vae, clips[0])) < 1e-6


def test_video_psnr_is_exact_for_identity():
    class Identity:
        def encode(self, x):
            return x

        def decode(self, z):
            return z

    frames = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    assert video_psnr(Identity(), frames) == 100.0  # mse clamped at 1e-10
    half = Identity()
    half.decode = lambda z: z * 0.0  # mid-grey: PSNR of the frames against 127.5
    want = 10 * np.log10(1.0 / np.mean(((frames.astype(np.float64) - 128) / 255) ** 2))
    assert abs(video_psnr(half, frames) - want) < 0.05


def test_fit_is_deterministic_by_seed(clips):
    a = fit_vae(_random_vae(), clips, steps=2, batch=1, seed=3, eval_windows=1)
    b = fit_vae(_random_vae(), clips, steps=2, batch=1, seed=3, eval_windows=1)
    assert a["losses"] == b["losses"] and a["latents_std"] == b["latents_std"]


def test_fit_rejects_bad_input(clips):
    vae = _random_vae()
    with pytest.raises(ValueError, match="1 \\+ 4"):
        fit_vae(vae, clips, steps=1, frames_per_sample=4)
    with pytest.raises(ValueError, match="uint8"):
        fit_vae(vae, [clips[0].astype(np.float32)], steps=1)
    with pytest.raises(ValueError, match="fewer than frames_per_sample"):
        fit_vae(vae, [clips[0][:3]], steps=1)
    with pytest.raises(ValueError, match="crop must be a multiple of 8"):
        fit_vae(vae, clips, steps=1, crop=12)


def test_default_steps():
    # the CPU presets' PCA start is the fit (fit.py docstring); no default gradient steps
    assert default_vae_steps("small", has_pretrained=False) == default_vae_steps("tiny", has_pretrained=False) == 0
    assert default_vae_steps("small", has_pretrained=True) == 0
    assert default_vae_steps("sana_wm_2b6", has_pretrained=False) == 0


def test_cli_rejects_bad_options(tmp_path, capsys):
    from components.vae.__main__ import main
    from model.cli import EXIT_INPUT_ERROR, run

    assert run(main, ["--shards", str(tmp_path / "nope"), "--out", str(tmp_path / "v"), "--preset", "tiny"]) == 3
    assert "is not a folder" in capsys.readouterr().err
    assert run(main, ["--shards", str(tmp_path), "--out", str(tmp_path / "v"), "--steps", "-1"]) == EXIT_INPUT_ERROR
    assert "--steps must be >= 0" in capsys.readouterr().err
    assert run(main, ["--shards", str(tmp_path), "--out", str(tmp_path / "v"), "--init-bundle", str(tmp_path)]) == 3
    assert "is not a model bundle" in capsys.readouterr().err


def test_vae_step_caches_and_train_uses_it(tmp_path, monkeypatch):
    from components.train.__main__ import main as train_main
    from components.train.data import write_synthetic_shards
    from components.vae.__main__ import main as vae_main
    from model.pipeline import WorldModelPipeline

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shards = write_synthetic_shards(tmp_path / "shards", 2, 9, 64, 64, seed=1)
    argv = ["--shards", str(shards), "--preset", "tiny", "--steps", "3", "--batch", "1", "--eval-every", "0",
            "--no-progress", "--cache-dir", str(tmp_path / "cache")]
    assert vae_main([*argv, "--out", str(tmp_path / "vae")]) == 0
    fit = json.loads((tmp_path / "vae" / "fit.json").read_text())
    assert fit["steps"] == 3 and fit["reused"] is False and fit["psnr_after"] > 0
    for name in ("config.json", "before_after.png", "curve.png"):
        assert (tmp_path / "vae" / name).is_file(), name
    # a second run with the same data and options copies the cached fit instead of fitting again
    assert vae_main([*argv, "--out", str(tmp_path / "vae2")]) == 0
    again = json.loads((tmp_path / "vae2" / "fit.json").read_text())
    assert again["reused"] is True and again["key"] == fit["key"]
    # other options -> another key -> a new fit
    assert vae_main([*argv[:5], "4", *argv[6:], "--out", str(tmp_path / "vae3")]) == 0
    assert json.loads((tmp_path / "vae3" / "fit.json").read_text())["key"] != fit["key"]

    out = tmp_path / "teacher"
    assert train_main(["--shards", str(shards), "--vae", str(tmp_path / "vae"), "--preset", "tiny", "--steps", "1",
                       "--batch-size", "1", "--out", str(out)]) == 0
    pipe = WorldModelPipeline.from_pretrained(out)
    assert pipe.metadata["info"]["vae_fit"]["key"] == fit["key"]
    want = load_vae(tmp_path / "vae", TINY.vae).state_dict()
    got = pipe.vae.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_train_rejects_a_folder_that_is_not_a_vae(tmp_path, capsys):
    from components.train.__main__ import main as train_main
    from model.cli import EXIT_INPUT_ERROR, run

    assert run(train_main, ["--shards", str(tmp_path), "--vae", str(tmp_path), "--preset", "tiny", "--steps", "1",
                            "--latent-frames", "2", "--out", str(tmp_path / "t")]) == EXIT_INPUT_ERROR
    assert "is not a VAE folder" in capsys.readouterr().err
