"""Random Hadamard rotation of a linear layer's input, as a module-tree transform (no model code edits).

y = W x = (W R^T)(R x) for any orthogonal R. Quantizing R x and W R^T instead of x and W spreads a few
large channels over all channels of a 16-element block, so the small camera residual the qkv input
carries (branch B adds Plücker features to the stream) is not rounded away next to an outlier
(QuaRot/SpinQuant; DESIGN.md §5). R = blockdiag(H_b / sqrt(b)) * diag(random signs), with H_b a
Sylvester Hadamard matrix of the largest power-of-two block b <= 256 that divides the width (64 for
the 2240-wide model), seeded so a restore rebuilds the same R.
"""

from __future__ import annotations

import fnmatch

import torch
from scipy.linalg import hadamard
from torch import nn


def rotation_matrix(dim: int, seed: int, max_block: int = 256) -> torch.Tensor:
    """Orthogonal (dim, dim) float64 block-Hadamard rotation with random signs."""
    b = 1
    while b * 2 <= max_block and dim % (b * 2) == 0:
        b *= 2
    if b < 16:
        raise ValueError(f"Hadamard rotation needs a width divisible by 16 (an NVFP4 block), got {dim}")
    H = torch.from_numpy(hadamard(b)).double() / b ** 0.5
    R = torch.block_diag(*[H] * (dim // b))
    g = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (dim,), generator=g).double() * 2 - 1
    return R * signs[None, :]


class HadamardLinear(nn.Module):
    """``linear(x @ R^T)`` with ``linear.weight = W R^T``: the same map as the wrapped ``nn.Linear`` W.

    The inner ``linear`` is a plain ``nn.Linear`` so ModelOpt quantizes it (input and weight rotated).
    """

    def __init__(self, base: nn.Linear, seed: int):
        super().__init__()
        R = rotation_matrix(base.in_features, seed)
        self.register_buffer("rotation", R.to(base.weight.dtype))
        self.linear = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                                device=base.weight.device, dtype=base.weight.dtype)
        with torch.no_grad():
            self.linear.weight.copy_((base.weight.double() @ R.T).to(base.weight.dtype))
            if base.bias is not None:
                self.linear.bias.copy_(base.bias)

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) -> (..., out)."""
        return self.linear(x @ self.rotation.T.to(x.dtype))


def apply_hadamard(net: nn.Module, patterns: tuple[str, ...], seed: int = 0) -> list[str]:
    """Replace every ``nn.Linear`` whose qualified name matches one of ``patterns`` (fnmatch). Returns names."""
    names = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)
             and any(fnmatch.fnmatch(n, p) for p in patterns)]
    for i, name in enumerate(names):
        parent_name, _, attr = name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        setattr(parent, attr, HadamardLinear(getattr(parent, attr), seed + i))
    if not names:
        raise ValueError(f"apply_hadamard: no nn.Linear matches {patterns}")
    return names
