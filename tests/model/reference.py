"""The released SANA-WM (diffusers ``SanaWMTransformer3DModel``) as a test oracle.

``lift_reference_casts`` runs the reference at float64 end to end. The release hard-codes lower-precision
casts inside its forward — ``.float()`` before the GDN scans ("force FP32 for recurrent stability"),
``.to(float32)`` around RoPE and RMSNorm, and ``.bfloat16()`` before the softmax camera attention — so a
float64 call still computes parts in fp32/bf16 (relative error ~1e-5 against an exact float64 model).
Inside the context those casts are no-ops for float64 tensors (the maths is unchanged, only the
rounding), which lets the parity tests compare the MATHS at 1e-6. The release's unused absolute camera
map (``compute_up_lat_map``, only read when the chunk-Plücker branch is off) keeps its own fp32 casts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def lift_reference_casts() -> Iterator[None]:
    import diffusers.models.transformers.transformer_sana_wm as ref_module

    orig_float, orig_bf16, orig_to = torch.Tensor.float, torch.Tensor.bfloat16, torch.Tensor.to
    low = (torch.float32, torch.bfloat16)

    def to_float(self, *a, **k):
        return self if self.dtype == torch.float64 else orig_float(self, *a, **k)

    def to_bf16(self, *a, **k):
        return self if self.dtype == torch.float64 else orig_bf16(self, *a, **k)

    def to(self, *a, **k):
        if self.dtype == torch.float64:
            a = tuple(torch.float64 if x in low else x for x in a)
            if k.get("dtype") in low:
                k["dtype"] = torch.float64
        return orig_to(self, *a, **k)

    def patch(on: bool) -> None:
        torch.Tensor.float, torch.Tensor.bfloat16, torch.Tensor.to = (
            (to_float, to_bf16, to) if on else (orig_float, orig_bf16, orig_to))

    orig_up = ref_module.compute_up_lat_map

    def up_lat_map(R, *a, **k):
        patch(False)
        try:
            outs = orig_up(R, *a, **k)
        finally:
            patch(True)
        return tuple(o.to(R.dtype) for o in outs)

    ref_module.compute_up_lat_map = up_lat_map
    patch(True)
    try:
        yield
    finally:
        patch(False)
        ref_module.compute_up_lat_map = orig_up


def tiny_reference_kwargs(**over) -> dict:
    """A tiny SanaWMTransformer3DModel config: 4 blocks (GDN, GDN, GDN, softmax), hidden 64, 2 heads x 32."""
    kw = dict(in_channels=8, num_layers=4, hidden_size=64, num_attention_heads=2, linear_head_dim=32,
              caption_channels=48, chunk_plucker_channels=24, chunk_plucker_post_attn_blocks=4)
    kw.update(over)
    return kw


def randomise_zero_parameters(module: torch.nn.Module, std: float = 0.3, seed: int = 0) -> list[str]:
    """Give every all-zero parameter (plucker_embedder, conv_k*) random values so all branches are live."""
    g = torch.Generator().manual_seed(seed)
    names = []
    with torch.no_grad():
        for name, p in module.named_parameters():
            if (p == 0).all():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) * std)
                names.append(name)
    return names
