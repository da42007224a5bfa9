"""Frame-wise GDN scan: the vectorised backend against the step-by-step reference, and streaming."""

import pytest
import torch

from model.ops.gdn import framewise_delta_scan, get_scan_backend
from model.ops.gdn_reference import framewise_delta_scan_reference

TOL = dict(atol=1e-10, rtol=1e-9)  # float64: the two differ only by summation order


def _inputs(B=2, H=3, F=7, S=5, D=8, E=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    k = torch.relu(r(B, H, F, S, D))
    k = k / (k.norm(dim=-1, keepdim=True) * S ** 0.5 + 1e-9)  # spectral bound as in the layer
    return dict(q=r(B, H, F, S, D), k=k, v=r(B, H, F, S, E),
                beta=torch.rand(B, H, F, S, generator=g, dtype=torch.float64),
                gamma=torch.rand(B, H, F, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("mode,chunks", [("bidirectional", None), ("chunk_causal", [4, 3]),
                                         ("chunk_causal", [1, 1, 1, 1, 1, 1, 1]), ("chunk_causal", [7])])
def test_vectorised_matches_reference(mode, chunks):
    x = _inputs()
    out, fin = framewise_delta_scan(**x, mode=mode, chunk_lens=chunks)
    ref, ref_fin = framewise_delta_scan_reference(**x, mode=mode, chunk_lens=chunks)
    torch.testing.assert_close(out, ref, **TOL)
    torch.testing.assert_close(fin, ref_fin, **TOL)


def test_streaming_equals_chunk_causal():
    x = _inputs(F=10)
    chunks = [4, 3, 3]
    full, _ = framewise_delta_scan(**x, mode="chunk_causal", chunk_lens=chunks)
    state, outs, s = None, [], 0
    for n in chunks:
        part = {k: v[:, :, s:s + n] for k, v in x.items()}
        o, state = framewise_delta_scan(**part, mode="chunk_causal", chunk_lens=[n], initial_state=state)
        outs.append(o)
        s += n
    torch.testing.assert_close(torch.cat(outs, dim=2), full, **TOL)
    assert state.shape == (2, 3, 8, 6)  # D×E per head, whatever the video length


def test_chunk_causal_does_not_see_future_chunks():
    x = _inputs(F=7)
    base, _ = framewise_delta_scan(**x, mode="chunk_causal", chunk_lens=[4, 3])
    x2 = {k: v.clone() for k, v in x.items()}
    x2["v"][:, :, 4:] += 10.0  # change only the second chunk
    pert, _ = framewise_delta_scan(**x2, mode="chunk_causal", chunk_lens=[4, 3])
    torch.testing.assert_close(pert[:, :, :4], base[:, :, :4], **TOL)
    assert (pert[:, :, 4:] - base[:, :, 4:]).abs().max() > 1e-3
    bid, _ = framewise_delta_scan(**x2, mode="bidirectional")
    bid0, _ = framewise_delta_scan(**x, mode="bidirectional")
    assert (bid[:, :, :4] - bid0[:, :, :4]).abs().max() > 1e-3  # bidirectional does see them


def test_bad_shapes_named():
    x = _inputs()
    with pytest.raises(ValueError, match="beta must be"):
        framewise_delta_scan(**{**x, "beta": x["beta"][..., :2]})
    with pytest.raises(ValueError, match="chunk_lens"):
        framewise_delta_scan(**x, mode="chunk_causal", chunk_lens=[3, 3])
    with pytest.raises(ValueError, match="unknown GDN scan backend"):
        get_scan_backend("nope")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_reference():
    x = {k: v.float().cuda() for k, v in _inputs().items()}
    out, _ = framewise_delta_scan(**x, mode="chunk_causal", chunk_lens=[4, 3])
    ref, _ = framewise_delta_scan_reference(**{k: v.double().cpu() for k, v in x.items()},
                                            mode="chunk_causal", chunk_lens=[4, 3])
    torch.testing.assert_close(out.double().cpu(), ref, atol=1e-4, rtol=1e-4)
