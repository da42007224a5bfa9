"""Scheduler conventions and samplers: oracle velocity fields check signs exactly; the real tiny SanaWM
checks streaming == non-streaming chunk-causal and CFG batching."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model.config import get_preset
from model.sampling import (
    Conditioning,
    FlowMatchScheduler,
    guided_velocity,
    sample_bidirectional,
    sample_chunk_causal,
    sample_chunk_causal_reference,
    sample_few_step,
)


class OracleVelocity(nn.Module):
    """The exact flow-matching velocity towards a known clean video x0 (B,C,F,h,w).

    On the straight path x = (1-s) x0 + s n the velocity n - x0 equals (x - x0) / s. The streaming state
    is the number of frames already committed, so it also checks that samplers advance the state only
    on the clean pass: a sampler that kept the state of a denoising step would read the wrong x0 frames.
    """

    def __init__(self, x0: torch.Tensor):
        super().__init__()
        self.x0 = x0
        self.calls = 0

    def _v(self, x: torch.Tensor, sigma: torch.Tensor, start: int) -> torch.Tensor:
        self.calls += 1
        x0 = self.x0[:, :, start:start + x.shape[2]].repeat(x.shape[0] // self.x0.shape[0], 1, 1, 1, 1)
        s = sigma[:, None, :, None, None]
        return torch.where(s > 0, (x - x0) / s.clamp_min(1e-12), torch.zeros_like(x))

    def forward(self, x, sigma, text, text_mask, camera, mode="bidirectional", chunk_lens=None):
        return self._v(x, sigma, 0)

    def init_stream_state(self):
        return 0

    def forward_chunk(self, x, sigma, text, text_mask, camera, state):
        return self._v(x, sigma, state), state + x.shape[2]


def _cond(B: int = 1, L: int = 4, D: int = 8) -> Conditioning:
    return Conditioning(torch.zeros(B, L, D), torch.ones(B, L, dtype=torch.bool), None)


def test_scheduler_endpoints_and_monotonic_shift():
    for shift in (1.0, 3.0, 9.8):
        s = FlowMatchScheduler(shift).sigmas(10)
        assert s.shape == (11,)
        assert s[0].item() == 1.0 and s[-1].item() == 0.0
        assert torch.all(s[1:] < s[:-1])
    grid = torch.linspace(0, 1, 101)
    lo, hi = FlowMatchScheduler(1.0).shift_sigma(grid), FlowMatchScheduler(5.0).shift_sigma(grid)
    assert torch.all(hi[1:] > hi[:-1])
    assert torch.all(hi[1:-1] > lo[1:-1])  # a shift > 1 spends more of the schedule at high noise
    with pytest.raises(ValueError, match="shift"):
        FlowMatchScheduler(0.0)


def test_add_noise_velocity_and_training_sigmas():
    g = torch.Generator().manual_seed(0)
    x0, n = torch.randn(2, 3, 4, 2, 2, generator=g), torch.randn(2, 3, 4, 2, 2, generator=g)
    sig = torch.rand(2, 4, generator=g)
    sch = FlowMatchScheduler(3.0)
    xs = sch.add_noise(x0, n, sig)
    v = sch.velocity_target(x0, n)
    torch.testing.assert_close(sch.predict_x0(xs, v, sig), x0)
    torch.testing.assert_close(sch.add_noise(x0, n, 1.0), n)
    a = sch.sample_training_sigmas((64, 5), torch.Generator().manual_seed(1))
    b = sch.sample_training_sigmas((64, 5), torch.Generator().manual_seed(1))
    assert a.shape == (64, 5) and torch.equal(a, b) and bool(((a > 0) & (a < 1)).all())
    # shift 3 moves the logit-normal median 0.5 up to 0.75
    assert abs(a.median().item() - 0.75) < 0.1


@pytest.mark.parametrize("shift", [1.0, 4.0])
def test_euler_with_oracle_recovers_x0_bidirectional(shift):
    x0 = torch.randn(1, 3, 5, 2, 2, generator=torch.Generator().manual_seed(2))
    net = OracleVelocity(x0)
    out = sample_bidirectional(net, x0[:, :, :1], 5, _cond(), num_steps=6, guidance_scale=1.0, shift=shift,
                               generator=torch.Generator().manual_seed(3))
    assert torch.equal(out[:, :, :1], x0[:, :, :1])  # the image condition is never touched
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)
    assert net.calls == 6


def test_chunk_causal_oracle_streaming_and_reference_recover_x0():
    x0 = torch.randn(1, 3, 10, 2, 2, generator=torch.Generator().manual_seed(4))
    lens = get_preset("tiny").chunks.chunk_lengths(10)
    assert lens == [4, 3, 3]
    for fn in (sample_chunk_causal, sample_chunk_causal_reference):
        out = fn(OracleVelocity(x0), x0[:, :, :1], 10, _cond(), chunk_lens=lens, num_steps=4, guidance_scale=1.0,
                 shift=3.0, generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)
    for stochastic in (True, False):
        out = sample_few_step(OracleVelocity(x0), x0[:, :, :1], 10, _cond(), chunk_lens=lens,
                              sigmas=(1.0, 0.75, 0.5, 0.25), stochastic=stochastic,
                              generator=torch.Generator().manual_seed(6))
        torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)


def test_bad_inputs_are_named():
    x0 = torch.zeros(1, 3, 4, 2, 2)
    with pytest.raises(ValueError, match="cond_latent"):
        sample_bidirectional(OracleVelocity(x0), x0, 4, _cond(), num_steps=2, guidance_scale=1.0, shift=1.0)
    with pytest.raises(ValueError, match="chunk_lens"):
        sample_chunk_causal(OracleVelocity(x0), x0[:, :, :1], 4, _cond(), chunk_lens=[4, 3], num_steps=2,
                            guidance_scale=1.0, shift=1.0)
    with pytest.raises(ValueError, match="decreasing"):
        sample_few_step(OracleVelocity(x0), x0[:, :, :1], 4, _cond(), chunk_lens=[4], sigmas=(0.5, 0.75))


# --------------------------------------------------------------------------- real tiny SanaWM
@pytest.fixture(scope="module")
def tiny():
    from model.camera import camera_condition
    from model.network import SanaWM
    from model.trajectory import default_intrinsics

    cfg = get_preset("tiny")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = SanaWM(cfg.network, cfg.chunks).eval()
        # Perturb every weight: zero-initialised branches (camera out-proj, Plücker linears) would otherwise
        # make camera and text paths invisible and the equality tests vacuous.
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
    # A 32x32 video (4x4 latent grid) keeps every forward well under a second on a shared CPU.
    # F = 16 -> chunks [4, 3, 3, 3, 3]: past the softmax K/V window (sink + 2 recent chunks), so streaming
    # eviction is compared too.
    F, ts, image_hw, latent_hw = 16, cfg.vae.temporal_stride, (32, 32), (4, 4)
    N = cfg.vae.num_raw_frames(F)
    c2w = torch.eye(4, dtype=torch.float64).repeat(1, N, 1, 1)
    c2w[0, :, 0, 3] = torch.linspace(0, 0.5, N)  # strafe right
    K = torch.as_tensor(default_intrinsics(*image_hw))[None, None].repeat(1, N, 1, 1)
    cam = camera_condition(c2w, K, image_hw, latent_hw, ts, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    cond = Conditioning(torch.randn(1, 5, cfg.text.dim, generator=g),
                        torch.tensor([[True, True, True, False, False]]), cam)
    image = torch.randn(1, cfg.network.latent_channels, 1, *latent_hw, generator=g)
    return cfg, net, cond, image, F


def test_streaming_equals_chunk_causal_reference(tiny):
    # CFG on: the stream state then holds cond and uncond histories in one batch of 2
    cfg, net, cond, image, F = tiny
    lens = cfg.chunks.chunk_lengths(F)
    kw = {"chunk_lens": lens, "num_steps": 2, "guidance_scale": 2.5, "shift": 3.0}
    a = sample_chunk_causal(net, image, F, cond, generator=torch.Generator().manual_seed(7), **kw)
    b = sample_chunk_causal_reference(net, image, F, cond, generator=torch.Generator().manual_seed(7), **kw)
    assert a.shape == (1, cfg.network.latent_channels, F, *image.shape[-2:])
    assert torch.equal(a[:, :, :1], image)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_cfg_batched_guidance_one_is_conditional(tiny):
    cfg, net, cond, image, F = tiny
    x = torch.randn(1, cfg.network.latent_channels, F, *image.shape[-2:], generator=torch.Generator().manual_seed(3))
    sigma = torch.full((1, F), 0.7)
    with torch.no_grad():
        v_cond = net(x, sigma, cond.text, cond.text_mask, cond.camera)
        v_unc = net(x, sigma, cond.text, torch.zeros_like(cond.text_mask), cond.camera)
        v_g1 = guided_velocity(net, x, sigma, cond, 1.0, always_batch=True)
        v_g0 = guided_velocity(net, x, sigma, cond, 0.0)
        v_g3 = guided_velocity(net, x, sigma, cond, 3.0)
    torch.testing.assert_close(v_g1, v_cond, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v_g0, v_unc, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v_g3, v_unc + 3.0 * (v_cond - v_unc), atol=1e-4, rtol=1e-4)
    assert (v_cond - v_unc).abs().max() > 1e-3  # the text actually matters, so the checks above bite


def test_bidirectional_real_network_deterministic(tiny):
    _cfg, net, cond, image, F = tiny
    kw = {"num_steps": 2, "guidance_scale": 2.0, "shift": 3.0}
    a = sample_bidirectional(net, image, F, cond, generator=torch.Generator().manual_seed(1), **kw)
    b = sample_bidirectional(net, image, F, cond, generator=torch.Generator().manual_seed(1), **kw)
    c = sample_bidirectional(net, image, F, cond, generator=torch.Generator().manual_seed(2), **kw)
    assert torch.equal(a, b) and torch.equal(a[:, :, :1], image) and torch.isfinite(a).all()
    assert (a - c).abs().max() > 1e-2  # the seed really drives the noise


def test_camera_guidance_adds_the_camera_difference(tiny):
    # v = lerp(v_u, v_c, g_text) + (g_cam - 1)(v_c - v_still): one batched forward, checked against separate ones
    cfg, net, cond, image, F = tiny
    x = torch.randn(1, cfg.network.latent_channels, F, *image.shape[-2:], generator=torch.Generator().manual_seed(4))
    sigma = torch.full((1, F), 0.6)
    still = cond.camera.held_still()
    with torch.no_grad():
        v_c = net(x, sigma, cond.text, cond.text_mask, cond.camera)
        v_u = net(x, sigma, cond.text, torch.zeros_like(cond.text_mask), cond.camera)
        v_s = net(x, sigma, cond.text, cond.text_mask, still)
        cam_only = guided_velocity(net, x, sigma, cond, 1.0, camera_guidance=2.5)
        both = guided_velocity(net, x, sigma, cond, 3.0, camera_guidance=2.5)
    assert (v_c - v_s).abs().max() > 1e-3  # the camera matters, so the checks bite
    torch.testing.assert_close(cam_only, v_s + 2.5 * (v_c - v_s), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(both, v_u + 3.0 * (v_c - v_u) + 1.5 * (v_c - v_s), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="camera_guidance"):
        guided_velocity(net, x, sigma, Conditioning(cond.text, cond.text_mask, None), 1.0, camera_guidance=2.0)
    with pytest.raises(ValueError, match="camera_guidance must be finite"):
        guided_velocity(net, x, sigma, cond, 1.0, camera_guidance=float("nan"))


def test_camera_guided_streaming_equals_reference(tiny):
    # Text CFG and camera guidance on: the stream state holds three histories (cond, uncond, still) in one batch
    cfg, net, cond, image, F = tiny
    lens = cfg.chunks.chunk_lengths(F)
    kw = {"chunk_lens": lens, "num_steps": 2, "guidance_scale": 2.0, "shift": 3.0, "camera_guidance": 3.0}
    a = sample_chunk_causal(net, image, F, cond, generator=torch.Generator().manual_seed(7), **kw)
    b = sample_chunk_causal_reference(net, image, F, cond, generator=torch.Generator().manual_seed(7), **kw)
    c = sample_chunk_causal(net, image, F, cond, generator=torch.Generator().manual_seed(7), **{**kw, "camera_guidance": 1.0})
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert (a - c).abs().max() > 1e-3  # camera guidance changes the rollout
