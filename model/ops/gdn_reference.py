"""Step-by-step reference for the frame-wise gated delta rule (the slow, obviously-correct version).

Every faster backend in ``model/ops/gdn.py`` is tested against this. It loops over batch, heads and frames
in Python and forms the D×D transition W_t = γ_t (I − K_tᵀ diag(β_t) K_t) explicitly, exactly as written
in DESIGN.md §2, so a reader can check it against the paper line by line.
"""

from __future__ import annotations

import torch


def segment_bounds(num_frames: int, mode: str, chunk_lens: list[int] | None) -> list[tuple[int, int]]:
    """[start, stop) of the reverse-scan segments: the whole clip (bidirectional) or each chunk."""
    if mode == "bidirectional":
        return [(0, num_frames)]
    assert chunk_lens is not None and sum(chunk_lens) == num_frames
    bounds, start = [], 0
    for n in chunk_lens:
        bounds.append((start, start + n))
        start += n
    return bounds


def framewise_delta_scan_reference(
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
    """Reference frame-wise delta scan.

    Shapes: q, k (B,H,F,S,D); v (B,H,F,S,E); beta (B,H,F,S); gamma (B,H,F); initial_state (B,H,D,E).
    Returns (out (B,H,F,S,E), final forward state (B,H,D,E)).

    Forward (inclusive):   S_t = γ_t (I − K_tᵀ diag β_t K_t) S_{t−1} + K_tᵀ diag β_t V_t,  out_t = Q_t S_t.
    Backward (exclusive, inside each segment): R_t = W_{t+1} R_{t+1} + K_{t+1}ᵀ diag β V_{t+1}, out_t += Q_t R_t.
    Segments are the whole sequence (bidirectional) or each chunk (chunk_causal); the forward scan is global.
    """
    B, H, F, S, D = k.shape
    E = v.shape[-1]
    out = torch.zeros(B, H, F, S, E, dtype=q.dtype, device=q.device)
    final = torch.zeros(B, H, D, E, dtype=q.dtype, device=q.device)
    eye = torch.eye(D, dtype=q.dtype, device=q.device)
    for b in range(B):
        for h in range(H):
            W = []
            U = []
            for t in range(F):
                Kt, Vt, bt = k[b, h, t], v[b, h, t], beta[b, h, t]
                W.append(gamma[b, h, t] * (eye - Kt.T @ torch.diag(bt) @ Kt))
                U.append(Kt.T @ torch.diag(bt) @ Vt)
            state = (initial_state[b, h].clone() if initial_state is not None
                     else torch.zeros(D, E, dtype=q.dtype, device=q.device))
            for t in range(F):
                state = W[t] @ state + U[t]
                out[b, h, t] += q[b, h, t] @ state
            final[b, h] = state
            for start, stop in segment_bounds(F, mode, chunk_lens):
                rev = torch.zeros(D, E, dtype=q.dtype, device=q.device)
                for t in range(stop - 1, start - 1, -1):
                    out[b, h, t] += q[b, h, t] @ rev  # exclusive: frame t reads frames t+1..stop-1
                    rev = W[t] @ rev + U[t]
    return out, final
