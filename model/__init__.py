"""SANA-WM stage-1 world model: hybrid frame-wise GDN / softmax DiT with dual-branch camera control.

Model code only: no training loops, I/O side effects or tracking here (see components/ for those).
"""

from model.config import WorldModelConfig, get_preset

__all__ = ["WorldModelConfig", "get_preset"]
