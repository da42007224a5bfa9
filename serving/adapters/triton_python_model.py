"""Triton Python-backend adapter of the non-streaming route (HTTP): one request = one whole video.

Tensors (config.pbtxt, max_batch_size 0):
    IMAGE UINT8 [H, W, 3], C2W FP32 [N, 4, 4], INTRINSICS FP32 [N, 3, 3], SEED INT64 [1],
    NUM_FRAMES INT32 [1] (optional; must equal N), MODE BYTES [1] (optional)  ->  VIDEO UINT8 [N, H, W, 3].

Parameters (all strings): repo_root, bundle_dir, max_frames, device, default_mode, num_steps, loader.
The response is the whole video in one message, so max_frames stays small; longer videos go through the
decoupled gRPC model (triton_stream_model.py), which sends each chunk as it is decoded.
"""

from __future__ import annotations

import time
import traceback

import sana_wm_bootstrap
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """One Predictor per model instance; one response per request, errors per request."""

    def initialize(self, args: dict) -> None:
        params = sana_wm_bootstrap.setup(args, pb_utils.TritonModelException)
        from serving.predictor import Predictor, RequestError

        self._request_error = RequestError
        self.predictor = Predictor(params["bundle_dir"], **sana_wm_bootstrap.predictor_kwargs(params))
        self.logger = pb_utils.Logger

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                start = time.perf_counter()
                video = self.predictor.predict(**sana_wm_bootstrap.read_request(request))
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

    def finalize(self) -> None:
        self.predictor = None
