"""Camera annotation: metric 6-DoF poses from raw video (the model's actions), accuracy metrics, shards.

- `poses.estimate_poses` — the estimator (KLT + PnP/RANSAC against depth-lifted or triangulated
  landmarks, rotation-only model selection, sparse bundle adjustment).
- `metrics` — Umeyama alignment, ATE/RPE/scale error, SANA-WM camera-following metrics.
- `depth` — pluggable monocular metric depth (`DepthModel`, local transformers loader).
- `batch` / `shards` — resumable directory annotation into webdataset shards.
"""

from components.annotate.poses import PoseEstimatorConfig, PoseResult, estimate_poses

__all__ = ["PoseEstimatorConfig", "PoseResult", "estimate_poses"]
