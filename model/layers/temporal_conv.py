"""Temporal convolutions over latent frames that respect the attention mode.

Two convolutions of the released SANA-WM look across frames: the short depthwise conv on GDN keys
(``conv_k``: a causal kernel run forwards and backwards, window t-(K-1) .. t+(K-1)) and the FFN's dense
temporal conv (``t_conv``: taps t-1, t, t+1). The release runs them bidirectionally. Our chunk-causal and
streaming modes need every output to depend only on its own chunk and the past, so a tap that would read
a frame of a LATER chunk reads zero — the same zero the bidirectional conv reads past the clip's end.
Inside a chunk they are unchanged, so over one chunk covering the clip all modes agree exactly, and
streaming carries only the last K-1 (resp. 1) input frames as a tail: constant memory.

Tensors are (B, F, S, C): F latent frames, S tokens per frame, C channels.
"""

from __future__ import annotations

import torch
from torch import nn


def segment_ends(num_frames: int, chunk_lens: list[int] | None, device: torch.device | None = None) -> torch.Tensor:
    """(F,) exclusive end frame of the segment each frame lies in (one segment when ``chunk_lens`` is None)."""
    if chunk_lens is None:
        return torch.full((num_frames,), num_frames, dtype=torch.long, device=device)
    ends = torch.cumsum(torch.tensor(chunk_lens, device=device), 0)
    return torch.repeat_interleave(ends, torch.tensor(chunk_lens, device=device))


def _past(x: torch.Tensor, m: int, tail: torch.Tensor | None) -> torch.Tensor:
    """x shifted by m frames towards the future: out[t] = x[t-m], reading ``tail`` (or zeros) before 0."""
    if m == 0:
        return x
    pre = tail[:, tail.shape[1] - m:] if tail is not None else x.new_zeros(x.shape[0], m, *x.shape[2:])
    return torch.cat([pre, x], dim=1)[:, : x.shape[1]]


def _future(x: torch.Tensor, m: int, ends: torch.Tensor) -> torch.Tensor:
    """out[t] = x[t+m] when t+m lies in t's segment, else 0."""
    F_ = x.shape[1]
    shifted = torch.cat([x[:, m:], x.new_zeros(x.shape[0], min(m, F_), *x.shape[2:])], dim=1)
    keep = (torch.arange(F_, device=x.device) + m < ends).to(x.dtype)
    return shifted * keep.view(1, F_, *([1] * (x.dim() - 2)))


def _new_tail(x: torch.Tensor, tail: torch.Tensor | None, n: int) -> torch.Tensor:
    """The last n input frames (across the previous tail when this chunk is shorter than n)."""
    prev = tail if tail is not None else x.new_zeros(x.shape[0], n, *x.shape[2:])
    return torch.cat([prev, x], dim=1)[:, -n:]


class BidirectionalShortConv(nn.Module):
    """Depthwise temporal conv run as a causal kernel forwards and backwards (release: ``conv_k``).

    y[t] = Σ_{m=0}^{K-1} w[K-1-m] (x[t-m] + x[t+m]) - w[K-1] x[t]: the centre tap counted once.
    ``weight`` (C, 1, K) is the release's parameter layout. The release initialises it to zero, which
    zeroes every GDN key (and so the whole attention) until training moves it; we start from the
    identity (centre tap 1) so a network trained from scratch attends from its first step.
    """

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.zeros(channels, 1, kernel_size))
        with torch.no_grad():
            self.weight[:, 0, -1] = 1.0

    def forward(self, x: torch.Tensor, chunk_lens: list[int] | None = None, tail: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B,F,S,C); chunk_lens None = bidirectional; tail (B,K-1,S,C) past input or None.

        Returns (y (B,F,S,C), new tail (B,K-1,S,C)).
        """
        K = self.kernel_size
        w = self.weight[:, 0].to(x.dtype)  # (C, K)
        ends = segment_ends(x.shape[1], chunk_lens, x.device)
        y = w[:, K - 1] * x
        for m in range(1, K):
            y = y + w[:, K - 1 - m] * (_past(x, m, tail) + _future(x, m, ends))
        return y, _new_tail(x, tail, K - 1)


class ResidualTemporalConv(nn.Module):
    """Dense temporal conv with a residual, taps t-1, t, t+1 (release: ``GLUMBConvTemp.t_conv``).

    y = x + Σ_k W_k x[t-1+k]; ``weight`` (C, C, 3, 1) is the release's ``nn.Conv2d`` layout.
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size != 3:
            raise ValueError(f"ResidualTemporalConv supports kernel 3 (the release's), got {kernel_size}")
        self.weight = nn.Parameter(torch.empty(channels, channels, kernel_size, 1))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)  # nn.Conv2d's default init

    def forward(self, x: torch.Tensor, chunk_lens: list[int] | None = None, tail: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B,F,S,C); tail (B,1,S,C) the previous frame or None -> (y (B,F,S,C), new tail (B,1,S,C))."""
        W = self.weight[..., 0].to(x.dtype)  # (C_out, C_in, 3)
        ends = segment_ends(x.shape[1], chunk_lens, x.device)
        taps = (_past(x, 1, tail), x, _future(x, 1, ends))
        y = x + sum(t @ W[:, :, k].T for k, t in enumerate(taps))
        return y, _new_tail(x, tail, 1)
