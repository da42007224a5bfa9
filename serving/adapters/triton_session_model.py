"""Triton Python-backend adapter of the stateful session model ``<name>_session``.

Sequence batching (config.pbtxt): control inputs START / END (bool as FP32 0/1) and CORRID (UINT64), the
oldest strategy with ``max_candidate_sequences`` = live-session limit + spare slots (both per instance),
max_batch_size 0. Parameters ``max_sessions`` (per instance), ``instance_count`` and their product
``max_live_sessions`` say how many sessions the server holds.
Triton's implicit state is not available to Python-backend models, so sessions live here, in a
``serving.session.SessionManager`` keyed by the correlation id.

Tensors (every input optional in the config; the rules are checked here, per request):
    START request:  IMAGE UINT8 [H, W, 3] (required), INTRINSICS FP32 [3, 3], SEED INT64 [1],
                    MODE BYTES [1] (few_step | streaming), PROMPT BYTES [1]
    every request:  exactly one of ACTION BYTES [1] (keys for the next chunk, e.g. "w", "w+q 2", "r")
                    or C2W FP32 [n, 4, 4] (the next chunk's raw-frame poses, relative to frame 0)
    response:       FRAMES UINT8 [n, H, W, 3], CHUNK_INDEX INT32 [1], POSES FP32 [n, 4, 4]
END (may ride on a chunk request) frees the session once that chunk is answered; an END request without
ACTION/C2W just frees it. Sessions idle longer than ``idle_timeout_s`` are dropped by a reaper thread,
slightly before Triton forgets the sequence (``max_sequence_idle_microseconds`` is set a bit longer), so
a late request gets this model's "unknown session" error instead of a silently restarted state.
Why spare slots: when every Triton sequence slot is held, a new START waits for a slot and then evicts
the longest-idle live sequence; with more slots than the session limit a START beyond the limit always
reaches this model and is refused here, and no live session is touched.
"""

from __future__ import annotations

import threading
import traceback

import numpy as np
import sana_wm_bootstrap
import triton_python_backend_utils as pb_utils

_EMPTY_SLOT = 0  # the sequence batcher never gives a real sequence correlation id 0


def _flag(request, name: str) -> bool:
    value = sana_wm_bootstrap.input_array(request, name)
    return bool(value is not None and value.reshape(-1)[0])


def _text(value) -> str | None:
    if value is None:
        return None
    item = value.reshape(-1)
    if item.size != 1:
        raise ValueError(f"expected one string, got {item.size}")
    item = item[0]
    return item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        params = sana_wm_bootstrap.setup(args, pb_utils.TritonModelException)
        from serving.predictor import resolve_loader
        from serving.session import SessionError, SessionManager

        self._session_error = SessionError
        device = params.get("device", "cpu")
        pipeline = resolve_loader(params["loader"])(params["bundle_dir"], device=device)
        num_steps = params.get("num_steps", "")
        # Each instance is its own stub process holding its own sessions: the limit is per instance.
        per_instance, instances = int(params["max_sessions"]), int(params.get("instance_count", "1"))
        note = (f"per instance; {instances} instances hold {per_instance * instances} in all"
                if instances > 1 else "")
        self.manager = SessionManager(pipeline, max_sessions=per_instance,
                                      idle_timeout_s=float(params["idle_timeout_s"]),
                                      default_mode=params.get("session_mode", "few_step"),
                                      num_steps=int(num_steps) if num_steps else None, limit_note=note)
        self.logger = pb_utils.Logger
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, name="session-reaper", daemon=True)
        self._reaper.start()

    def _reap_loop(self) -> None:
        period = min(1.0, self.manager.idle_timeout_s / 4)
        while not self._stop.wait(period):
            dead = self.manager.reap()
            if dead:
                self.logger.log_info(f"reaped idle sessions {dead}; live {len(self.manager)}")

    def execute(self, requests: list) -> list:
        return [self._one(r) for r in requests]

    def _one(self, request):
        get = lambda name: sana_wm_bootstrap.input_array(request, name)
        corrid = int(get("CORRID").reshape(-1)[0])
        if corrid == _EMPTY_SLOT:  # filler for an idle slot; Triton drops this response
            return pb_utils.InferenceResponse(error=pb_utils.TritonError("empty sequence slot"))
        start, end = _flag(request, "START"), _flag(request, "END")
        started = False
        try:
            try:
                action, mode, prompt = _text(get("ACTION")), _text(get("MODE")), _text(get("PROMPT"))
            except ValueError as err:
                raise self._session_error(f"ACTION/MODE/PROMPT: {err}") from None
            c2w = get("C2W")
            if start:
                image = get("IMAGE")
                if image is None:
                    raise self._session_error("START needs IMAGE (uint8 [H, W, 3], the first frame)")
                seed = get("SEED")
                self.manager.start(corrid, image, intrinsics=get("INTRINSICS"),
                                   seed=0 if seed is None else int(seed.reshape(-1)[0]),
                                   prompt=prompt or "", mode=mode)
                started = True
            elif get("IMAGE") is not None:
                raise self._session_error(f"IMAGE is only read on START; session {corrid} is already running")
            if end and action is None and c2w is None and not start:
                self.manager.end(corrid)  # a bare END
                return pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("CHUNK_INDEX", np.array([-1], np.int32))])
            frames, poses, index = self.manager.step(corrid, c2w=c2w, action=action)
            if end:
                self.manager.end(corrid)
            return pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("FRAMES", frames),
                pb_utils.Tensor("CHUNK_INDEX", np.array([index], np.int32)),
                pb_utils.Tensor("POSES", poses.astype(np.float32))])
        except self._session_error as err:
            if started or end:
                self.manager.discard(corrid)  # a failed START leaves no session; END always frees
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(
                f"bad request for session {corrid}: {err}", pb_utils.TritonError.INVALID_ARG))
        except Exception as err:  # noqa: BLE001 - this session is broken; the others keep going
            self.logger.log_error(f"session {corrid} failed: {traceback.format_exc()}")
            self.manager.discard(corrid)
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(
                f"internal error in session {corrid} (session closed): {type(err).__name__}: {err}"))

    def finalize(self) -> None:
        self._stop.set()
        self._reaper.join(timeout=5)
        self.manager = None
