"""Files copied verbatim into a Triton model repository (see ``serving.triton_repo``).

``triton_python_model.py`` becomes ``<repo>/<name>/1/model.py``; it only runs inside Triton's Python
backend stub, where ``triton_python_backend_utils`` exists, so nothing here imports it.
"""

from pathlib import Path

PYTHON_MODEL_TEMPLATE = Path(__file__).with_name("triton_python_model.py")

__all__ = ["PYTHON_MODEL_TEMPLATE"]
