"""Triton Python-backend adapter: ``<repo>/<name>/1/model.py`` (copied verbatim by build_repository).

Tensors (config.pbtxt, max_batch_size 0, one request = one video):
    IMAGE UINT8 [H, W, 3], C2W FP32 [N, 4, 4], INTRINSICS FP32 [N, 3, 3], SEED INT64 [1],
    NUM_FRAMES INT32 [1], MODE BYTES [1] (optional)  ->  VIDEO UINT8 [n, H, W, 3].

Parameters (all strings): repo_root, bundle_dir, max_frames, device, default_mode, num_steps, loader.

Why the sys.path dance: the stub imports this file as ``1.model`` and *appends* ``<name>/1`` to
sys.path, so a plain ``import model`` anywhere below would find this file instead of the project's
``model`` package whenever the project is reachable only through an editable-install finder (which
runs after the path finder). Putting ``repo_root`` first makes the project packages win.
"""

from __future__ import annotations

import json
import locale
import sys
import time
import traceback

import triton_python_backend_utils as pb_utils

# The stub embeds Python with the "C" locale, so open() would decode text as ASCII, and libraries that read
# UTF-8 files at import (torch inductor templates, pulled in by ModelOpt for quantized bundles) fail.
# open() asks the LC_CTYPE locale each time, so switching it here is enough.
try:
    locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
except locale.Error:  # pragma: no cover - every glibc has C.UTF-8; keep serving plain bundles regardless
    pass


class TritonPythonModel:
    """One Predictor per model instance; one response per request, errors per request."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        repo_root = params.get("repo_root", "")
        if repo_root:
            if repo_root in sys.path:
                sys.path.remove(repo_root)
            sys.path.insert(0, repo_root)
        import model  # noqa: F401  (checked below: must be the package, not this file)

        if not hasattr(sys.modules["model"], "__path__"):
            raise pb_utils.TritonModelException(
                f"'import model' resolved to {sys.modules['model'].__file__}, not the project's model "
                f"package; set the repo_root parameter (now {repo_root!r}) to the project checkout"
            )
        from serving.predictor import Predictor, RequestError

        self._request_error = RequestError
        num_steps = params.get("num_steps", "")
        kwargs = {
            "max_frames": int(params["max_frames"]),
            "device": params.get("device", "cpu"),
            "default_mode": params.get("default_mode", "streaming"),
            "num_steps": int(num_steps) if num_steps else None,
        }
        if params.get("loader"):
            kwargs["loader"] = params["loader"]
        self.predictor = Predictor(params["bundle_dir"], **kwargs)
        self.logger = pb_utils.Logger

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                start = time.perf_counter()
                video = self._predict(request)
                self.logger.log_info(f"generated {video.shape} in {time.perf_counter() - start:.2f} s")
                out = pb_utils.Tensor("VIDEO", video)
                responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            except self._request_error as err:
                # INVALID_ARG makes the HTTP status 400 (client's fault) instead of 500.
                error = pb_utils.TritonError(f"bad request: {err}", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            except Exception as err:  # noqa: BLE001 - a model bug answers this request; the server keeps serving
                self.logger.log_error(f"generation failed: {traceback.format_exc()}")
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"internal error: {type(err).__name__}: {err}")))
        return responses

    def _predict(self, request):
        def get(name):
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            return None if tensor is None else tensor.as_numpy()

        mode = get("MODE")
        if mode is not None:
            mode = mode.reshape(-1)[0]  # BYTES arrive as an object array of bytes
        return self.predictor.predict(
            image=get("IMAGE"),
            c2w=get("C2W"),
            intrinsics=get("INTRINSICS"),
            seed=get("SEED"),
            num_frames=get("NUM_FRAMES"),
            mode=mode,
        )

    def finalize(self) -> None:
        self.predictor = None
