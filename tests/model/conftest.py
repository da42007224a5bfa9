import pytest
import torch

from model.camera import camera_condition
from model.config import get_preset
from model.trajectory import default_intrinsics, trajectory_from_actions


@pytest.fixture(scope="session")
def tiny_cfg():
    return get_preset("tiny")


def make_inputs(cfg, num_latent_frames=10, batch=1, seed=0, actions="w 1s; q 1s; d 2s"):
    """Random latents/sigma/text plus a real camera condition from a DSL trajectory."""
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.latent_hw
    N = cfg.vae.num_raw_frames(num_latent_frames)
    K = default_intrinsics(cfg.video_height, cfg.video_width)
    tr = trajectory_from_actions(actions, fps=cfg.fps, K=K, num_frames=N)
    c2w = torch.tensor(tr.c2w, dtype=torch.float32)[None].expand(batch, -1, -1, -1)
    Ks = torch.tensor(tr.intrinsics, dtype=torch.float32)[None].expand(batch, -1, -1, -1)
    cam = camera_condition(c2w, Ks, (cfg.video_height, cfg.video_width), (h, w), cfg.vae.temporal_stride)
    C = cfg.network.latent_channels
    return dict(
        x=torch.randn(batch, C, num_latent_frames, h, w, generator=g),
        sigma=torch.rand(batch, num_latent_frames, generator=g),
        text=torch.randn(batch, 5, cfg.network.text_dim, generator=g),
        text_mask=torch.tensor([[True] * 3 + [False] * 2] * batch),
        camera=cam,
    )
