"""Frame-wise gated delta rule: the fast scan used by the GDN blocks (CPU and GPU).

One recurrent step per LATENT FRAME, not per token (DESIGN.md §2). Per head, with K_t, V_t ∈ R^{S×D}
the frame's keys/values and β_t ∈ R^S:

    A_t = K_tᵀ diag(β_t) K_t            (D×D, "erase" directions)
    U_t = K_tᵀ diag(β_t) V_t            (D×E, "write")
    S_t = γ_t (S_{t−1} − A_t S_{t−1}) + U_t

All A_t and U_t are formed for every frame in one batched einsum; the only sequential part is a loop of
F small (D×D)·(D×E) matmuls, batched over B·H. W_t is never materialised. The per-frame states are then
read by all queries of their frame in one more einsum. Memory: F·D·E per head for the stored states,
independent of S, so a chunk in streaming mode costs O(chunk) and the carried state is O(D·E).

Modes:
  bidirectional  global forward scan (inclusive) + global reverse scan (exclusive).
  chunk_causal   global forward scan + reverse scan restricted to each chunk: full attention inside a chunk,
                 causal across chunks. Streaming = chunk_causal over one chunk with ``initial_state``.

Backends: ``torch`` (this file; efficient on GPU too) and ``reference`` (gdn_reference.py). fla ships
token-wise GDN kernels only, so there is no drop-in fused kernel for this frame-wise form yet; a fused CUDA
kernel plugs in through ``SCAN_BACKENDS`` and is tested against the reference.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from model.ops.gdn_reference import framewise_delta_scan_reference, segment_bounds

SCAN_MODES = ("bidirectional", "chunk_causal")


def _check(q, k, v, beta, gamma, mode, chunk_lens, initial_state) -> None:
    if mode not in SCAN_MODES:
        raise ValueError(f"scan mode must be one of {SCAN_MODES}, got {mode!r}")
    if q.shape != k.shape or q.dim() != 5:
        raise ValueError(f"q and k must both be (B,H,F,S,D); got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.shape[:4] != k.shape[:4]:
        raise ValueError(f"v must be (B,H,F,S,E) matching k's first dims {tuple(k.shape[:4])}, got {tuple(v.shape)}")
    if beta.shape != k.shape[:4]:
        raise ValueError(f"beta must be (B,H,F,S)={tuple(k.shape[:4])}, got {tuple(beta.shape)}")
    if gamma.shape != k.shape[:3]:
        raise ValueError(f"gamma must be (B,H,F)={tuple(k.shape[:3])}, got {tuple(gamma.shape)}")
    if mode == "chunk_causal":
        if chunk_lens is None or sum(chunk_lens) != k.shape[2] or min(chunk_lens) < 1:
            raise ValueError(f"chunk_lens {chunk_lens} must be positive and sum to F={k.shape[2]}")
    if initial_state is not None:
        want = (*k.shape[:2], k.shape[-1], v.shape[-1])
        if tuple(initial_state.shape) != want:
            raise ValueError(f"initial_state must be (B,H,D,E)={want}, got {tuple(initial_state.shape)}")


def framewise_delta_scan(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    gamma: torch.Tensor,
    *,
    mode: str = "bidirectional",
    chunk_lens: list[int] | None = None,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Vectorised frame-wise delta scan.

    Shapes: q, k (B,H,F,S,D); v (B,H,F,S,E); beta (B,H,F,S); gamma (B,H,F); initial_state (B,H,D,E) or None.
    Returns (out (B,H,F,S,E), final forward state (B,H,D,E)) — the state after the last frame, which a
    streaming caller carries into the next chunk.
    """
    _check(q, k, v, beta, gamma, mode, chunk_lens, initial_state)
    B, H, F, S, D = k.shape
    E = v.shape[-1]
    kb = k * beta.unsqueeze(-1)
    A = torch.einsum("bhfsd,bhfse->bhfde", kb, k)  # (B,H,F,D,D)
    U = torch.einsum("bhfsd,bhfse->bhfde", kb, v)  # (B,H,F,D,E)
    g = gamma[..., None, None]  # (B,H,F,1,1)

    state = initial_state if initial_state is not None else q.new_zeros(B, H, D, E)
    fwd = []
    for t in range(F):
        state = g[:, :, t] * (state - A[:, :, t] @ state) + U[:, :, t]
        fwd.append(state)
    states = torch.stack(fwd, dim=2)  # (B,H,F,D,E), inclusive

    # Reverse exclusive states: frame t reads frames t+1 .. end of its segment.
    rev_states = [None] * F
    for start, stop in segment_bounds(F, mode, chunk_lens):
        rev = q.new_zeros(B, H, D, E)
        for t in range(stop - 1, start - 1, -1):
            rev_states[t] = rev
            if t > start:  # the last update of a segment would feed nobody
                rev = g[:, :, t] * (rev - A[:, :, t] @ rev) + U[:, :, t]
    states = states + torch.stack(rev_states, dim=2)
    out = torch.einsum("bhfsd,bhfde->bhfse", q, states)
    return out, state


ScanFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]
SCAN_BACKENDS: dict[str, ScanFn] = {
    "torch": framewise_delta_scan,
    "reference": framewise_delta_scan_reference,
}


def get_scan_backend(name: str) -> ScanFn:
    """Look up a scan implementation by name (``torch`` or ``reference``)."""
    if name not in SCAN_BACKENDS:
        raise ValueError(f"unknown GDN scan backend {name!r}; available: {sorted(SCAN_BACKENDS)}")
    return SCAN_BACKENDS[name]
