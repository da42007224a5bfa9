"""Camera trajectories for users: a keyboard-like action DSL and the SANA-WM-Bench ``.npz`` format.

A trajectory is N camera-to-world poses (OpenCV axes: +X right, +Y down, +Z forward; metres), N pixel
intrinsics and a frame rate. On disk it is an ``.npz`` with ``c2w`` (N,4,4) float64, ``intrinsics``
(N,3,3) float64 and ``fps`` (scalar), the layout of the public SANA-WM-Bench; extra keys (e.g. an
annotation ``confidence``) are ignored on load.

The DSL describes motion like a game controller, one command per ``;`` (or newline)::

    forward 1.0 2s; yaw_left 30 1.5s; w 2s; a 1s; hold 0.5s

``KIND [SPEED] DURATION`` with DURATION a number followed by ``s``. Translations (forward, back, left,
right, up, down) take m/s and move along the CURRENT camera axes; rotations take deg/s: yaw about the
camera's Y axis, pitch about its X axis. Single keys w/a/s/d/q/e are forward/left/back/right/yaw_left/
yaw_right; a missing speed defaults to 1 m/s or 30 deg/s.

CLI: ``python -m model.trajectory --actions "w 2s; q 1s" --fps 16 --size 64x64 -o traj.npz``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# model.camera (torch, ~1.1 s to import) is imported inside the three functions that use it: the annotator needs
# only default_intrinsics from here, and every split-check worker process re-imports its caller's main module
# (measured in the annotate bench: a worker was up 1.2-1.6 s after start() with torch in that chain, 0.7-1.0 s
# without).


__all__ = [
    "Action",
    "Trajectory",
    "default_intrinsics",
    "load_trajectory",
    "main",
    "parse_actions",
    "save_trajectory",
    "trajectory_from_actions",
]

# Body-frame unit velocity (camera axes) for each translation, and unit angular velocity for each rotation.
# Yaw right is +angle about +Y (which points down), turning +Z toward +X; pitch up is +angle about +X,
# turning +Z toward -Y (up in OpenCV axes).
_TRANSLATIONS = {
    "forward": (0.0, 0.0, 1.0), "back": (0.0, 0.0, -1.0),
    "right": (1.0, 0.0, 0.0), "left": (-1.0, 0.0, 0.0),
    "down": (0.0, 1.0, 0.0), "up": (0.0, -1.0, 0.0),
}
_ROTATIONS = {
    "yaw_right": (0.0, 1.0, 0.0), "yaw_left": (0.0, -1.0, 0.0),
    "pitch_up": (1.0, 0.0, 0.0), "pitch_down": (-1.0, 0.0, 0.0),
}
KINDS = tuple(_TRANSLATIONS) + tuple(_ROTATIONS) + ("hold",)
KEYS = {"w": "forward", "a": "left", "s": "back", "d": "right", "q": "yaw_left", "e": "yaw_right"}
DEFAULT_SPEED_MPS = 1.0
DEFAULT_SPEED_DEGPS = 30.0
_DURATION = re.compile(r"^([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)s$")


@dataclass(frozen=True)
class Action:
    """One constant-velocity segment: ``kind`` at ``speed`` (m/s or deg/s; 0 for hold) for ``duration_s``."""

    kind: str
    speed: float
    duration_s: float

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Action.kind must be one of {list(KINDS)}, got {self.kind!r}")
        if not (math.isfinite(self.speed) and self.speed >= 0):
            raise ValueError(f"Action.speed must be finite and >= 0 (use the opposite kind to reverse), "
                             f"got {self.speed} for {self.kind!r}")
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ValueError(f"Action.duration_s must be finite and > 0, got {self.duration_s} for {self.kind!r}")

    def body_twist(self) -> tuple[np.ndarray, np.ndarray]:
        """(velocity (3,) m/s, angular velocity (3,) rad/s) in the current camera frame."""
        v, w = np.zeros(3), np.zeros(3)
        if self.kind in _TRANSLATIONS:
            v = np.asarray(_TRANSLATIONS[self.kind]) * self.speed
        elif self.kind in _ROTATIONS:
            w = np.asarray(_ROTATIONS[self.kind]) * math.radians(self.speed)
        return v, w


def parse_actions(text: str) -> list[Action]:
    """Parse ``"forward 1.0 2s; yaw_left 30 1.5s; w 2s"`` into actions (see module docstring).

    Raises ``ValueError`` naming the command number and the bad token.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_actions expects a string, got {type(text).__name__}")
    actions: list[Action] = []
    commands = [c.strip() for c in re.split(r"[;\n]", text)]
    for n, cmd in enumerate((c for c in commands if c), start=1):
        where = f"command {n} {cmd!r}"
        tokens = cmd.lower().split()
        kind = KEYS.get(tokens[0], tokens[0])
        if kind not in KINDS:
            raise ValueError(f"{where}: unknown action {tokens[0]!r}; known: {list(KINDS)} "
                             f"or keys {sorted(KEYS)}")
        if len(tokens) not in (2, 3):
            raise ValueError(f"{where}: expected 'KIND [SPEED] DURATION' (e.g. 'forward 1.0 2s'), "
                             f"got {len(tokens)} tokens")
        m = _DURATION.match(tokens[-1])
        if m is None:
            raise ValueError(f"{where}: bad duration {tokens[-1]!r}; write seconds with an 's' suffix, e.g. '2s'")
        duration = float(m.group(1))
        if kind == "hold":
            if len(tokens) == 3:
                raise ValueError(f"{where}: 'hold' takes no speed, got {tokens[1]!r}")
            speed = 0.0
        elif len(tokens) == 3:
            try:
                speed = float(tokens[1])
            except ValueError:
                raise ValueError(f"{where}: bad speed {tokens[1]!r}; expected a number") from None
        else:
            speed = DEFAULT_SPEED_MPS if kind in _TRANSLATIONS else DEFAULT_SPEED_DEGPS
        try:
            actions.append(Action(kind, speed, duration))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    if not actions:
        raise ValueError(f"no actions in {text!r}")
    return actions


def default_intrinsics(height: int, width: int, fov_deg: float = 60.0) -> np.ndarray:
    """Pinhole K (3, 3) float64 with HORIZONTAL field of view ``fov_deg``, square pixels, centred
    principal point (W/2, H/2) in the pixel-corner convention of ``model.camera``."""
    if height <= 0 or width <= 0:
        raise ValueError(f"default_intrinsics: height and width must be > 0, got {height}x{width}")
    if not 0 < fov_deg < 180:
        raise ValueError(f"default_intrinsics: fov_deg must be in (0, 180), got {fov_deg}")
    f = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]], dtype=np.float64)


@dataclass(frozen=True)
class Trajectory:
    """Camera path: ``c2w`` (N, 4, 4) float64, ``intrinsics`` (N, 3, 3) float64 (a (3, 3) is broadcast),
    ``fps`` > 0. Validated on construction and stored as private float64 copies (left writable on
    purpose: ``torch.from_numpy`` warns on read-only arrays, and every consumer converts to torch)."""

    c2w: np.ndarray
    intrinsics: np.ndarray
    fps: float

    def __post_init__(self) -> None:
        c2w = np.array(self.c2w, dtype=np.float64)  # a copy: callers keep ownership of their arrays
        k = np.array(self.intrinsics, dtype=np.float64)
        if k.shape == (3, 3) and c2w.ndim == 3:
            k = np.repeat(k[None], c2w.shape[0], axis=0)
        from model.camera import validate_trajectory  # torch: imported where used (see the module's imports)

        validate_trajectory(c2w, k, name="Trajectory")
        fps = float(self.fps)
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"Trajectory.fps must be finite and > 0, got {self.fps}")
        object.__setattr__(self, "c2w", c2w)
        object.__setattr__(self, "intrinsics", k)
        object.__setattr__(self, "fps", fps)

    @property
    def num_frames(self) -> int:
        return int(self.c2w.shape[0])

    @property
    def duration_s(self) -> float:
        """Time from the first to the last frame."""
        return (self.num_frames - 1) / self.fps

    def relative(self) -> Trajectory:
        """The same path expressed in frame 0's camera frame (c2w[0] = I), metres kept."""
        from model.camera import relative_to_first

        return Trajectory(relative_to_first(self.c2w).numpy(), self.intrinsics, self.fps)


def _segment(v: np.ndarray, w: np.ndarray, dt: float) -> np.ndarray:
    """Body-frame motion (4, 4) over ``dt`` at constant (v, w): translate in the current frame, then rotate.

    Each DSL action is a pure translation or a pure rotation, so the order inside a segment does not
    matter for DSL input; it only fixes the semantics for direct callers.
    """
    T = np.eye(4)
    ang = w * dt
    theta = float(np.linalg.norm(ang))
    if theta > 0:
        a = ang / theta
        A = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
        T[:3, :3] = np.eye(3) + math.sin(theta) * A + (1 - math.cos(theta)) * (A @ A)  # Rodrigues
    T[:3, 3] = v * dt
    return T


def trajectory_from_actions(
    actions: Sequence[Action] | str,
    fps: float,
    K: np.ndarray,
    num_frames: int | None = None,
) -> Trajectory:
    """Integrate actions into a metric trajectory, one pose per frame at t_k = k / fps (frame 0 = I).

    Args:
        actions: a list of ``Action`` or a DSL string (``parse_actions``).
        fps: frames per second (> 0).
        K: (3, 3) intrinsics shared by all frames.
        num_frames: if given, truncate to or pad (hold the last pose) to exactly this many frames.
            Default: 1 + ceil(total_duration * fps), so the last frame reaches the end of the last action.

    Integration is exact for piecewise-constant velocities: each frame interval is split at action
    boundaries and the segments compose in order, so results do not depend on how durations align with
    frames.
    """
    acts = parse_actions(actions) if isinstance(actions, str) else list(actions)
    if not acts or not all(isinstance(a, Action) for a in acts):
        raise ValueError("trajectory_from_actions: actions must be a DSL string or a non-empty list of Action")
    fps = float(fps)
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"trajectory_from_actions: fps must be finite and > 0, got {fps}")
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"trajectory_from_actions: K must be one (3, 3) intrinsics matrix, got shape {K.shape} "
                         f"(pass num_frames by keyword)")
    total = sum(a.duration_s for a in acts)
    if num_frames is None:
        # Tolerance: 2 s at 10 fps is 20.000000000000004 in floating point, which is 20 frames, not 21.
        num_frames = 1 + math.ceil(total * fps - 1e-9)
    if int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f"trajectory_from_actions: num_frames must be an integer >= 1, got {num_frames}")
    num_frames = int(num_frames)

    # Action boundaries on the time axis; beyond the last one the camera holds still.
    ends = np.cumsum([a.duration_s for a in acts])
    starts = ends - np.array([a.duration_s for a in acts])
    twists = [a.body_twist() for a in acts]
    c2w = np.empty((num_frames, 4, 4))
    c2w[0] = np.eye(4)
    for k in range(1, num_frames):
        t0, t1 = (k - 1) / fps, k / fps
        T = c2w[k - 1].copy()
        for (v, w), s, e in zip(twists, starts, ends):
            lo, hi = max(t0, s), min(t1, e)
            if hi > lo:
                T = T @ _segment(v, w, hi - lo)
        # Re-orthonormalise so thousands of composed steps (60 s at 16 fps) stay a proper rotation.
        u, _, vt = np.linalg.svd(T[:3, :3])
        T[:3, :3] = u @ vt
        c2w[k] = T
    return Trajectory(c2w, np.repeat(K[None], num_frames, axis=0), fps)


# --------------------------------------------------------------------------------------------------
# .npz I/O (SANA-WM-Bench layout)
# --------------------------------------------------------------------------------------------------

def save_trajectory(traj: Trajectory, path: str | os.PathLike) -> Path:
    """Write ``traj`` to ``path`` (.npz: c2w, intrinsics, fps) atomically: temp file in the same
    directory, fsync, then ``os.replace``, so readers never see a half-written file."""
    if not isinstance(traj, Trajectory):
        raise TypeError(f"save_trajectory expects a Trajectory, got {type(traj).__name__}")
    from model.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        # A file object (not a name) stops numpy from appending ".npz" to the temp name.
        np.savez(f, c2w=traj.c2w, intrinsics=traj.intrinsics, fps=np.float64(traj.fps))
    return path


def load_trajectory(path: str | os.PathLike) -> Trajectory:
    """Read a trajectory ``.npz`` (keys c2w (N,4,4), intrinsics (N,3,3) or (3,3), fps scalar).

    Raises ``ValueError`` naming the file and the problem (unreadable, missing key, wrong shape or
    dtype, NaN/inf, invalid pose). Pickled objects are never loaded.
    """
    path = Path(path)
    where = f"trajectory file {str(path)!r}"
    if not path.is_file():
        raise ValueError(f"{where}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("c2w", "intrinsics", "fps") if k not in z.files]
            if missing:
                raise ValueError(f"{where}: missing key(s) {missing}; found {sorted(z.files)}")
            arrays = {k: z[k] for k in ("c2w", "intrinsics", "fps")}
    except ValueError as e:
        if str(e).startswith(where):
            raise
        raise ValueError(f"{where}: cannot read as a numpy .npz without pickles ({e})") from None
    except (OSError, EOFError) as e:
        raise ValueError(f"{where}: cannot read as a numpy .npz ({e})") from None

    for key, arr in arrays.items():
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"{where}: {key!r} must be a real number array, got dtype {arr.dtype}")
    c2w, k, fps = arrays["c2w"], arrays["intrinsics"], arrays["fps"]
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
        raise ValueError(f"{where}: 'c2w' must have shape (N, 4, 4), got {c2w.shape}")
    if k.shape != (3, 3) and (k.ndim != 3 or k.shape[1:] != (3, 3)):
        raise ValueError(f"{where}: 'intrinsics' must have shape (N, 3, 3) or (3, 3), got {k.shape}")
    if fps.size != 1:
        raise ValueError(f"{where}: 'fps' must be a scalar, got shape {fps.shape}")
    try:
        return Trajectory(c2w, k, float(fps.reshape(())))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------

def _parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)", text.strip().lower())
    if m is None or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
        raise argparse.ArgumentTypeError(f"size must be HEIGHTxWIDTH in pixels, e.g. 704x1280, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def summarize(traj: Trajectory) -> str:
    """A few human-readable lines: frames, duration, final position, path length, total rotation."""
    rel = traj.relative().c2w
    pos = rel[:, :3, 3]
    path_len = float(np.linalg.norm(np.diff(pos, axis=0), axis=1).sum())
    from model.camera import rotation_angle

    final_angle = math.degrees(float(rotation_angle(rel[-1])))
    k = traj.intrinsics[0]
    return "\n".join([
        f"frames: {traj.num_frames} at {traj.fps:g} fps ({traj.duration_s:.3f} s)",
        (f"final position (m, camera-0 frame, +X right +Y down +Z forward): "
         f"[{pos[-1, 0]:.3f}, {pos[-1, 1]:.3f}, {pos[-1, 2]:.3f}]"),
        f"path length: {path_len:.3f} m; final rotation from frame 0: {final_angle:.2f} deg",
        f"intrinsics: fx={k[0, 0]:.2f} fy={k[1, 1]:.2f} cx={k[0, 2]:.2f} cy={k[1, 2]:.2f}",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    """Build a trajectory from DSL actions and write it as a SANA-WM-Bench ``.npz``; print a summary."""
    p = argparse.ArgumentParser(prog="python -m model.trajectory", description=__doc__.split("\n")[0])
    p.add_argument("--actions", required=True, help="DSL, e.g. 'forward 1.0 2s; yaw_left 30 1.5s; w 2s'")
    p.add_argument("--fps", type=float, default=16.0, help="frames per second (default 16)")
    p.add_argument("--size", type=_parse_size, default=(64, 64), help="HEIGHTxWIDTH in pixels (default 64x64)")
    p.add_argument("--fov", type=float, default=60.0, help="horizontal field of view in degrees (default 60)")
    p.add_argument("--num-frames", type=int, default=None, help="truncate/pad (hold) to this many frames")
    p.add_argument("-o", "--out", required=True, help="output .npz path")
    args = p.parse_args(argv)
    K = default_intrinsics(*args.size, fov_deg=args.fov)
    traj = trajectory_from_actions(args.actions, args.fps, K, num_frames=args.num_frames)
    out = save_trajectory(traj, args.out)
    print(summarize(traj))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    from model.cli import run

    sys.exit(run(main))
