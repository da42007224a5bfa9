"""WorldModelPipeline on the tiny preset: real SanaWM, real Wan VAE, real MiniLM, random weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model.checkpoint import CheckpointMismatchError
from model.config import get_preset
from model.pipeline import WorldModelPipeline, generate_to_file
from model.trajectory import Trajectory, default_intrinsics, save_trajectory

N = 5  # raw frames = 1 + 4*1: the image plus one generated latent frame keeps each generate() short


@pytest.fixture(scope="module")
def pipe():
    p = WorldModelPipeline.from_config(get_preset("tiny"), seed=0)
    with torch.no_grad():  # wake up zero-initialised branches so camera/text changes reach the output
        g = torch.Generator().manual_seed(0)
        for prm in p.network.parameters():
            prm.add_(0.05 * torch.randn(prm.shape, generator=g))
    return p


def _traj(n: int = N, speed: float = 0.5):
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, 2, 3] = np.linspace(0, speed, n)
    return c2w, np.tile(default_intrinsics(64, 64), (n, 1, 1))


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["bidirectional", "few_step"])
def test_generate_modes_shape_dtype(pipe, mode):
    c2w, K = _traj()
    out = pipe.generate(_image(), c2w, K, prompt="a hallway", seed=3, mode=mode, num_steps=2)
    assert out.shape == (N, 64, 64, 3) and out.dtype == np.uint8


def test_generate_deterministic_by_seed(pipe):
    c2w, K = _traj()
    a = pipe.generate(_image(), c2w, K, prompt="a hallway", seed=3, num_steps=2)  # streaming, CFG on
    b = pipe.generate(_image(), c2w, K, prompt="a hallway", seed=3, num_steps=2)
    c = pipe.generate(_image(), c2w, K, prompt="a hallway", seed=4, num_steps=2)
    assert a.shape == (N, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a[1:], c[1:])
    assert np.array_equal(a[0], c[0])  # frame 0 is the decoded image latent, independent of the noise


def test_generate_multi_chunk_streaming(pipe):
    c2w, K = _traj(1 + 4 * 5)  # 6 latent frames = chunks [4, 2]
    out = pipe.generate(_image(), c2w, K, seed=0, num_steps=1, guidance_scale=1.0)
    assert out.shape == (21, 64, 64, 3)


def test_generate_validates_inputs(pipe):
    c2w, K = _traj()
    with pytest.raises(ValueError, match="64x64"):
        pipe.generate(np.zeros((32, 64, 3), np.uint8), c2w, K)
    with pytest.raises(ValueError, match="uint8"):
        pipe.generate(np.zeros((64, 64, 3), np.float32), c2w, K)
    with pytest.raises(ValueError, match="1 \\+ 4\\*k"):
        pipe.generate(_image(), *_traj(6))
    with pytest.raises(ValueError, match="1 \\+ 4\\*k"):
        pipe.generate(_image(), *_traj(1))
    bad = c2w.copy()
    bad[2, :3, :3] *= 2.0  # not a rotation
    with pytest.raises(ValueError, match="trajectory"):
        pipe.generate(_image(), bad, K)
    with pytest.raises(ValueError, match="mode"):
        pipe.generate(_image(), c2w, K, mode="fast")


def test_save_and_load_round_trip(pipe, tmp_path):
    c2w, K = _traj()
    ref = pipe.generate(_image(), c2w, K, prompt="x", seed=1, mode="few_step")
    bundle = pipe.save_pretrained(tmp_path / "bundle", kind="student", info={"steps": 4})
    assert {p.name for p in bundle.iterdir()} == {"config.json", "network", "vae", "metadata.json"}
    meta = json.loads((bundle / "metadata.json").read_text())
    assert meta["kind"] == "student" and meta["info"] == {"steps": 4} and meta["format_version"] == 1
    back = WorldModelPipeline.from_pretrained(bundle)
    assert back.config == pipe.config and back.metadata["kind"] == "student"
    assert np.array_equal(back.generate(_image(), c2w, K, prompt="x", seed=1, mode="few_step"), ref)


def test_from_pretrained_errors(pipe, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        WorldModelPipeline.from_pretrained(tmp_path / "none")
    bundle = pipe.save_pretrained(tmp_path / "b")
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["network"]["num_blocks"] = 5  # a config that no longer matches the weights
    (bundle / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointMismatchError, match="missing keys: blocks.4"):
        WorldModelPipeline.from_pretrained(bundle)
    (bundle / "metadata.json").unlink()
    with pytest.raises(FileNotFoundError, match="metadata.json"):
        WorldModelPipeline.from_pretrained(bundle)


def test_generate_to_file(pipe, tmp_path):
    import av
    from PIL import Image

    Image.fromarray(_image()).save(tmp_path / "img.png")
    c2w, K = _traj()
    save_trajectory(Trajectory(c2w=c2w, intrinsics=K, fps=8.0), tmp_path / "traj.npz")
    out = generate_to_file(pipe, tmp_path / "img.png", tmp_path / "traj.npz", tmp_path / "out.mp4", seed=0,
                           mode="few_step")
    with av.open(str(out)) as f:
        frames = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
    assert len(frames) == N and frames[0].shape == (64, 64, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.png", "out.mp4", "traj.npz"]
