"""SanaWM network: modes agree where they must, camera branches start neutral, errors name the problem."""

import pytest
import torch

from model.config import NetworkConfig, get_preset
from model.layers.camera_transform import RayFrames
from model.layers.rope import rope_3d
from model.layers.self_attention import GDNMixer, SoftmaxMixer
from model.network import SanaWM
from tests.model.conftest import make_inputs

ATOL = 2e-5


def _net(cfg, seed=0, **kw):
    torch.manual_seed(seed)
    return SanaWM(cfg.network, cfg.chunks, **kw).eval()


def _perturb_camera(net, scale=0.05):
    """Give the zero-initialised camera outputs some weight so the branches are live."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "cam_out" in name or "plucker_proj" in name:
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


def test_camera_trajectory_changes_output_once_trained(tiny_cfg):
    net = _net(tiny_cfg)
    _perturb_camera(net)
    a = make_inputs(tiny_cfg, 6, actions="w 3s")
    b = make_inputs(tiny_cfg, 6, actions="e 3s")
    with torch.no_grad():
        assert (net(**a) - net(**b)).abs().max() > 1e-4


def test_softmax_camera_attention_is_relative(tiny_cfg):
    """Re-expressing every ray frame in another world frame leaves the camera branch output unchanged."""
    cfg = tiny_cfg.network
    torch.manual_seed(0)
    mixer = SoftmaxMixer(cfg).eval()
    with torch.no_grad():
        mixer.cam_out.weight.normal_(std=0.1)
    inp = make_inputs(tiny_cfg, 4)
    T = inp["camera"].rays  # (B,F,S,4,4)
    G = torch.eye(4)
    c, s = torch.cos(torch.tensor(0.7)), torch.sin(torch.tensor(0.7))
    G[:3, :3] = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    G[:3, 3] = torch.tensor([0.5, -0.2, 1.5])
    x = torch.randn(1, 4, T.shape[2], cfg.hidden_dim)
    rope = rope_3d(4, tiny_cfg.latent_hw, cfg.resolved_rope_dims)
    with torch.no_grad():
        a, _ = mixer(x, rope, RayFrames.from_transforms(T), "bidirectional", None)
        b, _ = mixer(x, rope, RayFrames.from_transforms(G @ T), "bidirectional", None)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_mixers_share_parameter_layout(tiny_cfg):
    gdn = set(GDNMixer(tiny_cfg.network).state_dict())
    sm = set(SoftmaxMixer(tiny_cfg.network).state_dict())
    assert sm < gdn
    assert gdn - sm == {"beta_proj.weight", "beta_proj.bias", "gamma_proj.weight", "gamma_proj.bias",
                        "A_log", "dt_bias", "k_conv"}
    g = GDNMixer(tiny_cfg.network)
    g.load_state_dict(SoftmaxMixer(tiny_cfg.network).state_dict(), strict=False)  # a checkpoint loads into either


def test_gdn_initialised_as_linear_attention(tiny_cfg):
    g = GDNMixer(tiny_cfg.network)
    x = torch.randn(1, 2, 4, tiny_cfg.network.hidden_dim)
    assert torch.sigmoid(g.beta_proj(x)).min() > 0.95  # β ≈ 1
    gamma = torch.exp(-torch.exp(g.A_log) * torch.nn.functional.softplus(g.gamma_proj(x.mean(2)) + g.dt_bias))
    assert gamma.min() > 0.98  # γ ≈ 1
    assert torch.allclose(torch.nn.functional.silu(g.gate(x)), torch.ones(1), atol=1e-4)  # gate ≈ 1


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
    total = net.parameter_breakdown()["total"]
    assert 2.2e9 < total < 2.8e9


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
