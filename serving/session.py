"""Interactive world sessions: one chunk of video per request, constant memory per session.

A session starts from a first frame and is then steered one chunk at a time, either by an ACTION
string (keys, held for the chunk) or by the chunk's raw camera poses. Between requests it keeps only
what the next chunk needs, all bounded in size whatever the session length:

* the network's stream state (GDN D x D per head, softmax sink + recent K/V; ``SanaWM.forward_chunk``);
* the last generated clean chunk, whose sigma-0 pass into the state is deferred to the next request
  (a session that ends never pays for it, and the reply for a chunk leaves as soon as it is decoded);
* the causal VAE decoder's per-conv cache (the last frames of each causal conv), so chunk k decodes
  alone and the frames equal a whole-video decode (Wan VAE; other VAEs fall back to an overlap decode);
* the last camera pose, the intrinsics, the text features and the session's noise generator.

Camera conditioning of chunk [a, b) is built from a window [frame 0, the chunk's raw frames] and sliced
to the chunk's latent frames: the condition of a latent frame depends only on its raw poses relative to
frame 0, so this equals slicing a whole-path condition (the parity test against
``WorldModelPipeline.generate`` checks it end to end), and no per-chunk cost grows with the session.

The sampler loop below mirrors ``model.sampling._rollout`` one chunk at a time, built from the public
pieces (``FlowMatchScheduler``, ``draw_chunk_noise``, ``Guidance``, ``forward_chunk``): it
draws noise in the same order, so a session steered with a whole trajectory's poses reproduces
``generate(mode=...)`` for the same seed. What model/ could expose to drop this copy: a per-chunk
``pipeline.stream(image, K, seed, prompt, mode)`` object and a ``VideoVAE.decode_stream`` cache.

``SessionManager`` keys sessions by a correlation id (the Triton sequence id), limits how many are
live, reaps idle ones and answers every bad request with ``SessionError`` naming the problem.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from serving.errors import SEED_MAX, RequestError

SESSION_MODES = ("few_step", "streaming")
MAX_ACTION_BYTES = 256  # a chunk's action is a few keys; anything longer is a client bug or abuse
MAX_PROMPT_BYTES = 1024

# Keys of the viewer and the DSL of model.trajectory, plus r/f for pitch (not in the model DSL).
_KEY_KINDS = {"w": "forward", "a": "left", "s": "back", "d": "right", "q": "yaw_left", "e": "yaw_right",
              "r": "pitch_up", "f": "pitch_down", "hold": "hold", ".": "hold"}
_DURATION = re.compile(r"^([0-9]*\.?[0-9]+)s$")


class SessionError(RequestError):
    """A session request that cannot be served (unknown session, limit reached, bad input)."""


# --------------------------------------------------------------------------------------------------
# actions -> poses
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Command:
    twist: tuple[np.ndarray, np.ndarray]  # body velocity (3,) m/s, angular velocity (3,) rad/s
    duration_s: float | None  # None: share the rest of the chunk with the other untimed commands


def _parse_part(part: str, where: str):
    from model.trajectory import DEFAULT_SPEED_DEGPS, DEFAULT_SPEED_MPS, KINDS, Action

    tokens = part.split()
    if not tokens:
        raise SessionError(f"ACTION {where}: empty key between '+' signs")
    kind = _KEY_KINDS.get(tokens[0], tokens[0])
    if kind not in KINDS:
        raise SessionError(f"ACTION {where}: unknown key {tokens[0]!r}; use w/a/s/d (move), q/e (yaw), "
                           f"r/f (pitch), hold, or one of {list(KINDS)}")
    if len(tokens) > 2:
        raise SessionError(f"ACTION {where}: expected 'KEY [SPEED]', got {part!r}")
    if kind == "hold":
        if len(tokens) == 2:
            raise SessionError(f"ACTION {where}: 'hold' takes no speed")
        return np.zeros(3), np.zeros(3)
    speed = DEFAULT_SPEED_MPS if kind in ("forward", "back", "left", "right", "up", "down") else DEFAULT_SPEED_DEGPS
    if len(tokens) == 2:
        try:
            speed = float(tokens[1])
        except ValueError:
            raise SessionError(f"ACTION {where}: bad speed {tokens[1]!r}; expected a number") from None
    try:
        return Action(kind, speed, 1.0).body_twist()
    except ValueError as err:
        raise SessionError(f"ACTION {where}: {err}") from None


def parse_chunk_action(text: str) -> list[_Command]:
    """Parse a chunk's ACTION: ``;``-separated commands, each ``KEY [SPEED](+KEY [SPEED])* [DURATION]``.

    ``+`` joins keys held together (``w+q``: walk forward while turning left). A command without a
    duration shares what is left of the chunk equally with the other untimed ones; ``""``/``hold``
    keeps the camera still. Speeds default to 1 m/s and 30 deg/s as in ``model.trajectory``.
    """
    raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    if len(raw) > MAX_ACTION_BYTES:
        raise SessionError(f"ACTION is {len(raw)} bytes; at most {MAX_ACTION_BYTES} are allowed per chunk")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SessionError("ACTION must be UTF-8 text") from None
    commands = []
    for n, cmd in enumerate((c.strip().lower() for c in re.split(r"[;\n]", text)), start=1):
        if not cmd:
            continue
        where = f"command {n} {cmd!r}"
        tokens = cmd.split()
        duration = None
        m = _DURATION.match(tokens[-1])
        if m:
            duration = float(m.group(1))
            if not (math.isfinite(duration) and duration > 0):
                raise SessionError(f"ACTION {where}: duration must be > 0 seconds")
            cmd = " ".join(tokens[:-1])
        vs, ws = zip(*(_parse_part(p, where) for p in cmd.split("+"))) if cmd.strip() else ((np.zeros(3),),
                                                                                              (np.zeros(3),))
        commands.append(_Command((np.sum(vs, axis=0), np.sum(ws, axis=0)), duration))
    return commands or [_Command((np.zeros(3), np.zeros(3)), None)]


def _motion(v: np.ndarray, w: np.ndarray, dt: float) -> np.ndarray:
    """Body-frame motion (4, 4) over ``dt`` at constant twist (rotation by exp(w dt), translation v dt)."""
    from model.camera import so3_exp

    T = np.eye(4)
    T[:3, :3] = so3_exp(torch.as_tensor(w * dt, dtype=torch.float64)).numpy()
    T[:3, 3] = v * dt
    return T


def action_poses(text: str, last_c2w: np.ndarray, num_frames: int, fps: float) -> np.ndarray:
    """Poses (num_frames, 4, 4) of the next chunk's raw frames, continuing from ``last_c2w``.

    Frame k of the chunk is at time (k + 1) / fps after the last generated frame, so the path is
    continuous across chunks. Commands run in order; time left after them holds the last pose.
    """
    cmds = parse_chunk_action(text)
    chunk_s = num_frames / fps
    timed = sum(c.duration_s for c in cmds if c.duration_s is not None)
    untimed = [c for c in cmds if c.duration_s is None]
    share = max(chunk_s - timed, 0.0) / len(untimed) if untimed else 0.0
    ends = np.cumsum([c.duration_s if c.duration_s is not None else share for c in cmds])
    starts = ends - np.array([c.duration_s if c.duration_s is not None else share for c in cmds])
    out = np.empty((num_frames, 4, 4))
    T = np.asarray(last_c2w, dtype=np.float64).copy()
    for k in range(num_frames):
        t0, t1 = k / fps, (k + 1) / fps
        for c, s, e in zip(cmds, starts, ends):
            lo, hi = max(t0, s), min(t1, e)
            if hi > lo:
                T = T @ _motion(*c.twist, hi - lo)
        u, _, vt = np.linalg.svd(T[:3, :3])  # keep a proper rotation over thousands of steps
        T[:3, :3] = u @ vt
        out[k] = T
    return out


# --------------------------------------------------------------------------------------------------
# chunk-by-chunk VAE decoding
# --------------------------------------------------------------------------------------------------

class StreamingDecoder:
    """Decode latent frames chunk by chunk with the causal VAE's own per-conv cache.

    diffusers' ``AutoencoderKLWan._decode`` runs its decoder one latent frame at a time through a list
    of causal-conv caches (``_feat_map``); keeping that list per session makes chunk k's frames equal
    to those of a whole-video decode, at constant memory. VAEs without that structure are decoded
    with one latent frame of overlap (the causal context of the first new frame) and the overlap's
    raw frame dropped: close to, not equal to, the whole-video decode.
    """

    def __init__(self, video_vae: Any) -> None:
        self.wrapper = video_vae
        inner = getattr(video_vae, "vae", None)
        self.exact = all(hasattr(inner, a) for a in ("decoder", "post_quant_conv", "_conv_num")) and \
            not getattr(inner, "use_tiling", False) and getattr(getattr(inner, "config", None), "patch_size", None) is None
        self.inner = inner
        self._cache: list | None = None
        self._prev: torch.Tensor | None = None  # overlap fallback: the last latent frame
        self.frames_decoded = 0

    def _denormalise(self, latents: torch.Tensor) -> torch.Tensor:
        dtype = next(self.inner.parameters()).dtype
        return (latents.float() * self.wrapper.latents_std + self.wrapper.latents_mean).to(dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (1, C, f, h, w) of the next frames -> pixels (1, 3, n, H, W) in [-1, 1]."""
        first = self.frames_decoded == 0
        self.frames_decoded += latents.shape[2]
        if not self.exact:
            if first:
                out = self.wrapper.decode(latents)
            else:
                out = self.wrapper.decode(torch.cat([self._prev, latents], dim=2))[:, :, 1:]
            self._prev = latents[:, :, -1:].clone()
            return out
        if first:
            self._cache = [None] * self.inner._conv_num
        x = self.inner.post_quant_conv(self._denormalise(latents))
        outs = []
        for i in range(x.shape[2]):
            idx = [0]
            kwargs = {"first_chunk": True} if first and i == 0 else {}
            outs.append(self.inner.decoder(x[:, :, i:i + 1], feat_cache=self._cache, feat_idx=idx, **kwargs))
        return torch.cat(outs, dim=2).float().clamp(-1.0, 1.0)

    def num_bytes(self) -> int:
        tensors = [t for t in (self._cache or []) if isinstance(t, torch.Tensor)]
        if self._prev is not None:
            tensors.append(self._prev)
        return sum(t.numel() * t.element_size() for t in tensors)


# --------------------------------------------------------------------------------------------------
# one session
# --------------------------------------------------------------------------------------------------

def _to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """(1, 3, n, H, W) in [-1, 1] -> uint8 (n, H, W, 3), the same rounding as the pipeline."""
    return ((pixels[0] + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()


def _state_bytes(obj: Any) -> int:
    fn = getattr(obj, "num_bytes", None)
    return int(fn()) if callable(fn) else 0


class StreamingSession:
    """A world being generated chunk by chunk from one first frame.

    Args:
        pipeline: a ``WorldModelPipeline`` (``.config``, ``.network`` with ``forward_chunk``, ``.vae``,
            ``.text_encoder``).
        image: uint8 (H, W, 3) first frame at the model's size.
        intrinsics: (3, 3) pixel K shared by all frames (None: 60 degree horizontal field of view).
        seed: noise seed; the same seed and the same steering give the same frames.
        prompt: optional text.
        mode: ``few_step`` (the distilled student, default) or ``streaming`` (Euler + CFG teacher).
        num_steps: Euler steps per chunk in ``streaming`` mode (default ``config.sampler.num_steps``).

    ``step(c2w=...)`` or ``step(action=...)`` returns the next chunk's frames: the first call returns
    ``1 + first_chunk_poses`` frames (frame 0 is the VAE reconstruction of ``image``, at the identity
    pose), later calls ``chunk_poses`` frames each.
    """

    def __init__(self, pipeline: Any, image: np.ndarray, intrinsics: np.ndarray | None = None, seed: int = 0,
                 prompt: str = "", mode: str = "few_step", num_steps: int | None = None) -> None:
        from model.sampling import Conditioning  # noqa: F401  (fail here, not mid-session, if absent)
        from model.trajectory import default_intrinsics

        cfg = pipeline.config
        self.pipeline, self.cfg = pipeline, cfg
        self.height, self.width = int(cfg.video_height), int(cfg.video_width)
        self.ts = int(cfg.vae.temporal_stride)
        self.fps = float(cfg.fps)
        self.first_chunk_poses = self.ts * (cfg.chunks.first_chunk_frames - 1)
        self.chunk_poses = self.ts * cfg.chunks.chunk_frames
        if mode not in SESSION_MODES:
            raise SessionError(f"MODE must be one of {SESSION_MODES} for a session, got {mode!r}")
        if self.first_chunk_poses < 1:
            raise ValueError("sessions need ChunkConfig.first_chunk_frames >= 2 (frame 0 plus generated frames)")
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise SessionError(f"IMAGE must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
        if image.shape[:2] != (self.height, self.width):
            raise SessionError(f"IMAGE is {image.shape[0]}x{image.shape[1]} but this model generates "
                               f"{self.height}x{self.width} (HxW); resize the image first")
        if intrinsics is None:
            K = default_intrinsics(self.height, self.width)
        else:
            K = np.asarray(intrinsics, dtype=np.float64).reshape(-1, 3, 3)
            if K.shape[0] != 1:
                raise SessionError(f"INTRINSICS must be one (3, 3) matrix, got shape {np.shape(intrinsics)}")
            K = K[0]
            if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]):
                raise SessionError(f"INTRINSICS must be a finite pinhole K with fx, fy > 0 and last row "
                                   f"[0, 0, 1], got {K.tolist()}")
        if not 0 <= int(seed) <= SEED_MAX:
            raise SessionError(f"SEED must be in [0, 2**63-1], got {seed}")
        self.K = K
        self.mode = mode
        s = cfg.sampler
        if mode == "few_step":
            self.sigmas = [float(v) for v in s.distilled_sigmas] + [0.0]
            guidance, camera_guidance, self.stochastic = 1.0, 1.0, True  # distilled into the student
        else:
            from model.sampling import FlowMatchScheduler

            steps = s.num_steps if num_steps is None else int(num_steps)
            if steps < 1:
                raise SessionError(f"num_steps must be >= 1, got {steps}")
            self.sigmas = FlowMatchScheduler(s.flow_shift).sigmas(steps).tolist()
            guidance, camera_guidance, self.stochastic = s.guidance_scale, s.camera_guidance_scale, False
        from model.sampling import Guidance

        # the same branches as model.sampling's rollout, so a session streams what generate() returns
        self.guide = Guidance.of(guidance, camera_guidance, has_camera=True)

        net, dev = pipeline.network, pipeline.device
        with torch.no_grad():
            pixels = torch.tensor(image, device=dev).permute(2, 0, 1)[None, :, None]
            self.cond_latent = pipeline.vae.encode(pixels.float() / 127.5 - 1.0)  # (1, C, 1, h, w)
            text, mask = pipeline.text_encoder.encode([prompt])
        self.text, self.mask = text.to(dev), mask.to(dev)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.state = net.init_stream_state()
        self.decoder = StreamingDecoder(pipeline.vae)
        self._pending: tuple[torch.Tensor, Any] | None = None  # last clean chunk + its camera, not yet in state
        self.last_c2w = np.eye(4)
        self.chunk_index = 0  # chunks generated so far
        self.latent_frames = 0  # latent frames generated so far (frame 0 included)

    # ---------------------------------------------------------------------------------------------
    def expected_poses(self) -> int:
        """Poses the next ``step`` needs: the raw frames it generates (frame 0 excluded)."""
        return self.first_chunk_poses if self.chunk_index == 0 else self.chunk_poses

    def check_poses(self, c2w: Any, partial: bool = False) -> np.ndarray:
        """Validate the client's poses for the next chunk; return them as float64 (n, 4, 4).

        ``partial`` also accepts a shorter chunk of whole latent frames (a multiple of the temporal
        stride): the last chunk of a one-shot trajectory.
        """
        from model.camera import validate_trajectory

        n = self.expected_poses()
        if not isinstance(c2w, np.ndarray) or c2w.dtype.kind != "f":
            raise SessionError(f"C2W must be a float array, got {getattr(c2w, 'dtype', type(c2w))}")
        if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
            raise SessionError(f"C2W must have shape (n, 4, 4), got {c2w.shape}")
        short_ok = partial and 0 < c2w.shape[0] < n and c2w.shape[0] % self.ts == 0
        if c2w.shape[0] != n and not short_ok:
            raise SessionError(f"C2W has {c2w.shape[0]} poses but chunk {self.chunk_index} generates {n} raw "
                               f"frames (START: {self.first_chunk_poses}, then {self.chunk_poses} per chunk)")
        if not np.isfinite(c2w).all():
            raise SessionError("C2W contains NaN or inf")
        c2w = c2w.astype(np.float64)
        try:
            validate_trajectory(c2w, np.repeat(self.K[None], len(c2w), axis=0), name="C2W")
        except ValueError as err:
            raise SessionError(str(err)) from None
        return c2w

    def poses_for(self, c2w: np.ndarray | None = None, action: str | None = None,
                  partial: bool = False) -> np.ndarray:
        """The next chunk's poses from exactly one of ``c2w`` / ``action`` (validated)."""
        if (c2w is None) == (action is None):
            raise SessionError("send exactly one of ACTION (keys for the next chunk) or C2W (its poses)")
        if action is not None:
            return action_poses(action, self.last_c2w, self.expected_poses(), self.fps)
        return self.check_poses(c2w, partial=partial)

    @torch.no_grad()
    def step(self, c2w: np.ndarray | None = None, action: str | None = None,
             partial: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Generate the next chunk; return (frames uint8 (n, H, W, 3), their poses float64 (n, 4, 4)).

        ``partial=True`` allows a short final chunk (see ``check_poses``); the session can go on after
        it, but its frames then no longer line up with ``generate`` on one long trajectory.
        """
        from model.camera import camera_condition
        from model.sampling import FlowMatchScheduler, draw_chunk_noise

        poses = self.poses_for(c2w, action, partial=partial)
        cfg, dev = self.cfg, self.pipeline.device
        first = self.chunk_index == 0
        f = len(poses) // self.ts + first  # latent frames of this chunk (frame 0 counts in the first)
        window = np.concatenate([np.eye(4)[None], poses])  # frame 0 + this chunk's raw frames
        cam = camera_condition(torch.as_tensor(window)[None], torch.as_tensor(np.repeat(self.K[None], len(window), 0))[None],
                               (self.height, self.width), cfg.latent_hw, self.ts, dtype=torch.float32).to(dev)
        if not first:
            cam = cam.slice_frames(1, 1 + f)
        text, mask = self.guide.text_batch(self.text, self.mask)
        cam_in = self.guide.camera_batch(cam)
        if self._pending is not None:  # the previous chunk's clean pass, deferred to now
            self.state = self._clean_pass(*self._pending, text, mask)
            self._pending = None

        B, C, _, h, w = self.cond_latent.shape
        fresh = draw_chunk_noise(self.generator, (B, C, f - first, h, w), dev, self.cond_latent.dtype)
        x = torch.cat([self.cond_latent, fresh], dim=2) if first else fresh
        prefix = 1 if first else 0
        gen_mask = torch.ones(B, f, device=dev)
        gen_mask[:, :prefix] = 0.0
        for s, s_next in zip(self.sigmas[:-1], self.sigmas[1:]):
            v = self._velocity(x, gen_mask * s, text, mask, cam_in)
            if self.stochastic:
                x0 = FlowMatchScheduler.predict_x0(x, v, s)
                eps = draw_chunk_noise(self.generator, x.shape, x.device, x.dtype)
                x = FlowMatchScheduler.add_noise(x0, eps, s_next) if s_next > 0 else x0
            else:
                x = FlowMatchScheduler.step(x, v, s, s_next)
            x[:, :, :prefix] = self.cond_latent
        self._pending = (x, cam_in)
        frames = _to_uint8(self.decoder.decode(x))
        self.chunk_index += 1
        self.latent_frames += f
        self.last_c2w = poses[-1]
        out_poses = window if first else poses
        return frames, out_poses

    def _velocity(self, x, sigma, text, mask, cam):
        g = self.guide
        v, _ = self.pipeline.network.forward_chunk(g.batch(x), g.batch(sigma), text, mask, cam, self.state)
        return g.combine(v)

    def _clean_pass(self, x, cam, text, mask):
        """One sigma-0 pass on a finished chunk writes it into the stream state."""
        xx = self.guide.batch(x)
        _, state = self.pipeline.network.forward_chunk(xx, xx.new_zeros(xx.shape[0], xx.shape[2]), text, mask,
                                                       cam, self.state)
        return state

    @property
    def last_chunk_latents(self) -> torch.Tensor | None:
        """Normalised latents (1, C, f, h, w) of the chunk generated last (None before the first)."""
        return None if self._pending is None else self._pending[0]

    def num_bytes(self) -> int:
        """Bytes of tensors this session holds between requests (state, pending chunk, decoder cache)."""
        pending = sum(t.numel() * t.element_size() for t in (self._pending[0],)) if self._pending else 0
        fixed = sum(t.numel() * t.element_size() for t in (self.cond_latent, self.text, self.mask))
        return _state_bytes(self.state) + pending + self.decoder.num_bytes() + fixed


# --------------------------------------------------------------------------------------------------
# many sessions
# --------------------------------------------------------------------------------------------------

@dataclass
class _Entry:
    session: StreamingSession
    last_used: float
    busy: bool = False


class SessionManager:
    """Live sessions keyed by correlation id, with a limit and idle reaping; thread-safe.

    Args:
        pipeline: shared by every session (weights are read-only; only the per-session state differs).
        max_sessions: live sessions allowed; the next START gets ``SessionError`` and no live session
            is touched.
        idle_timeout_s: a session unused this long is dropped (keep it equal to Triton's
            ``max_sequence_idle_microseconds``, which forgets the sequence at the same moment).
        clock: monotonic time source (tests pass a fake one).
        limit_note: said in the limit error after the count, e.g. that the limit is per Triton instance.
    """

    def __init__(self, pipeline: Any, max_sessions: int = 4, idle_timeout_s: float = 60.0,
                 default_mode: str = "few_step", num_steps: int | None = None,
                 clock: Callable[[], float] = time.monotonic, limit_note: str = "") -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        if not idle_timeout_s > 0:
            raise ValueError(f"idle_timeout_s must be > 0, got {idle_timeout_s}")
        if default_mode not in SESSION_MODES:
            raise ValueError(f"default_mode must be one of {SESSION_MODES}, got {default_mode!r}")
        self.pipeline = pipeline
        self.max_sessions = int(max_sessions)
        self.idle_timeout_s = float(idle_timeout_s)
        self.default_mode = default_mode
        self.num_steps = num_steps
        self.clock = clock
        self.limit_note = limit_note
        self._sessions: dict[int, _Entry] = {}
        self._lock = threading.Lock()
        self.reaped = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def ids(self) -> list[int]:
        with self._lock:
            return sorted(self._sessions)

    def reap(self) -> list[int]:
        """Drop sessions idle longer than ``idle_timeout_s``; return their ids."""
        now = self.clock()
        with self._lock:
            dead = [k for k, e in self._sessions.items()
                    if e is not None and not e.busy and now - e.last_used > self.idle_timeout_s]
            for k in dead:
                del self._sessions[k]
            self.reaped += len(dead)
        return dead

    def start(self, corrid: int, image: np.ndarray, intrinsics: np.ndarray | None = None, seed: int = 0,
              prompt: str = "", mode: str | None = None) -> StreamingSession:
        """Open session ``corrid`` (limit checked before any work, so a refused START costs nothing)."""
        corrid = _check_corrid(corrid)
        if isinstance(prompt, bytes):
            prompt = prompt.decode("utf-8", errors="replace")
        if len(prompt.encode()) > MAX_PROMPT_BYTES:
            raise SessionError(f"PROMPT is longer than {MAX_PROMPT_BYTES} bytes")
        self.reap()
        with self._lock:
            if corrid in self._sessions:
                raise SessionError(f"session {corrid} is already live: START was sent twice; send END first "
                                   f"or use a new correlation id")
            if len(self._sessions) >= self.max_sessions:
                note = f" ({self.limit_note})" if self.limit_note else ""
                raise SessionError(f"session limit reached: {len(self._sessions)} of {self.max_sessions} sessions "
                                   f"are live{note}; retry after one ends (idle sessions are dropped after "
                                   f"{self.idle_timeout_s:g} s)")
            # Reserve the slot under the lock; build outside it (the image encode takes a moment).
            self._sessions[corrid] = None  # type: ignore[assignment]
        try:
            session = StreamingSession(self.pipeline, image, intrinsics, seed=seed, prompt=prompt,
                                       mode=mode or self.default_mode, num_steps=self.num_steps)
        except BaseException:
            with self._lock:
                self._sessions.pop(corrid, None)
            raise
        with self._lock:
            self._sessions[corrid] = _Entry(session, self.clock())
        return session

    def _live(self, corrid: int) -> _Entry:
        """The entry of live session ``corrid`` (call with the lock held) or a ``SessionError`` saying why
        there is none (a START still building its session counts as not live yet)."""
        entry = self._sessions.get(corrid)
        if entry is None:
            raise SessionError(f"unknown session {corrid}: send START first (sessions end on END and are "
                               f"dropped after {self.idle_timeout_s:g} s idle)")
        return entry

    def get(self, corrid: int) -> StreamingSession:
        """The live session ``corrid`` or a ``SessionError`` that says why there is none."""
        corrid = _check_corrid(corrid)
        with self._lock:
            return self._live(corrid).session

    def step(self, corrid: int, c2w: np.ndarray | None = None,
             action: str | None = None) -> tuple[np.ndarray, np.ndarray, int]:
        """Next chunk of session ``corrid``: (frames, poses, chunk index)."""
        corrid = _check_corrid(corrid)
        with self._lock:
            entry = self._live(corrid)
            if entry.busy:
                raise SessionError(f"session {corrid} is already generating a chunk; send one request at a time")
            entry.busy = True
        try:
            index = entry.session.chunk_index
            frames, poses = entry.session.step(c2w=c2w, action=action)
            return frames, poses, index
        finally:
            with self._lock:
                entry.busy = False
                entry.last_used = self.clock()

    def end(self, corrid: int) -> None:
        """Free session ``corrid`` at once (``SessionError`` if it is not live, e.g. END sent twice)."""
        corrid = _check_corrid(corrid)
        with self._lock:
            if self._sessions.pop(corrid, None) is None:
                raise SessionError(f"unknown session {corrid}: END for a session that is not live "
                                   f"(never started, already ended, or reaped after idling)")

    def discard(self, corrid: int) -> None:
        """Drop ``corrid`` if live, silently (a failed request that must not leave a session behind)."""
        with self._lock:
            self._sessions.pop(int(corrid), None)

    def num_bytes(self) -> int:
        with self._lock:
            entries = [e for e in self._sessions.values() if e is not None]
        return sum(e.session.num_bytes() for e in entries)


def _check_corrid(corrid: Any) -> int:
    try:
        value = int(np.asarray(corrid).reshape(()))
    except (TypeError, ValueError):
        raise SessionError(f"CORRID must be one integer, got {corrid!r}") from None
    if value <= 0:
        raise SessionError(f"CORRID must be a positive correlation id, got {value}")
    return value
