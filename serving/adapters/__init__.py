"""Files copied verbatim into a Triton model repository (see ``serving.triton_repo``).

Each adapter becomes ``<repo>/<model>/1/model.py``, with ``sana_wm_bootstrap.py`` beside it (start-up
shared by the three). They only run inside Triton's Python backend stub, where
``triton_python_backend_utils`` exists, so nothing here imports them.

* ``triton_python_model.py``  ``<name>_video``: one request -> the whole video (HTTP or gRPC);
* ``triton_stream_model.py``  ``<name>``: decoupled, one response per chunk (gRPC streaming);
* ``triton_session_model.py`` ``<name>_session``: stateful sessions over sequence batching.
"""

from pathlib import Path

_HERE = Path(__file__).parent
PYTHON_MODEL_TEMPLATE = _HERE / "triton_python_model.py"
STREAM_MODEL_TEMPLATE = _HERE / "triton_stream_model.py"
SESSION_MODEL_TEMPLATE = _HERE / "triton_session_model.py"
BOOTSTRAP = _HERE / "sana_wm_bootstrap.py"

__all__ = ["BOOTSTRAP", "PYTHON_MODEL_TEMPLATE", "SESSION_MODEL_TEMPLATE", "STREAM_MODEL_TEMPLATE"]
