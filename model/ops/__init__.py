"""Numerical kernels (pure functions on tensors). Each fast op has a reference beside it."""

from model.ops.gdn import SCAN_BACKENDS, framewise_delta_scan, get_scan_backend
from model.ops.gdn_reference import framewise_delta_scan_reference
from model.ops.softmax_attention import ChunkKVCache, attention, chunk_causal_mask

__all__ = ["SCAN_BACKENDS", "ChunkKVCache", "attention", "chunk_causal_mask", "framewise_delta_scan",
           "framewise_delta_scan_reference", "get_scan_backend"]
