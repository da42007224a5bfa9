"""What every served model answers a bad request with (shared by the one-shot predictor and sessions)."""

from __future__ import annotations

SEED_MAX = 2**63 - 1  # the wire type is INT64; torch.Generator.manual_seed takes any non-negative int64


class RequestError(ValueError):
    """A request the model cannot serve; the message names the input and what is wrong with it."""
