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

import sana_wm_bootstrap
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """One Predictor per model instance; one response per request, errors per request."""

    def initialize(self, args: dict) -> None:
        self.predictor, self._request_error = sana_wm_bootstrap.load_predictor(args, pb_utils.TritonModelException)
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
            except Exception as err:  # noqa: BLE001 - this request gets the error; the server keeps serving
                error = sana_wm_bootstrap.error_for(err, self._request_error, self.logger)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses

    def finalize(self) -> None:
        self.predictor = None
