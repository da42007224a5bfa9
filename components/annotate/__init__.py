"""Camera annotation: 6-DoF poses from raw video (the model's actions), accuracy metrics, shards.

- `poses.estimate_poses` — the public estimator; its pieces: `geometry` (pinhole helpers),
  `odometry` (KLT + PnP/RANSAC keyframe VO with depth-lifted or triangulated landmarks),
  `bundle_adjust` (sparse BA with depth residuals), `calibration` (focal self-calibration),
  `colmap_backend` (pycolmap global/incremental mapping of our KLT tracks for scale-free clips).
- `metrics` — Umeyama alignment, ATE/RPE/scale error, SANA-WM camera-following metrics.
- `depth` — pluggable monocular metric depth (`DepthModel`, local transformers loader).
- `batch` / `shards` — resumable directory annotation into webdataset shards.

Importing the package is cheap (no OpenCV, SciPy, pycolmap or PyAV): the KFP pipeline compiler imports
``components.annotate.component`` with only kfp installed. The names below load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["PoseEstimatorConfig", "PoseResult", "estimate_poses"]


def __getattr__(name: str) -> Any:
    # PEP 562 lazy export: `from components.annotate import estimate_poses` still works.
    if name in __all__:
        return getattr(importlib.import_module("components.annotate.poses"), name)
    raise AttributeError(f"module 'components.annotate' has no attribute {name!r}")
