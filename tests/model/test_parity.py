"""Our SanaWM against the released SANA-WM (diffusers ``SanaWMTransformer3DModel``): same state dict,
same velocity in float64 to 1e-6 relative, and the GDN mixer against the formula written out here."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model.camera import camera_condition, look_at
from model.config import get_preset
from model.interop import diffusers_velocity, network_config_from_diffusers
from model.layers.rope import rope_3d
from model.layers.self_attention import GDNMixer
from model.network import SanaWM
from tests.model.reference import lift_reference_casts, randomise_zero_parameters, tiny_reference_kwargs

diffusers = pytest.importorskip("diffusers")
TOL = 1e-6
B, T, H, W, TS = 2, 5, 4, 6, 4


def _pair(**over):
    torch.manual_seed(0)
    kw = tiny_reference_kwargs(**over)
    ref = diffusers.SanaWMTransformer3DModel(**kw).double().eval()
    randomise_zero_parameters(ref)
    ours = SanaWM(network_config_from_diffusers(kw)).double().eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def _camera(moving: bool):
    n = 1 + TS * (T - 1)
    if moving:
        c2w = torch.stack([torch.stack([look_at((0.1 * i * (b + 1), 0.05 * i, 0.3 * i),
                                                (0.3 * i * b + 0.2, 0.1, 5.0 + 0.3 * i)) for i in range(n)])
                           for b in range(B)])
    else:
        c2w = torch.eye(4, dtype=torch.float64).expand(B, n, 4, 4)
    K = torch.tensor([[30.0, 0, 48], [0, 31.0, 32], [0, 0, 1]], dtype=torch.float64).expand(B, n, 3, 3)
    return camera_condition(c2w, K, (64, 96), (H, W), TS, dtype=torch.float64).diffusers_inputs()


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 8, T, H, W, generator=g, dtype=torch.float64)
    t = torch.randint(0, 1000, (B, 1, T), generator=g).double()
    y = torch.randn(B, 1, 7, 48, generator=g, dtype=torch.float64)
    mask = torch.ones(B, 7, dtype=torch.long)
    mask[1, 4:] = 0  # padded text in the second item
    return x, t, y, mask


def _rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("camera", ["moving", "static", "none"])
def test_bidirectional_velocity_equals_reference(camera):
    ref, ours = _pair()
    x, t, y, mask = _inputs()
    cam = () if camera == "none" else _camera(camera == "moving")
    with torch.no_grad():
        with lift_reference_casts():
            extra = dict(camera_conditions=cam[0], chunk_plucker=cam[1]) if cam else {}
            want = ref(x, t, y, mask, **extra).sample
        got = diffusers_velocity(ours, x, t, y, mask, *cam)
    assert got.shape == want.shape == x.shape
    assert _rel(got, want) <= TOL, f"max relative error {_rel(got, want):.2e} > {TOL}"


def test_every_branch_matters():
    """The parity above is not vacuous: camera, Plücker and text each change the reference's output."""
    ref, _ = _pair()
    x, t, y, mask = _inputs()
    rc, cp = _camera(True)
    with torch.no_grad(), lift_reference_casts():
        full = ref(x, t, y, mask, camera_conditions=rc, chunk_plucker=cp).sample
        static = ref(x, t, y, mask, camera_conditions=_camera(False)[0], chunk_plucker=cp).sample
        no_pl = ref(x, t, y, mask, camera_conditions=rc, chunk_plucker=torch.zeros_like(cp)).sample
        other_text = ref(x, t, y.flip(2), mask, camera_conditions=rc, chunk_plucker=cp).sample
    for other in (static, no_pl, other_text):
        assert _rel(other, full) > 1e-3


def test_other_layouts_equal_reference():
    """Softmax every 2nd block, 3 heads of 16 (cross heads differ from self heads), short conv 3."""
    kw = dict(hidden_size=48, num_attention_heads=4, linear_head_dim=16, softmax_every_n=2, conv_kernel_size=3)
    ref, ours = _pair(**kw)
    assert [type(b.attn).__name__ for b in ours.blocks] == ["GDNMixer", "SoftmaxMixer"] * 2
    x, t, y, mask = _inputs(1)
    rc, cp = _camera(True)
    with torch.no_grad():
        with lift_reference_casts():
            want = ref(x, t, y, mask, camera_conditions=rc, chunk_plucker=cp).sample
        got = diffusers_velocity(ours, x, t, y, mask, rc, cp)
    assert _rel(got, want) <= TOL


def test_paper_preset_is_the_released_layout():
    cfg = get_preset("sana_wm_2b6").network
    with torch.device("meta"):
        ours = SanaWM(cfg)
        ref = diffusers.SanaWMTransformer3DModel()
    a = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert a == b
    assert sum(p.numel() for p in ours.parameters()) == 2_661_800_448


# --- the GDN mixer against the formula ----------------------------------------------------------------

def _rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _rotate(x, table):
    """Rotate channel pairs (2i, 2i+1) of x (..., Dh) by angle(table) (..., Dh/2)."""
    a, b = x[..., 0::2], x[..., 1::2]
    c, s = table.real.double(), table.imag.double()
    return torch.stack([a * c - b * s, a * s + b * c], -1).flatten(-2)


def gdn_formula(m: GDNMixer, x: torch.Tensor, hw) -> torch.Tensor:
    """The frame-wise gated delta rule of DESIGN.md §2, written out per frame and per head (no camera).

    x (1,F,S,D) -> (1,F,S,D).
    """
    _, Fn, S, D = x.shape
    Hn, Dh = m.H, m.Dh
    q, k, v = (x[0] @ m.qkv.weight.T).chunk(3, -1)  # (F,S,D)
    w = m.conv_k.weight[:, 0]  # (D,K)
    K = w.shape[1]
    kc = torch.zeros_like(k)
    for t in range(Fn):  # bidirectional short conv: taps t-(K-1) .. t+(K-1), centre once
        for j in range(-(K - 1), K):
            if 0 <= t + j < Fn:
                kc[t] += w[:, K - 1 - abs(j)] * k[t + j]
    q = F.relu(_rms(q, m.q_norm.weight, m.q_norm.eps))
    k = F.relu(_rms(kc, m.k_norm.weight, m.k_norm.eps))
    beta = torch.sigmoid(x[0] @ m.beta_proj.weight.T + m.beta_proj.bias)  # (F,S,H)
    gate = x[0].mean(1) @ m.gate_proj.weight.T + m.gate_proj.bias  # (F,H)
    gamma = torch.exp(-torch.exp(m.A_log) * F.softplus(gate + m.dt_bias))  # (F,H)
    table = rope_3d(Fn, hw, Dh).view(Fn, S, Dh // 2)
    out = torch.zeros(Fn, S, D, dtype=x.dtype)
    for h in range(Hn):
        sl = slice(h * Dh, (h + 1) * Dh)
        qh, vh = q[..., sl], v[..., sl]
        kh = k[..., sl] / math.sqrt(Dh * S)  # key scale 1/sqrt(D*S)
        qr, kr = _rotate(qh, table), _rotate(kh, table)  # RoPE on the numerator stream only

        def states(keys, vals):
            """Inclusive forward states S_t and exclusive reverse states R_t (frames t+1..F-1)."""
            E = vals.shape[-1]
            fwd, st = [], torch.zeros(Dh, E, dtype=x.dtype)
            for t in range(Fn):
                A = keys[t].T @ (beta[t, :, h:h + 1] * keys[t])
                st = gamma[t, h] * (st - A @ st) + keys[t].T @ (beta[t, :, h:h + 1] * vals[t])
                fwd.append(st)
            rev, st = [None] * Fn, torch.zeros(Dh, E, dtype=x.dtype)
            for t in range(Fn - 1, -1, -1):
                rev[t] = st
                A = keys[t].T @ (beta[t, :, h:h + 1] * keys[t])
                st = gamma[t, h] * (st - A @ st) + keys[t].T @ (beta[t, :, h:h + 1] * vals[t])
            return [f + r for f, r in zip(fwd, rev)]

        num = states(kr, vh)
        den = states(kh, torch.ones(Fn, S, 1, dtype=x.dtype))
        for t in range(Fn):
            out[t, :, sl] = (qr[t] @ num[t]) / (qh[t] @ den[t] + m.cfg.gdn_eps)
    gated = out * F.silu(x[0] @ m.output_gate.weight.T + m.output_gate.bias)
    return (gated @ m.proj.weight.T + m.proj.bias)[None]


def test_gdn_mixer_equals_formula():
    cfg = get_preset("tiny").network
    torch.manual_seed(2)
    m = GDNMixer(cfg).double().eval()
    with torch.no_grad():
        m.conv_k.weight.normal_(0, 0.5)
        m.output_gate.weight.normal_(0, 0.1)
        m.q_norm.weight.normal_(1, 0.2)
    hw = (3, 2)
    x = torch.randn(1, 5, 6, cfg.hidden_dim, dtype=torch.float64)
    with torch.no_grad():
        got, _ = m(x, rope_3d(5, hw, cfg.head_dim), None, "bidirectional", None)
        want = gdn_formula(m, x, hw)
    assert _rel(got, want) <= 1e-10


def test_streaming_mode_runs_released_weights():
    """Our extension over the same weights: streaming over a clip equals chunk-causal over it."""
    _, ours = _pair()
    x, t, y, mask = _inputs()
    rc, cp = _camera(True)
    from model.camera import CameraCondition
    cam = CameraCondition(rc, cp.permute(0, 2, 1, 3, 4))
    sigma = t[:, 0] / 1000
    with torch.no_grad():
        full = ours(x, sigma, y[:, 0], mask.bool(), cam, mode="chunk_causal", chunk_lens=[2, 3])
        st = ours.init_stream_state()
        a, st = ours.forward_chunk(x[:, :, :2], sigma[:, :2], y[:, 0], mask.bool(), cam.slice_frames(0, 2), st)
        b, _ = ours.forward_chunk(x[:, :, 2:], sigma[:, 2:], y[:, 0], mask.bool(), cam.slice_frames(2, 5), st)
    assert _rel(torch.cat([a, b], 2), full) <= 1e-10
