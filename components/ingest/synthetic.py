"""Procedural synthetic clips with exact ground truth: textured rooms seen along metric 6-DoF paths.

Why: annotation (SfM poses, metric scale), camera-conditioned training and action-following metrics
all need videos whose camera trajectory is known exactly. This module ray-casts a closed room (an
axis-aligned box with textured walls, floor and ceiling) holding several textured boxes and pillars,
in vectorised numpy (no OpenGL, so it runs in any CI container), and saves per clip

* ``<id>.mp4``  H.264 frames (N,H,W,3) uint8,
* ``<id>.npz``  SANA-WM-Bench keys: ``c2w`` (N,4,4) float64 camera-to-world relative to frame 0,
  OpenCV axes (+X right, +Y down, +Z forward), metres; ``intrinsics`` (N,3,3) float64 pixel K;
  ``fps``; ``depth`` (N,H,W) float32 z-depth in metres (distance along the optical axis).

Pixel convention (COLMAP's): pixel (row r, col c) covers [c, c+1) x [r, r+1) and its centre is
(c + 0.5, r + 0.5), so ``cx = W/2`` and ``cy = H/2``.

Textures are band-limited value noise (6 octaves, 1 to 32 cells per metre), a checkerboard and
coloured blobs, evaluated at the hit point in metres. Octaves finer than about two pixels at the hit
distance are faded out (the pixel footprint is known from depth and incidence angle), which keeps the
images free of moire so optical flow and feature matching behave as on real video. Shading is
Lambertian from one point light, i.e. view-independent: a surface point has the same colour in every
frame, which is what the geometric-consistency test relies on.

The room is sized around the trajectory, so any trajectory kind and length fits without clipping
through walls; boxes are placed only where they keep a clearance from every camera position.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from components.ingest.sources import write_manifest
from model.video_io import write_video

__all__ = [
    "DATASET_FPS",
    "HELDOUT_STREAM",
    "KINDS",
    "SPEEDS",
    "SPLITS",
    "ClipSpec",
    "RenderedClip",
    "generate_dataset",
    "render_clip",
    "write_clip",
]

KINDS: tuple[str, ...] = ("walk_forward", "orbit", "pure_yaw", "strafe", "turn", "mixed")
# speed name -> (translation m/s, rotation deg/s): "slow" ~ strolling, "fast" ~ brisk walk + quick pan.
SPEEDS: dict[str, tuple[float, float]] = {"slow": (0.5, 15.0), "fast": (1.4, 45.0)}
# Frame rate of the rendered data sets (the paper's 16 fps). At 8 fps a "fast" pan turned 5.6 deg per frame,
# a 33-frame clip 180 deg: the last frames shared nothing with the first, so the camera told a denoiser
# little and the small base learned to ignore it; at 16 fps a slow clip keeps most of frame 0 in view.
DATASET_FPS = 16.0

# Splits of a synthetic dataset. Clip i of split "train" renders from SeedSequence([seed, i]) (ids
# "syn<seed>-<i>"), clip i of "heldout" from SeedSequence([seed, i, HELDOUT_STREAM]) ("heldout<seed>-<i>"):
# a separate seed stream, so no held-out scene is a training scene whatever the two --seed values are.
SPLITS: tuple[str, ...] = ("train", "heldout")
HELDOUT_STREAM = 0x4E1D

_WALL_CLEARANCE = 0.8  # metres between any camera position and a wall
_OBJECT_CLEARANCE = 0.5  # metres between any camera position and a box footprint
_LOOK_AHEAD = 2.5  # metres of room kept in front of every camera position
_NUM_OCTAVES = 6
_COLOUR_OCTAVES = 2  # octaves 0..1 (1, 2 cells/m) vary in colour, finer ones in luminance only
_LATTICE = 64  # value-noise lattice size per octave (cells); octaves are rotated to hide the period
_OCTAVE_AMPS = np.array([0.22, 0.2, 0.18, 0.18, 0.18, 0.18], dtype=np.float32)


@dataclass(frozen=True)
class ClipSpec:
    """What to render: trajectory ``kind`` (one of :data:`KINDS`), ``speed`` ("slow"|"fast"),
    ``num_frames`` N, ``fps``, image ``height`` x ``width`` (even, for yuv420p), the ``seed`` that fixes
    scene, textures and trajectory, and the horizontal field of view ``fov_deg``."""

    kind: str = "walk_forward"
    speed: str = "slow"
    num_frames: int = 33
    fps: float = 8.0
    height: int = 64
    width: int = 96
    seed: int = 0
    fov_deg: float = 60.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"ClipSpec.kind must be one of {KINDS}, got {self.kind!r}")
        if self.speed not in SPEEDS:
            raise ValueError(f"ClipSpec.speed must be one of {tuple(SPEEDS)}, got {self.speed!r}")
        if self.num_frames < 1:
            raise ValueError(f"ClipSpec.num_frames must be >= 1, got {self.num_frames}")
        if not self.fps > 0:
            raise ValueError(f"ClipSpec.fps must be > 0, got {self.fps}")
        for name in ("height", "width"):
            v = getattr(self, name)
            if v < 8 or v % 2:
                raise ValueError(f"ClipSpec.{name} must be even and >= 8 (H.264 yuv420p), got {v}")
        if not 10.0 <= self.fov_deg <= 150.0:
            raise ValueError(f"ClipSpec.fov_deg must be in [10, 150], got {self.fov_deg}")


@dataclass
class RenderedClip:
    """A rendered clip: ``frames`` uint8 (N,H,W,3), ``depth`` float32 (N,H,W) z-depth in metres,
    ``c2w`` float64 (N,4,4) relative to frame 0 (OpenCV axes), ``intrinsics`` float64 (N,3,3), ``fps``."""

    frames: np.ndarray
    depth: np.ndarray
    c2w: np.ndarray
    intrinsics: np.ndarray
    fps: float
    spec: ClipSpec | None = None


@dataclass(frozen=True)
class _Box:
    centre: np.ndarray  # (3,) world
    half: np.ndarray  # (3,) half extents in the box frame
    yaw: float  # rotation about the world Y axis


@dataclass
class _Scene:
    room_min: np.ndarray  # (3,)
    room_max: np.ndarray  # (3,)
    boxes: list[_Box]
    light: np.ndarray  # (3,) point light position
    light_range: float
    # materials: surface s uses material s (0..5 room faces, 6+b box b)
    base: np.ndarray  # (M,3) base albedo
    blob: np.ndarray  # (M,3) blob albedo
    blob_lattice: np.ndarray  # (M*G*G,) low-frequency mask source, flattened (M,G,G)
    colour_lattices: np.ndarray  # (Oc,M*G*G,3) colour value noise, coarse octaves, flattened (M,G,G)
    lum_lattices: np.ndarray  # (O-Oc,M*G*G) luminance value noise, fine octaves, flattened (M,G,G)
    octave_rot: np.ndarray  # (O,M,4) per-octave uv rotation matrices, row-major
    octave_off: np.ndarray  # (O,M,2) per-octave uv offsets (cells)
    checker_period: np.ndarray  # (M,) metres
    checker_contrast: np.ndarray  # (M,)
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# Rotations (OpenCV axes: yaw about +Y (down), positive turns right; pitch about +X, positive looks up)


def _rot_y(a: np.ndarray) -> np.ndarray:
    """(N,) yaw angles -> (N,3,3); maps +Z forward to (sin a, 0, cos a)."""
    c, s = np.cos(a), np.sin(a)
    z, o = np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _rot_x(a: np.ndarray) -> np.ndarray:
    """(N,) pitch angles -> (N,3,3); positive pitch tilts +Z forward towards -Y (up)."""
    c, s = np.cos(a), np.sin(a)
    z, o = np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


# --------------------------------------------------------------------------------------------------
# Trajectories in a local frame: camera starts at the origin looking along +Z.


def _smooth_random(rng: np.random.Generator, t: np.ndarray, knot_dt: float, lo: float, hi: float) -> np.ndarray:
    """A smooth random signal over times ``t`` (cosine-interpolated knots every ``knot_dt`` s)."""
    n_knots = int(np.ceil(t[-1] / knot_dt)) + 2
    knots = rng.uniform(lo, hi, n_knots)
    x = t / knot_dt
    i = np.floor(x).astype(int)
    f = (1 - np.cos(np.pi * (x - i))) / 2  # C1 easing between knots
    return knots[i] * (1 - f) + knots[i + 1] * f


def _local_trajectory(kind: str, speed: str, n: int, fps: float, rng: np.random.Generator):
    """-> (pos (N,3), yaw (N,), pitch (N,), look_target (3,)|None) in the local start frame."""
    v, w_deg = SPEEDS[speed]
    w = np.deg2rad(w_deg)
    t = np.arange(n) / fps
    sgn = 1.0 if rng.random() < 0.5 else -1.0
    ph = rng.uniform(0, 2 * np.pi, 4)
    pos = np.zeros((n, 3))
    yaw = np.zeros(n)
    pitch = np.zeros(n)
    # a walking camera bobs at step frequency (~2 Hz) and sways at half of it
    bob = 0.02 * np.sin(2 * np.pi * 1.8 * t + ph[0])
    sway = 0.03 * np.sin(2 * np.pi * 0.9 * t + ph[1])
    target = None
    if kind == "walk_forward":
        pos[:, 2] = v * t
        pos[:, 0] = sway - sway[0]
        pos[:, 1] = bob - bob[0]
        yaw = np.deg2rad(3.0) * (np.sin(2 * np.pi * 0.15 * t + ph[2]) - np.sin(ph[2]))
        pitch = np.deg2rad(2.0) * np.sin(2 * np.pi * 0.2 * t + ph[3])
    elif kind == "orbit":
        r = rng.uniform(1.6, 2.4)
        phi = sgn * w * t
        centre = np.array([0.0, 0.0, r])
        pos = centre + r * np.stack([-np.sin(phi), np.zeros(n), -np.cos(phi)], -1)
        target = centre + np.array([0.0, 0.35, 0.0])  # look slightly down at the centre object
    elif kind == "pure_yaw":
        yaw = sgn * w * t
    elif kind == "strafe":
        pos[:, 0] = sgn * v * t
        pos[:, 1] = bob - bob[0]
        yaw = np.deg2rad(2.0) * (np.sin(2 * np.pi * 0.2 * t + ph[2]) - np.sin(ph[2]))
    elif kind == "turn":
        # constant forward speed and yaw rate: an arc of radius v / w
        yaw = sgn * w * t
        rad = v / (sgn * w)
        pos[:, 0] = rad * (1 - np.cos(yaw))
        pos[:, 2] = rad * np.sin(yaw)
        pos[:, 1] = bob - bob[0]
    elif kind == "mixed":
        # random smooth controls integrated on a fine grid: forward/lateral speed, yaw rate, pitch
        sub = 8
        tf = np.arange((n - 1) * sub + 1) / (fps * sub) if n > 1 else np.zeros(1)
        dt = 1.0 / (fps * sub)
        tt = np.maximum(tf, 1e-9)
        fwd = _smooth_random(rng, tt, 1.5, 0.0, v)
        lat = _smooth_random(rng, tt, 1.5, -0.4 * v, 0.4 * v)
        yaw_rate = _smooth_random(rng, tt, 1.2, -w, w)
        yaw_f = np.concatenate([[0.0], np.cumsum(yaw_rate[:-1]) * dt])
        vel = fwd[:, None] * np.stack([np.sin(yaw_f), 0 * yaw_f, np.cos(yaw_f)], -1)
        vel += lat[:, None] * np.stack([np.cos(yaw_f), 0 * yaw_f, -np.sin(yaw_f)], -1)
        pos_f = np.concatenate([np.zeros((1, 3)), np.cumsum(vel[:-1], 0) * dt])
        pos, yaw = pos_f[::sub], yaw_f[::sub]
        pos[:, 1] = bob - bob[0]
        pitch = _smooth_random(rng, np.maximum(t, 1e-9), 1.5, -np.deg2rad(8), np.deg2rad(8))
    else:  # pragma: no cover - ClipSpec validates kind
        raise ValueError(kind)
    return pos, yaw, pitch, target


# --------------------------------------------------------------------------------------------------
# Scene construction


def _footprint_distance(points_xz: np.ndarray, box: _Box) -> np.ndarray:
    """Horizontal distance (P,) from points (P,2) (x,z) to the yaw-rotated box footprint."""
    c, s = np.cos(box.yaw), np.sin(box.yaw)
    d = points_xz - box.centre[[0, 2]]
    # world -> box frame: inverse of R_y(yaw) restricted to (x, z)
    lx = c * d[:, 0] - s * d[:, 1]
    lz = s * d[:, 0] + c * d[:, 1]
    ex = np.maximum(np.abs(lx) - box.half[0], 0)
    ez = np.maximum(np.abs(lz) - box.half[2], 0)
    return np.hypot(ex, ez)


def _build_scene(cam_pos: np.ndarray, cam_fwd: np.ndarray, orbit_centre: np.ndarray | None,
                 rng: np.random.Generator) -> _Scene:
    """Room sized around camera positions (N,3) and the view ahead of them (forward (N,3)), boxes
    placed off the path, random materials."""
    # include points _LOOK_AHEAD metres in front of every camera so no view is a wall at arm's length
    ahead = cam_pos + _LOOK_AHEAD * cam_fwd * np.array([1.0, 0.0, 1.0])
    span = np.concatenate([cam_pos, ahead])
    lo = np.minimum(span.min(0), cam_pos.min(0) - _WALL_CLEARANCE) - rng.uniform(0.4, 2.0, 3)
    hi = np.maximum(span.max(0), cam_pos.max(0) + _WALL_CLEARANCE) + rng.uniform(0.4, 2.0, 3)
    # at least 5 m x 5 m of floor so there is something to see around short paths
    for a in (0, 2):
        grow = max(0.0, 5.0 - (hi[a] - lo[a])) / 2
        lo[a] -= grow
        hi[a] += grow
    cam_h = rng.uniform(1.3, 1.7)  # eye height above the floor (+Y is down)
    hi[1] = cam_pos[:, 1].max() + cam_h  # floor
    lo[1] = hi[1] - rng.uniform(2.6, 3.4)  # ceiling
    floor_y, ceil_y = hi[1], lo[1]

    boxes: list[_Box] = []
    pts = cam_pos[:, [0, 2]]
    # boxes also keep clear of the spot 1 m ahead of each camera: a box filling the whole view leaves
    # nothing to track when the camera moves
    near_ahead = (cam_pos + 1.0 * cam_fwd)[:, [0, 2]]
    if orbit_centre is not None:
        r_min = np.min(np.linalg.norm(pts - orbit_centre[[0, 2]], axis=1))
        half_xz = min(0.5, (r_min - _OBJECT_CLEARANCE) / np.sqrt(2))
        h = rng.uniform(0.6, 1.2)
        boxes.append(_Box(np.array([orbit_centre[0], floor_y - h / 2, orbit_centre[2]]),
                          np.array([half_xz, h / 2, half_xz]), float(rng.uniform(0, np.pi / 2))))
    want = int(rng.integers(5, 10))
    for _ in range(300):
        if len(boxes) >= want + (orbit_centre is not None):
            break
        if rng.random() < 0.3:  # pillar: floor to ceiling
            hx, hz = rng.uniform(0.15, 0.35, 2)
            hy = (floor_y - ceil_y) / 2
            cy = (floor_y + ceil_y) / 2
        else:
            hx, hz = rng.uniform(0.2, 0.8, 2)
            hy = rng.uniform(0.15, 1.1)
            cy = floor_y - hy
        rad = np.hypot(hx, hz)
        if hi[0] - lo[0] <= 2 * rad or hi[2] - lo[2] <= 2 * rad:
            continue
        cx = rng.uniform(lo[0] + rad, hi[0] - rad)
        cz = rng.uniform(lo[2] + rad, hi[2] - rad)
        box = _Box(np.array([cx, cy, cz]), np.array([hx, hy, hz]), float(rng.uniform(0, np.pi)))
        if min(_footprint_distance(pts, box).min(), _footprint_distance(near_ahead, box).min()) >= _OBJECT_CLEARANCE:
            boxes.append(box)

    m = 6 + len(boxes)
    g, o = _LATTICE, _NUM_OCTAVES
    base = rng.uniform(0.25, 0.8, (m, 3))
    blob = np.clip(base + rng.uniform(-0.45, 0.45, (m, 3)), 0.05, 0.95)
    # coarse octaves carry colour variation; fine octaves are luminance only (what feature matchers key
    # on), which also makes their lookups 3x cheaper
    lum = rng.random((_COLOUR_OCTAVES, m * g * g, 1))
    chroma = rng.random((_COLOUR_OCTAVES, m * g * g, 3))
    colour_lattices = (0.6 * lum + 0.4 * chroma).astype(np.float32)
    lum_lattices = rng.random((o - _COLOUR_OCTAVES, m * g * g)).astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi, (o, m))
    octave_rot = np.stack([np.cos(ang), -np.sin(ang), np.sin(ang), np.cos(ang)], -1)
    light = np.array([(lo[0] + hi[0]) / 2, ceil_y + 0.3, (lo[2] + hi[2]) / 2])
    light_range = float(np.linalg.norm(hi - lo)) / 2
    return _Scene(
        room_min=lo, room_max=hi, boxes=boxes, light=light, light_range=light_range,
        base=base.astype(np.float32), blob=blob.astype(np.float32),
        blob_lattice=rng.random(m * g * g).astype(np.float32),
        colour_lattices=colour_lattices, lum_lattices=lum_lattices, octave_rot=octave_rot.astype(np.float32),
        octave_off=rng.uniform(0, g, (o, m, 2)).astype(np.float32),
        checker_period=rng.uniform(0.2, 0.8, m).astype(np.float32),
        checker_contrast=rng.uniform(0.1, 0.3, m).astype(np.float32),
    )


# --------------------------------------------------------------------------------------------------
# Shading


def _bilerp(lat: np.ndarray, mat: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smooth value-noise lookup in ``lat`` (M*G*G[,C]) (flattened (M,G,G) lattices) at lattice
    coordinates x, y (P,) of material ``mat`` (P,) -> (P[,C])."""
    g = _LATTICE
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)  # smoothstep: no lattice-aligned creases
    # flat indices into one array: a single-index take is several times faster than 3-array indexing
    ix0, iy0 = x0.astype(np.int32) % g, y0.astype(np.int32) % g
    ix1, iy1 = (ix0 + 1) % g, (iy0 + 1) % g
    r0, r1 = (mat * g + iy0) * g, (mat * g + iy1) * g
    if lat.ndim == 2:
        fx, fy = fx[:, None], fy[:, None]
    top = lat[r0 + ix0] * (1 - fx) + lat[r0 + ix1] * fx
    bot = lat[r1 + ix0] * (1 - fx) + lat[r1 + ix1] * fx
    return top * (1 - fy) + bot * fy


def _fade(cells_per_pixel: np.ndarray) -> np.ndarray:
    """Weight of a texture band: 1 when a cell spans >= 4 pixels, 0 when it spans <= 2 (anti-aliasing)."""
    return np.clip((0.5 - cells_per_pixel) * 4.0, 0.0, 1.0)


def _albedo(scene: _Scene, mat: np.ndarray, u: np.ndarray, v: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Albedo (P,3) of material ``mat`` (P,) at surface coords u, v (P,) metres; footprint (P,) m/pixel."""
    # coloured blobs: a low-frequency mask (0.7 cells/m) through a soft threshold
    bl = _bilerp(scene.blob_lattice, mat, u * 0.7 + 17.0, v * 0.7 + 5.0)
    mask = np.clip((bl - 0.45) * 10.0, 0.0, 1.0)[:, None]
    col = scene.base[mat] * (1 - mask) + scene.blob[mat] * mask
    # checkerboard, faded when its period approaches the pixel footprint
    per = scene.checker_period[mat]
    chk = np.sign(np.sin(np.pi * u / per) * np.sin(np.pi * v / per))
    col *= (1 + chk * scene.checker_contrast[mat] * _fade(footprint / per))[:, None]
    # multi-scale value noise, 1 .. 32 cells per metre; only pixels where the octave is not faded out
    for k in range(_NUM_OCTAVES):
        f = 2.0**k
        w = _OCTAVE_AMPS[k] * _fade(footprint * f)
        sel = np.nonzero(w > 0)[0]
        if sel.size == 0:
            continue
        if sel.size > 0.7 * w.size:  # indexing a subset only pays off when it is small
            sel = slice(None)
        m, us, vs = mat[sel], u[sel], v[sel]
        rot = scene.octave_rot[k, m]  # (S,4) rotation entries, so octaves do not share axes/period
        x = (rot[:, 0] * us + rot[:, 1] * vs) * f + scene.octave_off[k, m, 0]
        y = (rot[:, 2] * us + rot[:, 3] * vs) * f + scene.octave_off[k, m, 1]
        if k < _COLOUR_OCTAVES:
            noise = _bilerp(scene.colour_lattices[k], m, x, y) - 0.5
        else:
            noise = (_bilerp(scene.lum_lattices[k - _COLOUR_OCTAVES], m, x, y) - 0.5)[:, None]
        col[sel] += w[sel, None] * noise
    return col


def _render_frame(scene: _Scene, dirs_cam: np.ndarray, focal: float, rot: np.ndarray, origin: np.ndarray):
    """Ray-cast one frame. ``dirs_cam`` (3,P) with z == 1, so the hit parameter t is the z-depth.

    Arrays are laid out (3,P) so every per-axis operation is a contiguous row (reductions over a
    length-3 trailing axis are slow in numpy). Returns (rgb (P,3) float in [0,1], depth (P,) float32).
    """
    d = (rot.astype(np.float32) @ dirs_cam)  # (3,P) world directions
    o = origin.astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = 1.0 / d  # +-inf on axis-parallel rays is what the slab test needs
    # room interior: the camera is inside, so each ray exits through the far slab of every axis
    lo, hi = scene.room_min.astype(np.float32), scene.room_max.astype(np.float32)
    # the far bound is chosen by the sign *bit*: a +0.0 component has inv = +inf and must take hi (and -0.0,
    # inv = -inf, lo) so its t is +inf, never -inf (which would win the minimum and give a NaN pixel)
    far = [np.where(np.signbit(d[a]), lo[a], hi[a]) for a in range(3)]
    ta = [(far[a] - o[a]) * inv[a] for a in range(3)]
    t = np.minimum(np.minimum(ta[0], ta[1]), ta[2])
    axis = np.where(ta[0] <= t, 0, np.where(ta[1] <= t, 1, 2))
    surf = axis * 2 + (np.take_along_axis(d, axis[None], 0)[0] > 0)
    normal = np.zeros_like(d)
    # hit coordinates in the face plane (u, v), chosen per face axis
    p = o[:, None] + t * d
    u = np.where(axis == 0, p[1], p[0])
    v = np.where(axis == 2, p[1], p[2])
    for a in range(3):
        normal[a] = np.where(axis == a, -np.sign(d[a]), 0.0)
    for b, box in enumerate(scene.boxes):
        c, s = np.cos(box.yaw), np.sin(box.yaw)
        rb = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float32)
        ol = rb.T @ (o - box.centre.astype(np.float32))
        dl = rb.T @ d
        half = box.half.astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            invl = 1.0 / dl
            b1 = (-half[:, None] - ol[:, None]) * invl
            b2 = (half[:, None] - ol[:, None]) * invl
        tmin, tmax = np.minimum(b1, b2), np.maximum(b1, b2)
        tn = np.maximum(np.maximum(tmin[0], tmin[1]), tmin[2])
        tf = np.minimum(np.minimum(tmax[0], tmax[1]), tmax[2])
        idx = np.nonzero((tn <= tf) & (tn > 1e-4) & (tn < t))[0]
        if idx.size == 0:
            continue
        tni = tn[idx]
        ax = np.where(tmin[0, idx] >= tni, 0, np.where(tmin[1, idx] >= tni, 1, 2))
        t[idx] = tni
        surf[idx] = 6 + b
        nl = np.zeros((3, idx.size), np.float32)
        for a in range(3):
            nl[a] = np.where(ax == a, -np.sign(dl[a, idx]), 0.0)
        normal[:, idx] = rb @ nl
        pl = ol[:, None] + tni * dl[:, idx]
        # per-box offset so faces of different boxes never share texture coordinates
        u[idx] = np.where(ax == 0, pl[1], pl[0]) + 7.3 * b
        v[idx] = np.where(ax == 2, pl[1], pl[2]) + 3.1 * b
    p = o[:, None] + t * d
    dnorm = np.sqrt((d * d).sum(0))
    cos_inc = np.abs((normal * d).sum(0)) / dnorm
    # metres of surface covered by one pixel: distance / focal, stretched by the incidence angle
    footprint = t * dnorm / focal / np.maximum(cos_inc, 0.15)
    alb = _albedo(scene, surf, u, v, footprint)
    to_l = scene.light.astype(np.float32)[:, None] - p
    dist = np.sqrt((to_l * to_l).sum(0))
    ndotl = np.maximum((normal * to_l).sum(0) / dist, 0.0)
    shade = 0.4 + 0.6 * ndotl / (1 + (dist / scene.light_range) ** 2)
    return np.clip(alb * shade[:, None], 0.0, 1.0), t


def intrinsics_for(spec: ClipSpec) -> np.ndarray:
    """Pixel K (3,3) for ``spec``: square pixels, horizontal FOV ``fov_deg``, principal point at centre."""
    f = (spec.width / 2) / np.tan(np.deg2rad(spec.fov_deg) / 2)
    return np.array([[f, 0, spec.width / 2], [0, f, spec.height / 2], [0, 0, 1]], dtype=np.float64)


def render_clip(spec: ClipSpec) -> RenderedClip:
    """Render ``spec`` -> :class:`RenderedClip` (frames (N,H,W,3) uint8, depth (N,H,W), c2w, K, fps).

    Deterministic in ``spec``: the seed fixes the trajectory's randomness, the room, the boxes and
    the textures.
    """
    rng_traj, rng_scene, rng_place = np.random.default_rng(spec.seed).spawn(3)
    n, h, w = spec.num_frames, spec.height, spec.width
    pos, yaw, pitch, target = _local_trajectory(spec.kind, spec.speed, n, spec.fps, rng_traj)
    # place the local path in the world with a random heading so it is not aligned with the walls
    heading = rng_place.uniform(-np.pi, np.pi)
    r0 = _rot_y(np.array([heading]))[0]
    pos_w = pos @ r0.T
    if target is not None:  # orbit: aim every frame at the centre object
        tgt_w = r0 @ target
        fwd = tgt_w - pos_w
        fwd /= np.linalg.norm(fwd, axis=1, keepdims=True)
        yaw_w = np.arctan2(fwd[:, 0], fwd[:, 2])
        pitch = np.arcsin(np.clip(-fwd[:, 1], -1, 1))
    else:
        tgt_w = None
        yaw_w = yaw + heading
    rot_w = _rot_y(yaw_w) @ _rot_x(pitch)  # (N,3,3)
    scene = _build_scene(pos_w, rot_w[:, :, 2], tgt_w, rng_scene)

    k = intrinsics_for(spec)
    jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)  # pixel centres (COLMAP convention)
    dirs_cam = np.stack([(jj - k[0, 2]) / k[0, 0], (ii - k[1, 2]) / k[1, 1], np.ones_like(jj)]).reshape(3, -1)
    dirs_cam = dirs_cam.astype(np.float32)
    frames = np.empty((n, h, w, 3), np.uint8)
    depth = np.empty((n, h, w), np.float32)
    for i in range(n):
        rgb, dep = _render_frame(scene, dirs_cam, float(k[0, 0]), rot_w[i], pos_w[i])
        frames[i] = (rgb.reshape(h, w, 3) * 255 + 0.5).astype(np.uint8)
        depth[i] = dep.reshape(h, w)

    c2w_w = np.tile(np.eye(4), (n, 1, 1))
    c2w_w[:, :3, :3] = rot_w
    c2w_w[:, :3, 3] = pos_w
    c2w = np.linalg.inv(c2w_w[0]) @ c2w_w
    c2w[0] = np.eye(4)  # exact identity, not inv(A) @ A rounding
    c2w[:, 3] = [0, 0, 0, 1]
    return RenderedClip(frames=frames, depth=depth, c2w=c2w, intrinsics=np.tile(k, (n, 1, 1)),
                        fps=float(spec.fps), spec=spec)


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    from model.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def write_clip(clip: RenderedClip, out_dir: str | os.PathLike, clip_id: str) -> tuple[Path, Path]:
    """Write ``<out_dir>/<clip_id>.mp4`` and ``<clip_id>.npz`` (c2w, intrinsics, fps, depth), both
    atomically; returns ``(video_path, npz_path)``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not clip_id or "/" in clip_id or clip_id.startswith("."):
        raise ValueError(f"clip_id must be a plain file stem, got {clip_id!r}")
    video = write_video(clip.frames, out / f"{clip_id}.mp4", clip.fps)
    npz = out / f"{clip_id}.npz"
    _atomic_savez(npz, c2w=clip.c2w.astype(np.float64), intrinsics=clip.intrinsics.astype(np.float64),
                  fps=np.float64(clip.fps), depth=clip.depth.astype(np.float32))
    return video, npz


def split_kinds(kinds: list[str] | tuple[str, ...] | None, holdout_kinds: list[str] | tuple[str, ...],
                split: str) -> tuple[str, ...]:
    """Trajectory kinds one split cycles through: ``kinds`` (default :data:`KINDS`) without
    ``holdout_kinds`` for "train"; ``holdout_kinds`` first, then the rest, for "heldout"."""
    kinds = tuple(kinds) if kinds else KINDS
    holdout = tuple(holdout_kinds or ())
    bad = [k for k in (*kinds, *holdout) if k not in KINDS]
    if bad:
        raise ValueError(f"unknown trajectory kinds {bad}; choose from {KINDS}")
    rest = tuple(k for k in kinds if k not in holdout)
    if split == "train":
        if not rest:
            raise ValueError(f"holdout_kinds {list(holdout)} leave no trajectory kind for training out of {list(kinds)}")
        return rest
    return holdout + rest


def generate_dataset(
    out_dir: str | os.PathLike,
    num_clips: int,
    seed: int,
    height: int = 64,
    width: int = 96,
    num_frames: int = 33,
    fps: float = DATASET_FPS,
    kinds: list[str] | tuple[str, ...] | None = None,
    progress: bool = True,
    split: str = "train",
    holdout_kinds: list[str] | tuple[str, ...] = (),
) -> list[dict]:
    """Render ``num_clips`` clips into ``out_dir`` and write ``manifest.jsonl``; returns its rows.

    Kinds cycle through ``kinds`` (default all of :data:`KINDS`) and speeds alternate so each kind
    appears at both speeds; clip ``i`` uses a seed derived from ``(seed, i)`` (``split="heldout"``: from
    a separate stream, see :data:`HELDOUT_STREAM`). ``holdout_kinds`` are trajectory classes only the
    held-out split has: the train split leaves them out, the held-out split cycles through them first,
    so even one held-out clip shows a class training never saw. Row keys: id, path (file name relative
    to ``out_dir``), annotation (npz name), frames, fps, height, width, h, w, kind, speed, seed, split,
    source="synthetic", status="ok".
    """
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    kinds = split_kinds(kinds, holdout_kinds, split)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    speeds = tuple(SPEEDS)
    rows = []
    for i in tqdm(range(num_clips), desc="synthetic clips", unit="clip", disable=not progress):
        entropy = [seed, i] if split == "train" else [seed, i, HELDOUT_STREAM]
        clip_seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
        spec = ClipSpec(kind=kinds[i % len(kinds)], speed=speeds[(i % len(kinds) + i // len(kinds)) % len(speeds)],
                        num_frames=num_frames, fps=float(fps), height=height, width=width, seed=clip_seed)
        clip_id = f"{'syn' if split == 'train' else 'heldout'}{seed}-{i:05d}"
        video, npz = write_clip(render_clip(spec), out, clip_id)
        rows.append({
            "id": clip_id, "path": video.name, "annotation": npz.name, "frames": num_frames,
            "fps": float(fps), "height": height, "width": width, "h": height, "w": width,
            "kind": spec.kind, "speed": spec.speed, "seed": clip_seed, "split": split, "source": "synthetic",
            "status": "ok", "spec": asdict(spec),
        })
    write_manifest(rows, out / "manifest.jsonl")
    return rows
