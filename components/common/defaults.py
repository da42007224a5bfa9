"""The one source of step defaults: ``params.yaml`` at the project root.

The same file drives ``dvc repro`` (dvc.yaml's ``${...}``), the local runner, the KFP pipelines' parameter
defaults and each step's CLI defaults, so a value changed there changes it everywhere (tests/test_defaults.py).
Only PyYAML, which kfp already needs, so the pipeline compiler can read it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

PARAMS_FILE = Path(__file__).resolve().parents[2] / "params.yaml"


@lru_cache(maxsize=1)
def params() -> dict[str, Any]:
    """``params.yaml`` as a dict (read once per process)."""
    import yaml

    if not PARAMS_FILE.is_file():
        raise FileNotFoundError(f"{PARAMS_FILE} is missing: it holds the stack's defaults")
    return yaml.safe_load(PARAMS_FILE.read_text())


def default(key: str) -> Any:
    """A dotted key of ``params.yaml``, e.g. ``default("train.steps")``; KeyError names a missing key."""
    node: Any = params()
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"params.yaml has no {key!r}")
        node = node[part]
    return node
