"""Stage-1 training: flow matching + diffusion forcing, plain or DeepSpeed ZeRO, plus the cluster plan."""

from components.train.config import DiffusionConfig, OptimConfig, StageConfig, TrainConfig

__all__ = ["DiffusionConfig", "OptimConfig", "StageConfig", "TrainConfig"]
