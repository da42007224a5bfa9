"""SanaWM network: modes agree where they must, camera branches start neutral, errors name the problem."""

import pytest
import torch

from model.config import NetworkConfig, get_preset
from model.layers.rope import camera_rope, rope_3d
from model.layers.self_attention import GDNMixer, SoftmaxMixer
from model.layers.ucpe import RayTransforms
from model.network import SanaWM
from tests.model.conftest import make_inputs

ATOL = 2e-5


def _net(cfg, seed=0, **kw):
    torch.manual_seed(seed)
    return SanaWM(cfg.network, cfg.chunks, **kw).eval()


def _perturb_camera(net, scale=0.05):
    """Give the zero-initialised camera outputs and temporal convs some weight so every branch is live."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if any(k in name for k in ("out_proj_cam", "plucker_proj", "plucker_embedder", "conv_k")):
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def test_tiny_preset_size_and_shapes(tiny_cfg):
    net = _net(tiny_cfg)
    assert sum(p.numel() for p in net.parameters()) < 5_000_000
    inp = make_inputs(tiny_cfg, 6)
    with torch.no_grad():
        v = net(**inp)
    assert v.shape == inp["x"].shape and torch.isfinite(v).all()


def test_hybrid_layout_is_data(tiny_cfg):
    net = _net(tiny_cfg)
    kinds = [type(b.attn).__name__ for b in net.blocks]
    assert kinds == ["GDNMixer", "GDNMixer", "GDNMixer", "SoftmaxMixer"]
    with pytest.raises(ValueError, match="softmax_blocks has indices outside"):
        NetworkConfig(num_blocks=4, softmax_blocks=(4,))


@pytest.mark.parametrize("frames", [10, 16])  # 3 chunks, and 5 chunks (the K/V window slides)
def test_streaming_equals_chunk_causal(tiny_cfg, frames):
    net = _net(tiny_cfg)
    _perturb_camera(net)
    inp = make_inputs(tiny_cfg, frames)
    with torch.no_grad():
        full = net(**inp, mode="chunk_causal")
        state, outs, s = net.init_stream_state(), [], 0
        for n in tiny_cfg.chunks.chunk_lengths(frames):
            o, state = net.forward_chunk(inp["x"][:, :, s:s + n], inp["sigma"][:, s:s + n], inp["text"],
                                         inp["text_mask"], inp["camera"].slice_frames(s, s + n), state)
            outs.append(o)
            s += n
    torch.testing.assert_close(torch.cat(outs, 2), full, atol=ATOL, rtol=1e-4)
    assert state.frame_offset == frames


def test_chunk_causal_ignores_future_chunks_bidirectional_does_not(tiny_cfg):
    net = _net(tiny_cfg)
    inp = make_inputs(tiny_cfg, 10)
    x2 = inp["x"].clone()
    x2[:, :, 7:] += 3.0  # only the last chunk changes
    with torch.no_grad():
        a = net(**inp, mode="chunk_causal")
        b = net(**{**inp, "x": x2}, mode="chunk_causal")
        c = net(**inp, mode="bidirectional")
        d = net(**{**inp, "x": x2}, mode="bidirectional")
    torch.testing.assert_close(a[:, :, :7], b[:, :, :7], atol=ATOL, rtol=1e-4)
    assert (c[:, :, :7] - d[:, :, :7]).abs().max() > 1e-3


def test_streaming_state_is_bounded(tiny_cfg):
    net = _net(tiny_cfg)
    inp = make_inputs(tiny_cfg, 25)
    sizes, state, s = [], net.init_stream_state(), 0
    with torch.no_grad():
        for n in tiny_cfg.chunks.chunk_lengths(25):
            _, state = net.forward_chunk(inp["x"][:, :, s:s + n], inp["sigma"][:, s:s + n], inp["text"],
                                         inp["text_mask"], inp["camera"].slice_frames(s, s + n), state)
            sizes.append(state.num_bytes())
            s += n
    # Sink + 2 recent chunks: the state stops growing from the 3rd chunk on.
    assert sizes[3:] == [sizes[3]] * len(sizes[3:])
    assert sizes[3] > sizes[0]


def test_streaming_equals_chunk_causal_with_live_temporal_convs(tiny_cfg):
    """The short conv and FFN temporal conv carry their tails across chunks (non-zero conv weights)."""
    net = _net(tiny_cfg, seed=3)
    _perturb_camera(net, scale=0.3)
    inp = make_inputs(tiny_cfg, 13, seed=4)
    with torch.no_grad():
        full = net(**inp, mode="chunk_causal")
        state, outs, s = net.init_stream_state(), [], 0
        for n in tiny_cfg.chunks.chunk_lengths(13):
            o, state = net.forward_chunk(inp["x"][:, :, s:s + n], inp["sigma"][:, s:s + n], inp["text"],
                                         inp["text_mask"], inp["camera"].slice_frames(s, s + n), state)
            outs.append(o)
            s += n
    torch.testing.assert_close(torch.cat(outs, 2), full, atol=ATOL, rtol=1e-4)


def test_one_chunk_chunk_causal_equals_bidirectional(tiny_cfg):
    net = _net(tiny_cfg)
    _perturb_camera(net, scale=0.3)
    inp = make_inputs(tiny_cfg, 4)
    with torch.no_grad():
        a = net(**inp, mode="chunk_causal", chunk_lens=[4])
        b = net(**inp, mode="bidirectional")
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_fresh_camera_branches_leave_output_unchanged(tiny_cfg):
    net = _net(tiny_cfg)
    inp = make_inputs(tiny_cfg, 6)
    with torch.no_grad():
        with_cam = net(**inp)
        without = net(**{**inp, "camera": None})
        torch.testing.assert_close(with_cam, without, atol=0, rtol=0)
        _perturb_camera(net)
        live = net(**inp)
    assert (live - without).abs().max() > 1e-4  # once trained, the camera does steer the output


def test_fresh_camera_branches_can_learn(tiny_cfg):
    """Zero at the output only: every camera branch's zero-initialised layer gets a non-zero gradient on
    the first step. (Both Plücker layers at zero once made branch B dead: each gradient had the other's
    zeros as a factor, and a 1000-step base trained its biases only.)"""
    net = _net(tiny_cfg).train()
    inp = make_inputs(tiny_cfg, 6)
    net(**inp).square().mean().backward()
    for name, p in net.named_parameters():
        if name.endswith(("plucker_proj.weight", "out_proj_cam.weight")):
            assert p.grad is not None and p.grad.abs().max() > 0, name


def test_camera_trajectory_changes_output_once_trained(tiny_cfg):
    net = _net(tiny_cfg)
    _perturb_camera(net)
    a = make_inputs(tiny_cfg, 6, actions="w 3s")
    b = make_inputs(tiny_cfg, 6, actions="e 3s")
    with torch.no_grad():
        assert (net(**a) - net(**b)).abs().max() > 1e-4


@pytest.mark.parametrize("mixer_cls", [SoftmaxMixer, GDNMixer])
def test_camera_attention_is_relative(tiny_cfg, mixer_cls):
    """Rotating the world frame of every pose leaves the camera branch output unchanged (UCPE is relative).

    Only rotations: the release scales each ray-space feature back under its pre-transform RMS, and a
    world TRANSLATION changes those norms (P⁻¹ adds t to the homogeneous part), so exact invariance holds
    for rotations — which is all that matters, since poses are always taken relative to frame 0.
    """
    from model.camera import look_at
    from model.layers.ucpe import world_to_ray_matrices

    cfg = tiny_cfg.network
    torch.manual_seed(0)
    mixer = mixer_cls(cfg).double().eval()
    with torch.no_grad():
        mixer.out_proj_cam.weight.normal_(std=0.1)
    F_, (h, w) = 4, tiny_cfg.latent_hw
    c2w = torch.stack([look_at((0.3 * i, 0.1 * i, 0.5 * i), (0.5 * i, 0.0, 5.0)) for i in range(F_)])
    intr = torch.tensor([6.0, 6.0, 3.5, 3.5], dtype=torch.float64).expand(F_, 4)
    from model.camera import so3_exp

    G = torch.eye(4, dtype=torch.float64)
    G[:3, :3] = so3_exp(torch.tensor([0.3, -0.7, 0.4], dtype=torch.float64))
    raymap_a = torch.cat([c2w.reshape(F_, 16), intr], -1)[None]
    raymap_b = torch.cat([(G @ c2w).reshape(F_, 16), intr], -1)[None]
    x = torch.randn(1, F_, h * w, cfg.hidden_dim, dtype=torch.float64)
    rope = rope_3d(F_, (h, w), cfg.head_dim)
    cam_rope = camera_rope(rope, cfg.head_dim)
    assert world_to_ray_matrices(raymap_a, (h, w)).shape == (1, F_ * h * w, 4, 4)
    with torch.no_grad():
        a, _ = mixer(x, rope, RayTransforms.build(raymap_a, (h, w), cam_rope), "bidirectional", None)
        b, _ = mixer(x, rope, RayTransforms.build(raymap_b, (h, w), cam_rope), "bidirectional", None)
        none, _ = mixer(x, rope, None, "bidirectional", None)
    torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)
    assert (a - none).abs().max() > 1e-4


def test_mixers_share_parameter_layout(tiny_cfg):
    gdn = set(GDNMixer(tiny_cfg.network).state_dict())
    sm = set(SoftmaxMixer(tiny_cfg.network).state_dict())
    assert sm < gdn
    assert gdn - sm == {"conv_k.weight", "conv_k_cam.weight"}
    g = GDNMixer(tiny_cfg.network)
    g.load_state_dict(SoftmaxMixer(tiny_cfg.network).state_dict(), strict=False)  # a checkpoint loads into either


def test_fresh_output_gate_is_open(tiny_cfg):
    g = GDNMixer(tiny_cfg.network)
    x = torch.randn(1, 2, 4, tiny_cfg.network.hidden_dim)
    assert torch.allclose(torch.nn.functional.silu(g.output_gate(x)), torch.ones(1), atol=1e-4)  # gate ≈ 1


def test_text_mask_all_false_is_defined(tiny_cfg):
    net = _net(tiny_cfg)
    inp = make_inputs(tiny_cfg, 6)
    with torch.no_grad():
        v = net(**{**inp, "text_mask": torch.zeros_like(inp["text_mask"])})
    assert torch.isfinite(v).all()


def test_bad_inputs_are_named(tiny_cfg):
    net = _net(tiny_cfg)
    inp = make_inputs(tiny_cfg, 6)
    with pytest.raises(ValueError, match="sigma must be per latent frame"):
        net(**{**inp, "sigma": inp["sigma"][:, :3]})
    with pytest.raises(ValueError, match="latents must be"):
        net(**{**inp, "x": inp["x"][:, :3]})
    with pytest.raises(ValueError, match="camera.plucker"):
        net(**{**inp, "camera": inp["camera"].slice_frames(0, 3)})
    with pytest.raises(ValueError, match="mode must be"):
        net(**inp, mode="causal")


def test_paper_preset_builds_on_meta():
    cfg = get_preset("sana_wm_2b6")
    with torch.device("meta"):
        net = SanaWM(cfg.network, cfg.chunks)
    # exactly diffusers' SanaWMTransformer3DModel() at its defaults (the released SANA-WM_bidirectional)
    assert net.parameter_breakdown()["total"] == 2_661_800_448


def test_bf16_forward_runs(tiny_cfg):
    """The bf16 path (the GPU default) works on CPU too and stays close to fp32."""
    net = _net(tiny_cfg)
    inp = make_inputs(tiny_cfg, 6)
    with torch.no_grad():
        ref = net(**inp)
        out = net.to(torch.bfloat16)(**inp)
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().mean() < 0.05 * ref.abs().mean() + 1e-2
