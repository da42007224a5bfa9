"""Safetensors checkpoints: sharded save/load, atomic directory writes, strict loading with clear errors.

Layout (the Hugging Face one, so other tools can read our bundles):
  * small models: ``<dir>/model.safetensors``;
  * large models: ``<dir>/model-0000i-of-0000n.safetensors`` plus ``<dir>/model.safetensors.index.json``
    (``{"metadata": {"total_size": bytes}, "weight_map": {key: file}}``). The shard split is
    ``huggingface_hub.split_torch_state_dict_into_shards``, the same planner transformers uses.

Nothing here unpickles: safetensors stores raw tensors plus a JSON header, so loading a checkpoint can
never execute code. Writes go to a hidden temp directory next to the target and are renamed into place,
so a crash never leaves a half-written checkpoint where a reader would find it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "INDEX_FILE",
    "SINGLE_FILE",
    "CheckpointMismatchError",
    "LoadReport",
    "apply_state_dict",
    "atomic_directory",
    "load_into",
    "load_state_dict",
    "save_state_dict",
    "write_state_dict",
]

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3


class CheckpointMismatchError(ValueError):
    """A checkpoint's keys or shapes do not match the module it is loaded into."""


class LoadReport:
    """Outcome of ``load_into``: keys the checkpoint lacked, keys it had extra, and shape conflicts."""

    def __init__(self, missing: list[str], unexpected: list[str], mismatched: list[tuple[str, tuple, tuple]]):
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched  # (key, shape in checkpoint, shape in module)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, first: int = 5) -> str:
        """Human-readable summary: the first ``first`` keys of each kind, with counts."""
        parts = []
        for name, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                more = f", ... (+{len(items) - first} more)" if len(items) > first else ""
                parts.append(f"{len(items)} {name} keys: {', '.join(items[:first])}{more}")
        if self.mismatched:
            shown = [f"{k} (checkpoint {list(a)} vs module {list(b)})" for k, a, b in self.mismatched[:first]]
            more = f", ... (+{len(self.mismatched) - first} more)" if len(self.mismatched) > first else ""
            parts.append(f"{len(self.mismatched)} shape-mismatched keys: {', '.join(shown)}{more}")
        return "; ".join(parts) if parts else "all keys match"


def atomic_directory(target: str | Path, overwrite: bool = True):
    """``model.atomic.atomic_dir``: a temp folder that replaces ``target`` on success (kept under this name
    for the checkpoint API)."""
    from model.atomic import atomic_dir

    return atomic_dir(target, overwrite=overwrite)


def _prepare(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors; tensors sharing storage (tied weights) are cloned apart,
    since safetensors refuses aliased tensors."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"state dict value for {k!r} is {type(v).__name__}, not a tensor")
        if v.device.type == "meta":
            raise ValueError(f"cannot save {k!r}: it is on the meta device (no data)")
        t = v.detach().to("cpu").contiguous()
        aliased = t.numel() > 0 and t.untyped_storage().data_ptr() in seen
        is_view = t.untyped_storage().nbytes() != t.numel() * t.element_size()  # a slice of a bigger buffer
        if aliased or is_view:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[k] = t
    return out


def write_state_dict(state_dict: Mapping[str, torch.Tensor], directory: str | Path,
                     max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, stem: str = "model") -> list[Path]:
    """Write ``state_dict`` into an existing ``directory`` (not atomic; see ``save_state_dict``).

    Returns the written files. One ``model.safetensors`` when everything fits in ``max_shard_bytes``,
    otherwise numbered shards plus ``model.safetensors.index.json``. ``stem`` renames the files
    (diffusers models use ``diffusion_pytorch_model``).
    """
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    if max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes must be > 0, got {max_shard_bytes}")
    directory = Path(directory)
    sd = _prepare(state_dict)
    pattern = stem + "{suffix}.safetensors"
    split = split_torch_state_dict_into_shards(sd, filename_pattern=pattern, max_shard_size=max_shard_bytes)
    written = []
    for filename, keys in split.filename_to_tensors.items():
        save_file({k: sd[k] for k in keys}, str(directory / filename), metadata={"format": "pt"})
        written.append(directory / filename)
    if split.is_sharded:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in sd.values())},
                 "weight_map": dict(sorted(split.tensor_to_filename.items()))}
        (directory / f"{stem}.safetensors.index.json").write_text(json.dumps(index, indent=2))
        written.append(directory / f"{stem}.safetensors.index.json")
    return written


def save_state_dict(state_dict: Mapping[str, torch.Tensor], directory: str | Path,
                    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> Path:
    """Atomically write ``state_dict`` as safetensors into ``directory`` (replacing it). Returns it."""
    with atomic_directory(directory) as tmp:
        write_state_dict(state_dict, tmp, max_shard_bytes)
    return Path(directory)


def _checkpoint_files(directory: Path, stem: str = "model") -> list[Path]:
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {str(directory)!r} does not exist")
    index = directory / f"{stem}.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{index} is not a valid safetensors index (needs a 'weight_map'): {e}") from e
        files = [directory / f for f in sorted(set(weight_map.values()))]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{index} names shard files that do not exist: {missing}")
        return files
    single = directory / f"{stem}.safetensors"
    if single.is_file():
        return [single]
    raise FileNotFoundError(f"no checkpoint in {str(directory)!r}: expected {single.name} or {index.name}")


def load_state_dict(directory: str | Path, device: str | torch.device = "cpu",
                    stem: str = "model") -> dict[str, torch.Tensor]:
    """Read a (possibly sharded) safetensors checkpoint directory into a flat state dict on ``device``."""
    from safetensors.torch import load_file

    sd: dict[str, torch.Tensor] = {}
    for f in _checkpoint_files(Path(directory), stem):
        part = load_file(str(f), device=str(device))
        dup = sorted(set(part) & set(sd))
        if dup:
            raise ValueError(f"checkpoint {directory}: keys appear in more than one shard: {dup[:5]}")
        sd.update(part)
    return sd


def load_into(module: nn.Module, directory: str | Path, strict: bool = True) -> LoadReport:
    """Load a checkpoint directory into ``module``.

    ``strict=True`` raises ``CheckpointMismatchError`` listing missing, unexpected and shape-mismatched
    keys (first few of each, with counts) before touching any weight. ``strict=False`` loads the keys
    that match in name and shape and returns the ``LoadReport`` of the rest. Values are cast to the
    module's dtypes. A module built on the meta device gets the loaded tensors assigned.
    """
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    load_device = "cpu" if device.type == "meta" else device
    return apply_state_dict(module, load_state_dict(directory, device=load_device), strict,
                            f"checkpoint {str(directory)!r}")


def apply_state_dict(module: nn.Module, sd: Mapping[str, torch.Tensor], strict: bool = True,
                     source: str = "state dict") -> LoadReport:
    """Load an in-memory state dict into ``module`` with ``load_into``'s checks; ``source`` names it in errors."""
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    mismatched = [(k, tuple(sd[k].shape), tuple(own[k].shape)) for k in sorted(set(sd) & set(own))
                  if sd[k].shape != own[k].shape]
    report = LoadReport(missing, unexpected, mismatched)
    if strict and not report.ok:
        raise CheckpointMismatchError(f"{source} does not match {type(module).__name__}: {report.describe()}")
    bad = {k for k, _, _ in mismatched}
    keep = {k: v.to(own[k].dtype) for k, v in sd.items() if k in own and k not in bad}
    module.load_state_dict(keep, strict=False, assign=device.type == "meta")
    return report
