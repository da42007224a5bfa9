"""Interop with the released SANA-WM: diffusers ``SanaWMTransformer3DModel`` directories and the NVlabs
streaming release's ``sana_dit/model.pt``.

Our ``SanaWM`` has the reference's parameter names and shapes, so interop is a config mapping plus strict
state-dict loading; nothing here imports diffusers' SANA-WM classes.

  * ``load_diffusers_transformer(dir)``   a ``save_pretrained`` directory (config.json + safetensors,
                                          sharded or not) -> ``SanaWM``, every key used or a clear error.
  * ``save_diffusers_transformer(net, dir)`` the reverse; ``SanaWMTransformer3DModel.from_pretrained`` reads it.
  * ``diffusers_velocity(net, ...)``      our network on the reference's input conventions; returns what
                                          ``SanaWMTransformer3DModel(...).sample`` returns.
  * ``load_sana_checkpoint(path)``        the streaming release's DiT checkpoint, tensors only.

Streaming-release key mapping (``sana_dit/model.pt``), as NVlabs/Sana writes it and diffusers documents
("state-dict identical to the public sana checkpoint apart from the intentionally-removed pos_embed"):
  1. the file is a dict; the weights sit under ``state_dict`` (else ``ema``, ``model``, ``module``) or at the
     top level;
  2. wrappers' prefixes ``module.`` (DDP/DeepSpeed), ``_orig_mod.`` (torch.compile) are stripped;
  3. ``pos_embed`` (a fixed sin-cos buffer the RoPE model never reads) is dropped;
  4. every other key is used as it is: it is already our (= diffusers') name.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch

from model.camera import CameraCondition
from model.checkpoint import (
    CheckpointMismatchError,
    apply_state_dict,
    atomic_directory,
    load_state_dict,
    write_state_dict,
)
from model.config import ChunkConfig, NetworkConfig
from model.network import TIMESTEP_SCALE, SanaWM

__all__ = [
    "DIFFUSERS_CLASS",
    "diffusers_config",
    "diffusers_velocity",
    "load_diffusers_transformer",
    "load_sana_checkpoint",
    "network_config_from_diffusers",
    "save_diffusers_transformer",
    "softmax_every_n",
]

DIFFUSERS_CLASS = "SanaWMTransformer3DModel"
DIFFUSERS_STEM = "diffusion_pytorch_model"

# Options of the reference config this network implements, with the only values it supports.
_FIXED = {
    "patch_size": [1, 1, 1], "ffn_type": "GLUMBConvTemp", "t_kernel_size": 3, "k_conv_only": True,
    "pos_embed_type": "wan_rope", "qk_norm": True, "cross_norm": True, "y_norm": True, "cam_attn_compress": 1,
    "use_chunk_plucker_post_attn": True, "mlp_acts": ["silu", "silu", None], "use_pe": True,
    "learn_sigma": False, "pred_sigma": False,
}
# The reference's constructor defaults = the public SANA-WM_bidirectional release (a config.json may omit any).
RELEASE_DEFAULTS: dict[str, Any] = {
    "in_channels": 128, "num_layers": 20, "hidden_size": 2240, "num_attention_heads": 20, "softmax_every_n": 4,
    "linear_head_dim": 112, "conv_kernel_size": 4, "chunk_plucker_channels": 48,
    "chunk_plucker_post_attn_blocks": 20, "caption_channels": 2304, "mlp_ratio": 3.0, **_FIXED,
}
# Options that change nothing in the forward (the reference documents them as unused / informational).
_IGNORED = {"init_cam_from_base", "fp32_attention", "image_size", "mixed_precision", "_class_name",
            "_diffusers_version", "_name_or_path"}


def softmax_every_n(cfg: NetworkConfig) -> int:
    """The reference's ``softmax_every_n`` for our layout; raises if the layout is not every n-th block."""
    blocks = tuple(sorted(cfg.softmax_blocks))
    if not blocks:
        return 0
    n = blocks[0] + 1
    want = tuple(i for i in range(cfg.num_blocks) if (i + 1) % n == 0)
    if blocks != want:
        raise ValueError(f"softmax_blocks {cfg.softmax_blocks} is not 'every n-th block' (blocks i with "
                         f"(i+1) % n == 0), which is all {DIFFUSERS_CLASS} can express")
    return n


def diffusers_config(cfg: NetworkConfig) -> dict[str, Any]:
    """The ``SanaWMTransformer3DModel`` config dict for a network config (what ``config.json`` holds)."""
    return {
        "in_channels": cfg.latent_channels, "num_layers": cfg.num_blocks, "hidden_size": cfg.hidden_dim,
        "num_attention_heads": cfg.resolved_cross_heads, "softmax_every_n": softmax_every_n(cfg),
        "linear_head_dim": cfg.head_dim, "conv_kernel_size": cfg.short_conv_kernel,
        "chunk_plucker_channels": cfg.plucker_channels, "chunk_plucker_post_attn_blocks": cfg.num_blocks,
        "caption_channels": cfg.text_dim, "mlp_ratio": cfg.mlp_ratio, **_FIXED,
    }


def network_config_from_diffusers(d: dict[str, Any]) -> NetworkConfig:
    """Our ``NetworkConfig`` for a reference config dict; raises naming any option we do not implement."""
    full = {**RELEASE_DEFAULTS, **d}
    bad = []
    for key, want in _FIXED.items():
        got = full.get(key, want)
        got = list(got) if isinstance(got, (list, tuple)) else got
        if got != want:
            bad.append(f"{key}={got!r} (supported: {want!r})")
    L = int(full["num_layers"])
    if full["chunk_plucker_post_attn_blocks"] not in (-1,) and full["chunk_plucker_post_attn_blocks"] < L:
        bad.append(f"chunk_plucker_post_attn_blocks={full['chunk_plucker_post_attn_blocks']} (supported: all "
                   f"{L} blocks)")
    if full["chunk_plucker_channels"] % 6:
        bad.append(f"chunk_plucker_channels={full['chunk_plucker_channels']} (must be 6 x temporal stride)")
    known = set(_FIXED) | _IGNORED | {"in_channels", "num_layers", "hidden_size", "num_attention_heads",
                                     "softmax_every_n", "linear_head_dim", "conv_kernel_size",
                                     "chunk_plucker_channels", "chunk_plucker_post_attn_blocks",
                                     "caption_channels", "mlp_ratio"}
    bad += [f"unknown option {k!r}" for k in sorted(set(d) - known)]
    if bad:
        raise ValueError(f"{DIFFUSERS_CLASS} config not supported by model.network.SanaWM: " + "; ".join(bad))
    n, D, Dh = int(full["softmax_every_n"]), int(full["hidden_size"]), int(full["linear_head_dim"])
    return NetworkConfig(
        latent_channels=int(full["in_channels"]), hidden_dim=D, num_heads=D // Dh, head_dim=Dh, num_blocks=L,
        softmax_blocks=tuple(i for i in range(L) if n > 0 and (i + 1) % n == 0),
        mlp_ratio=float(full["mlp_ratio"]), text_dim=int(full["caption_channels"]),
        temporal_stride=int(full["chunk_plucker_channels"]) // 6,
        cross_heads=int(full["num_attention_heads"]), short_conv_kernel=int(full["conv_kernel_size"]),
    )


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a diffusers model directory: no config.json")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    cls = d.get("_class_name", DIFFUSERS_CLASS)
    if cls != DIFFUSERS_CLASS:
        raise ValueError(f"{path} describes a {cls}, not a {DIFFUSERS_CLASS}")
    return d


def load_diffusers_transformer(directory: str | Path, chunks: ChunkConfig | None = None,
                               dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> SanaWM:
    """Build our network from a ``SanaWMTransformer3DModel.save_pretrained`` directory, strictly.

    Raises ``FileNotFoundError`` / ``ValueError`` naming the directory, and ``CheckpointMismatchError``
    listing missing, unexpected and shape-mismatched keys.
    """
    directory = Path(directory)
    cfg = network_config_from_diffusers(_read_config(directory))
    with torch.device("meta"):
        net = SanaWM(cfg, chunks)
    sd = load_state_dict(directory, stem=DIFFUSERS_STEM)
    apply_state_dict(net, sd, strict=True, source=f"diffusers transformer {str(directory)!r}")
    net = net.to(device)
    return net.to(dtype) if dtype is not None else net


def save_diffusers_transformer(net: SanaWM, directory: str | Path, max_shard_bytes: int = 5 * 1024**3) -> Path:
    """Write ``net`` as a diffusers ``SanaWMTransformer3DModel`` directory (atomic). Returns the directory."""
    import diffusers

    cfg = {"_class_name": DIFFUSERS_CLASS, "_diffusers_version": diffusers.__version__,
           **diffusers_config(net.cfg)}
    with atomic_directory(directory) as tmp:
        write_state_dict(net.state_dict(), tmp, max_shard_bytes, stem=DIFFUSERS_STEM)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    return Path(directory)


def diffusers_velocity(net: SanaWM, hidden_states: torch.Tensor, timestep: torch.Tensor,
                       encoder_hidden_states: torch.Tensor, encoder_attention_mask: torch.Tensor,
                       camera_conditions: torch.Tensor | None = None,
                       chunk_plucker: torch.Tensor | None = None) -> torch.Tensor:
    """Run ``net`` (bidirectional) on the reference's inputs; returns its ``.sample``.

    hidden_states (B,C,T,H,W); timestep (B,1,T) in [0,1000] (truncated to integers, as the reference
    does); encoder_hidden_states (B,1,L,D) or (B,L,D); encoder_attention_mask (B,L); camera_conditions
    (B,T,20) and chunk_plucker (B,6·ts,T,H,W), both or neither. Returns (B,C,T,H,W).
    """
    B, _, T = hidden_states.shape[:3]
    if timestep.numel() != B * T:
        raise ValueError(f"timestep must be (B,1,T)=({B},1,{T}), got {tuple(timestep.shape)}")
    sigma = timestep.reshape(B, T).long().to(hidden_states.dtype) / TIMESTEP_SCALE
    text = encoder_hidden_states.reshape(B, -1, encoder_hidden_states.shape[-1])
    if (camera_conditions is None) != (chunk_plucker is None):
        raise ValueError("pass camera_conditions and chunk_plucker together (the released model uses both)")
    camera = None
    if camera_conditions is not None:
        camera = CameraCondition(camera_conditions, chunk_plucker.permute(0, 2, 1, 3, 4))
    return net(hidden_states, sigma, text, encoder_attention_mask.bool(), camera, mode="bidirectional")


_CONTAINERS = ("state_dict", "ema", "model", "module")
_PREFIXES = ("module.", "_orig_mod.")
_DROPPED = ("pos_embed",)


def load_sana_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The streaming release's DiT weights (``sana_dit/model.pt``) as our state dict (see module docstring).

    Reads tensors only (``torch.load(weights_only=True)``): a file that needs arbitrary unpickling is
    refused with an error rather than executed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SANA checkpoint {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise ValueError(f"{path}: not a tensors-only PyTorch checkpoint (refusing to unpickle arbitrary "
                         f"objects): {str(e).splitlines()[0]}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    for key in _CONTAINERS:
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    out: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            continue  # training metadata (step counters, configs) that the loader skips
        for p in _PREFIXES:
            k = k.removeprefix(p)
        if k in _DROPPED:
            continue
        out[k] = v
    if not out:
        raise ValueError(f"{path}: no tensors found (looked at the top level and under {_CONTAINERS})")
    return out


def load_sana_transformer(path: str | Path, cfg: NetworkConfig, chunks: ChunkConfig | None = None) -> SanaWM:
    """A ``SanaWM`` of ``cfg`` with the streaming release's weights, strictly."""
    with torch.device("meta"):
        net = SanaWM(cfg, chunks)
    try:
        apply_state_dict(net, load_sana_checkpoint(path), strict=True, source=f"SANA checkpoint {str(path)!r}")
    except CheckpointMismatchError as e:
        raise CheckpointMismatchError(f"{e} (is the network config right for this checkpoint?)") from e
    return net.to("cpu")
