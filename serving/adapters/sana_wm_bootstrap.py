"""Shared start-up of the Python-backend adapters, copied beside each ``model.py`` by build_repository.

Why the sys.path dance: the stub imports ``model.py`` as ``1.model`` and *appends* ``<name>/1`` to
sys.path, so a plain ``import model`` anywhere below would find that file instead of the project's
``model`` package whenever the project is reachable only through an editable-install finder (which
runs after the path finder). Putting ``repo_root`` first makes the project packages win.

The stub embeds Python with the "C" locale, so open() would decode text as ASCII, and libraries that
read UTF-8 files at import (torch inductor templates, pulled in by ModelOpt for quantized bundles)
fail. open() asks the LC_CTYPE locale each time, so switching it here is enough.
"""

from __future__ import annotations

import json
import locale
import sys
import traceback
from functools import partial
from typing import Any

try:
    locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
except locale.Error:  # pragma: no cover - every glibc has C.UTF-8; keep serving plain bundles regardless
    pass


def setup(args: dict, exception_type: type[Exception]) -> dict[str, str]:
    """Put the project first on sys.path and return the model's string parameters."""
    config = json.loads(args["model_config"])
    params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
    repo_root = params.get("repo_root", "")
    if repo_root:
        if repo_root in sys.path:
            sys.path.remove(repo_root)
        sys.path.insert(0, repo_root)
    import model  # noqa: F401  (checked below: must be the package, not model.py)

    if not hasattr(sys.modules["model"], "__path__"):
        raise exception_type(
            f"'import model' resolved to {sys.modules['model'].__file__}, not the project's model "
            f"package; set the repo_root parameter (now {repo_root!r}) to the project checkout"
        )
    return params


def load_predictor(args: dict, exception_type: type[Exception]) -> tuple[Any, type[Exception]]:
    """The one-shot adapters' start-up: (this instance's ``serving.predictor.Predictor``, ``RequestError``)."""
    params = setup(args, exception_type)
    from serving.predictor import Predictor, RequestError

    return Predictor(params["bundle_dir"], **predictor_kwargs(params)), RequestError


def error_for(err: Exception, request_error: type[Exception], logger: Any) -> Any:
    """The ``pb_utils.TritonError`` a one-shot request that raised ``err`` is answered with.

    ``request_error`` (the client's fault) -> INVALID_ARG, which makes the HTTP status 400 instead of 500;
    anything else is a model bug: logged with its traceback, answered as an internal error, and the
    server keeps serving the other requests."""
    import triton_python_backend_utils as pb_utils

    if isinstance(err, request_error):
        return pb_utils.TritonError(f"bad request: {err}", pb_utils.TritonError.INVALID_ARG)
    logger.log_error(f"generation failed: {traceback.format_exc()}")
    return pb_utils.TritonError(f"internal error: {type(err).__name__}: {err}")


def predictor_kwargs(params: dict[str, str], max_frames_key: str = "max_frames") -> dict:
    """Predictor keyword arguments from the model parameters."""
    num_steps = params.get("num_steps", "")
    kwargs = {
        "max_frames": int(params[max_frames_key]),
        "device": params.get("device", "cpu"),
        "default_mode": params.get("default_mode", "streaming"),
        "num_steps": int(num_steps) if num_steps else None,
    }
    if params.get("loader"):
        kwargs["loader"] = params["loader"]
    return kwargs


def input_array(request, name: str):
    """The numpy value of input ``name`` of ``request``, or None when the client did not send it."""
    import triton_python_backend_utils as pb_utils

    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def read_request(request) -> dict:
    """Predictor keyword arguments (``VideoRequest`` fields) from a one-shot request's tensors (absent
    optional inputs -> None)."""
    from serving.request import fields_from_wire

    return fields_from_wire(partial(input_array, request))
