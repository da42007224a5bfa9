"""Long-video refiner on a tiny all-softmax SanaWM: anchor, shape, determinism, bounded window, save/load."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model.camera import camera_condition
from model.config import get_preset
from model.refiner import LongVideoRefiner, RefinerConfig, all_softmax
from model.trajectory import default_intrinsics

C, HW = 8, (4, 4)


class WindowSpy(nn.Module):
    """Delegates to the real network and records the largest number of latent frames it was given."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.peak = net, 0

    def forward(self, x, *args, **kwargs):
        self.peak = max(self.peak, x.shape[2])
        return self.net(x, *args, **kwargs)


def _inputs(F: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    N = 1 + 4 * (F - 1)
    c2w = torch.eye(4, dtype=torch.float64).repeat(1, N, 1, 1)
    c2w[0, :, 2, 3] = torch.linspace(0, 1, N)  # walk forward
    K = torch.as_tensor(default_intrinsics(32, 32))[None, None].repeat(1, N, 1, 1)
    cam = camera_condition(c2w, K, (32, 32), HW, 4, dtype=torch.float32)
    return (torch.randn(1, C, F, *HW, generator=g), torch.randn(1, 3, 384, generator=g),
            torch.ones(1, 3, dtype=torch.bool), cam)


@pytest.fixture(scope="module")
def refiner_net():
    return LongVideoRefiner.from_network_config(all_softmax(get_preset("tiny").network), seed=0).net


def test_config_defaults_and_validation():
    cfg = RefinerConfig()
    assert cfg.sigmas == (0.909, 0.725, 0.422, 0.0) and cfg.start_sigma == 0.909
    assert (cfg.sink_frames, cfg.recent_frames) == (1, 10)
    assert cfg.chunk_lengths(11) == [4, 3, 3, 1]
    with pytest.raises(ValueError, match="start_sigma"):
        RefinerConfig(start_sigma=0.8)
    with pytest.raises(ValueError, match="sigmas"):
        RefinerConfig(sigmas=(0.909, 0.95, 0.0))
    assert all_softmax(get_preset("tiny").network).softmax_blocks == (0, 1, 2, 3)


def test_refine_anchor_shape_determinism(refiner_net):
    ref = LongVideoRefiner(refiner_net)
    lat, text, mask, cam = _inputs(7)
    a = ref.refine(lat, text, mask, cam, generator=torch.Generator().manual_seed(1))
    b = ref.refine(lat, text, mask, cam, generator=torch.Generator().manual_seed(1))
    c = ref.refine(lat, text, mask, cam, generator=torch.Generator().manual_seed(2))
    assert a.shape == lat.shape and torch.isfinite(a).all()
    assert torch.equal(a[:, :, 0], lat[:, :, 0])  # anchor frame untouched
    assert torch.equal(a, b)
    assert (a[:, :, 1:] - c[:, :, 1:]).abs().max() > 1e-3
    assert (a[:, :, 1:] - lat[:, :, 1:]).abs().max() > 1e-3  # it did refine


def test_window_is_bounded_whatever_the_length(refiner_net):
    cfg = RefinerConfig(recent_frames=3)  # small window so short clips already slide it
    peaks = []
    for F in (7, 13):
        spy = WindowSpy(refiner_net)
        ref = LongVideoRefiner(spy, cfg)
        lat, text, mask, cam = _inputs(F)
        out = ref.refine(lat, text, mask, cam, generator=torch.Generator().manual_seed(0))
        assert out.shape == lat.shape
        peaks.append(spy.peak)
        assert ref.peak_window_frames == spy.peak
    assert peaks[0] == peaks[1] == cfg.sink_frames + cfg.recent_frames + cfg.chunk_frames == cfg.max_window_frames


def test_save_and_load_round_trip(refiner_net, tmp_path):
    ref = LongVideoRefiner(refiner_net, RefinerConfig(recent_frames=4))
    ref.save_pretrained(tmp_path / "refiner")
    back = LongVideoRefiner.from_pretrained(tmp_path / "refiner")
    assert back.cfg == ref.cfg
    lat, text, mask, cam = _inputs(5)
    torch.testing.assert_close(back.refine(lat, text, mask, cam, torch.Generator().manual_seed(3)),
                               ref.refine(lat, text, mask, cam, torch.Generator().manual_seed(3)), atol=0, rtol=0)
    with pytest.raises(FileNotFoundError, match="refiner.json"):
        LongVideoRefiner.from_pretrained(tmp_path / "nope")
