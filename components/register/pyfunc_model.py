"""MLflow "model from code" wrapping a SANA-WM bundle: the registry stores the bundle directory itself
(safetensors + JSON, no pickled Python object) plus this file.

``mlflow.pyfunc.load_model(uri).predict({"image": uint8 (H,W,3), "c2w": (N,4,4), "intrinsics": (N,3,3),
"seed": int})`` returns uint8 video (N,H,W,3) through ``serving.predictor.Predictor``.
"""

from __future__ import annotations

import mlflow.pyfunc
from mlflow.models import set_model


class WorldModelPyfunc(mlflow.pyfunc.PythonModel):
    """Loads ``context.artifacts["bundle"]`` with the serving predictor; one request per call."""

    def load_context(self, context) -> None:
        from serving.predictor import Predictor

        self.predictor = Predictor(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None):
        """``model_input``: dict with image, c2w, intrinsics (+ optional seed, num_frames, mode)."""
        if not isinstance(model_input, dict):
            raise ValueError(f"model_input must be a dict with image/c2w/intrinsics, got {type(model_input).__name__}")
        return self.predictor.predict(**model_input)


set_model(WorldModelPyfunc())
