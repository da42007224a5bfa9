"""Triton Python-backend adapter of the decoupled one-shot model (gRPC streaming): one request, one
response per chunk as soon as the chunk is decoded, then a final empty response.

Tensors (config.pbtxt, max_batch_size 0, ``model_transaction_policy { decoupled: true }``):
    IMAGE UINT8 [H, W, 3], C2W FP32 [N, 4, 4], INTRINSICS FP32 [N, 3, 3], SEED INT64 [1],
    NUM_FRAMES INT32 [1] (optional; must equal N), MODE BYTES [1] (optional)
    -> per response: VIDEO UINT8 [n_k, H, W, 3] (chunk k's frames), CHUNK_INDEX INT32 [1].

Time to first frames is one chunk's work, and no response grows with the video, so max_frames can be a
minute of video. Decoupled models answer only over gRPC streams (``stream_infer``); HTTP clients use the
``<name>_video`` model.
"""

from __future__ import annotations

import time

import numpy as np
import sana_wm_bootstrap
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        self.predictor, self._request_error = sana_wm_bootstrap.load_predictor(args, pb_utils.TritonModelException)
        self.logger = pb_utils.Logger

    def execute(self, requests: list) -> None:
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        for request in requests:
            sender = request.get_response_sender()
            try:
                start = time.perf_counter()
                chunks = self.predictor.stream(**sana_wm_bootstrap.read_request(request))  # validates before any work
                frames = 0
                for k, video in enumerate(chunks):
                    frames += len(video)
                    sender.send(pb_utils.InferenceResponse(output_tensors=[
                        pb_utils.Tensor("VIDEO", video), pb_utils.Tensor("CHUNK_INDEX", np.array([k], np.int32))]))
                self.logger.log_info(f"streamed {frames} frames in {time.perf_counter() - start:.2f} s")
                sender.send(flags=final)
            except Exception as err:  # noqa: BLE001 - this stream ends with the error; the server keeps serving
                error = sana_wm_bootstrap.error_for(err, self._request_error, self.logger)
                sender.send(pb_utils.InferenceResponse(error=error), flags=final)

    def finalize(self) -> None:
        self.predictor = None
