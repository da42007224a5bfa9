"""Scale-free, self-calibrating poses: our KLT tracks mapped by pycolmap (two-view geometry, SfM, BA).

Why pycolmap and not our VO here: without depth, the pose graph has to be solved from image evidence
alone, with an unknown focal length. COLMAP's two-view geometry (RANSAC F/E/H with model selection),
its view-graph focal calibration and its mappers (GLOMAP-style global, or incremental) with focal
refinement in bundle adjustment are the field's tested solution; our own contribution is the
measurement: KLT tracks (sub-pixel, forward-backward checked, robust to blur) written to the database
as keypoints and matches, which replaces SIFT extraction + matching (most of COLMAP's run time on
short clips) and keeps correspondences where descriptors fail (blur, low texture).

Moving objects: their tracks disagree with the dominant epipolar geometry, so COLMAP's RANSAC drops
them from every pair's inlier matches, and its BA drops what is left by reprojection error.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Self

import numpy as np

from components.annotate.tracks import Tracks, drop_tracks

if TYPE_CHECKING:
    from components.annotate.poses import PoseEstimatorConfig

__all__ = ["MapResult", "SplitFocalCheck", "drop_outlier_points", "group_keyframe_step", "map_tracks", "pair_offsets",
           "seeded", "split_focal_check"]


def _pycolmap():
    try:
        import pycolmap
    except ImportError as e:  # optional heavy dependency: fail loudly with the fix
        raise ImportError("scale-free poses without intrinsics need pycolmap: pip install '.[annotate]'") from e
    return pycolmap


def seeded(options, seed: int, _depth: int = 0):
    """``options`` (any pycolmap options object) with every nested ``random_seed`` set to ``seed``; returned.

    pycolmap 4 gives each options struct (mapper, triangulator, RANSAC, rotation averaging, ...) its own
    generator, seeded from the clock when left at -1, and ``pycolmap.set_random_seed`` does not reach them:
    the same tracks then mapped to a focal of 289, 506, 336 or 504 px on four runs of one hard clip.
    """
    if _depth > 4:
        return options
    for name in dir(options):
        if name.startswith("_"):
            continue
        try:
            value = getattr(options, name)
        except Exception:  # noqa: BLE001, S112 - some pybind properties raise when unset; they hold no seed
            continue
        if name == "random_seed":
            setattr(options, name, int(seed))
        elif type(value).__module__.startswith("pycolmap") and hasattr(value, "todict"):
            seeded(value, seed, _depth + 1)
    return options


@contextlib.contextmanager
def colmap_log_captured(path: Path):
    """Send what COLMAP's C++ code writes to stderr (file descriptor 2) into ``path`` while the block runs.

    pycolmap 4.2.1 logs every bundle adjustment and registration at INFO, and its ``logging.minloglevel`` /
    ``stderrthreshold`` settings do not silence it (measured: ~60 lines per focal profile, thousands per clip).
    On an exception the log's last 40 lines go to stderr with it, so a failure still shows COLMAP's words.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as fh:
            os.dup2(fh.fileno(), 2)
            try:
                yield
            except BaseException:
                os.dup2(saved, 2)
                tail = Path(path).read_text(errors="replace").splitlines()[-40:]
                sys.stderr.write("COLMAP's last log lines:\n" + "\n".join(tail) + "\n")
                raise
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@dataclass
class MapResult:
    """pycolmap's reconstruction of one clip segment.

    w2c_R (N,3,3), w2c_t (N,3) world-to-camera (NaN where unregistered); registered (N,) bool;
    K (3,3) pixel intrinsics (OpenCV centres) after BA; reprojection_rmse_px; num_points;
    stats: pair counts per two-view configuration, mapper name, focal before and after BA.
    """

    w2c_R: np.ndarray
    w2c_t: np.ndarray
    registered: np.ndarray
    K: np.ndarray
    reprojection_rmse_px: float
    num_points: int
    stats: dict = field(default_factory=dict)


def pair_offsets(n: int, max_offset: int) -> list[int]:
    """Frame offsets to match: 1, 2, 3, then roughly doubling up to max_offset (wide baselines for
    triangulation and focal, short ones for continuity); O(N log N) pairs, so run time stays linear-ish."""
    offs, k = [1, 2, 3], 4
    while k <= min(max_offset, n - 1):
        offs.append(k)
        k = round(k * 1.5)
    return [o for o in offs if o < n]


def map_tracks(tracks: Tracks, frames_idx: np.ndarray, height: int, width: int, focal_prior: float | None,
               cfg: PoseEstimatorConfig, fixed_K: np.ndarray | None = None, workdir: str | None = None) -> MapResult:
    """Reconstruct the frames frames_idx (M,) of one shot from their tracks.

    Keyframes (every ``cfg.colmap_keyframe_step``-th frame, and the last) are mapped by pycolmap; every
    other frame is then registered by pycolmap's absolute pose (LO-RANSAC + refinement) against the
    mapped points its tracks see, so mapping cost follows the keyframe count.
    focal_prior: initial focal in pixels (None: COLMAP's default 1.2 x max(H, W)); the principal point
    starts at the image centre and is refined only when ``cfg.refine_principal_point``. fixed_K (3,3),
    OpenCV centres: known intrinsics, held fixed. Returns a `MapResult` over the M frames, in frames_idx order.
    """
    pc = _pycolmap()
    fidx = np.asarray(frames_idx)
    step = max(1, cfg.colmap_keyframe_step)
    kf = np.unique(np.r_[np.arange(0, len(fidx), step), len(fidx) - 1])
    with tempfile.TemporaryDirectory(prefix="annotate-colmap-", dir=workdir) as td, \
            colmap_log_captured(Path(td) / "colmap.log"):
        res, rec = _map(pc, Path(td), tracks, fidx[kf], height, width, focal_prior, cfg, fixed_K)
        R = np.full((len(fidx), 3, 3), np.nan)
        t = np.full((len(fidx), 3), np.nan)
        reg = np.zeros(len(fidx), bool)
        R[kf], t[kf], reg[kf] = res.w2c_R, res.w2c_t, res.registered
        res.stats["keyframes"] = len(kf)
        res.stats["keyframes_registered"] = int(res.registered.sum())
        if rec is not None:
            inliers = _register_rest(pc, rec, tracks, fidx, kf, res.K, R, t, reg, cfg)
            if cfg.colmap_joint_ba and inliers:
                refine = fixed_K is None and cfg.colmap_joint_ba_refine_focal
                rec = _joint_bundle_adjustment(pc, rec, tracks, fidx, kf, R, t, reg, inliers, cfg, refine_focal=refine)
                fx, fy, cx, cy = _focal_pp(rec.cameras[next(iter(rec.cameras))])
                res.stats.update(focal_keyframe_map_px=float(res.K[0, 0]), joint_ba_frames=int(reg.sum()),
                                 median_depth=_median_depth(rec))
                res.K = _K(fx, cx - 0.5, cy - 0.5, fy)
                res.reprojection_rmse_px = float(rec.compute_mean_reprojection_error())
    res.w2c_R, res.w2c_t, res.registered = R, t, reg
    return res


def split_focal_check(tracks: Tracks, frames_idx: np.ndarray, height: int, width: int, focal_px: float,
                      cfg: PoseEstimatorConfig) -> dict:
    """Does the focal survive re-mapping from disjoint subsets of the tracks? A test of the model, not the noise.

    The tracks are split at random into ``cfg.focal_split_groups`` disjoint groups, ``cfg.focal_split_repeats``
    times over, and each group is mapped on its own by `map_tracks` (same mapper, a coarser focal profile, keyframes
    `group_keyframe_step` apart: a group names its basin, the split's spread is the sigma). A group
    holds 1/G of the evidence, so the sample variance of a split's log focals / G estimates the variance of the
    all-track focal without assuming independent residuals; the splits' variances are averaged. Measured on
    the bench's clean turn (320x192, 50 deg HFOV): the all-track map sat at +5.4 % with a profile sigma of
    0.05 % (its cost at the true focal 20 px^2 higher, the same basin from every start, SIFT-based pycolmap
    +5.5 %) while random halves mapped to e.g. +4.7 / +13.3 %, +5.6 / +18.4 %, each with a sharp profile: a
    forward-moving, yawing camera trades the focal against scene depth, so track errors far below the noise
    level pick the basin (the same errors shuffled between tracks: -0.5 %). At 60 deg one split in four agreed
    (+7.9 / +7.3 %), hence the repeats. Halves of textured orbit / mixed clips agreed to 0.1-3 %.
    The groups also measure the estimator's bias (Quenouille's jackknife: a bias b/n doubles on half the data,
    so mean(log f_group) - log focal_px estimates it for focal_px, the all-track focal); sigma is
    sqrt(variance + bias^2). At 60 deg the turn's halves all sat above its +7.0 % (+8.3 to +14.1 %), a bias of
    +4.5 % that the spread alone (1.4 %) did not show; on orbit / mixed / walk-forward it measured 0.1-1.2 %.
    Thin shots pay for it: a 192x120, 30-frame clip's halves mapped to -0.1 % and +3.9 % in one run, +42 %
    (its own profile spanning 130-430 px) in another (COLMAP's threads are not repeatable), which flags a
    focal the full map had within 2 %: a conservative error, never a confident one.
    The R x G maps are independent: ``cfg.focal_split_workers`` processes map them side by side (results are
    the same for any worker count; each map reseeds pycolmap).
    Returns focal_split_px (R, G) (NaN where a group failed to map), focal_split_bias_rel, focal_split_sigma_rel
    (inf when a group failed: part of the evidence not mappable is not evidence enough), focal_split_groups
    (per-group map stats and seconds; measured on the clean walk before the coarse group profile: 4 maps of 1.4-1.7 s, 6.3 s one after another, 4.8 s
    in 2 workers: each worker process re-imports the caller's main module first, about 1 s).
    """
    with SplitFocalCheck(tracks, frames_idx, height, width, cfg) as check:
        return check.result(focal_px)


class SplitFocalCheck:
    """`split_focal_check` in two halves, so its group maps can run while the all-track map is being made.

    The R x G group maps do not depend on the all-track map (only the bias term at the end reads its focal).
    With ``cfg.focal_split_workers`` = W > 1, W - 1 worker processes start mapping groups on construction, and
    the caller maps all tracks in its own process meanwhile: on 2 cores the all-track map (one COLMAP thread)
    left the second core idle, and the groups waited for it. ``result(focal_px)`` then maps groups in the
    caller's process too until none is left (each process claims the next unmapped group from a shared
    counter), and collects the rest. ``close()`` (or leaving the ``with`` block) ends the workers, finished or
    not: a shot whose all-track focal fails its profile never needs its groups.
    Results are the same for any W: every partition is drawn on construction, in order, and each map reseeds
    pycolmap's generators itself.
    """

    def __init__(self, tracks: Tracks, frames_idx: np.ndarray, height: int, width: int, cfg: PoseEstimatorConfig):
        self.cfg = cfg
        g_count = cfg.focal_split_groups
        fidx = np.asarray(frames_idx)
        rng = np.random.default_rng(cfg.random_seed)  # the partitions are part of the result: repeatable
        labels = [rng.permutation(tracks.num_tracks) % g_count for _ in range(cfg.focal_split_repeats)]
        self._jobs = [(drop_tracks(tracks, label != g), fidx, height, width, cfg)
                      for label in labels for g in range(g_count)]
        self._procs: list = []
        self._next, self._results, self._job_queue = None, None, None
        workers = min(cfg.focal_split_workers, len(self._jobs)) - 1  # the caller is one of the mappers
        if workers > 0:
            # forkserver, as in the batch step: forking a process whose OpenMP / OpenCV threads already ran can hang.
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload([__name__, "pycolmap"])  # workers fork with pycolmap loaded (~0.3 s each)
            self._next, self._results = ctx.Value("i", 0), ctx.SimpleQueue()
            # The jobs go by a queue, not as Process arguments: those are written to the forkserver's pipe,
            # which a child reads only after importing the caller's main module (measured: start() blocked
            # 1.9 s on 165 kB of tracks); a Queue's feeder thread writes them while the caller goes on.
            # Held on self until close(): a child rebuilds the queue's and the counter's semaphores by name
            # when it starts, and they are unlinked when the caller's objects are collected (a local queue
            # here: the worker died on FileNotFoundError and result() waited for it).
            self._job_queue = ctx.Queue()
            self._job_queue.cancel_join_thread()  # a worker killed before reading must not hold up the caller's exit
            self._procs = [ctx.Process(target=_group_worker, args=(self._job_queue, self._next, self._results),
                                       daemon=True) for _ in range(workers)]
            for proc in self._procs:
                proc.start()
                self._job_queue.put(self._jobs)

    def result(self, focal_px: float) -> dict:
        """The check's figures for the all-track focal ``focal_px`` (see `split_focal_check`); closes the workers."""
        cfg, g_count = self.cfg, self.cfg.focal_split_groups
        try:
            if self._procs:
                mapped = _claim_and_map(self._jobs, self._next)
                for got in self._worker_results():  # every worker sends its groups once the counter has run out
                    if isinstance(got, BaseException):
                        raise RuntimeError("a focal split-check worker failed") from got  # noqa: TRY004
                    mapped.update(got)
                outs = [mapped[k] for k in range(len(self._jobs))]
            else:
                outs = [_map_group(j) for j in self._jobs]
        finally:
            self.close()
        focals, groups, var = [], [], []
        for r in range(cfg.focal_split_repeats):
            split = [o["focal_px"] for o in outs[r * g_count:(r + 1) * g_count]]
            groups.extend({k: v for k, v in o.items() if k != "focal_px"} for o in outs[r * g_count:(r + 1) * g_count])
            lf = np.log(np.asarray(split))
            var.append(float(np.var(lf, ddof=1) / g_count) if np.isfinite(lf).all() else float("inf"))
            focals.append(split)
        bias = float(np.mean(np.log(np.asarray(focals))) - np.log(focal_px))  # NaN when a group failed (sigma inf)
        sigma = float(np.sqrt(np.mean(var) + bias**2)) if np.isfinite(np.mean(var)) else float("inf")
        return {"focal_split_px": focals, "focal_split_bias_rel": bias, "focal_split_sigma_rel": sigma,
                "focal_split_groups": groups}

    def _worker_results(self) -> list:
        """One message per worker: its {job index: group result}, or the exception it raised. A worker that
        exits without one (killed, or dead before it could start) is an error, not a wait without end."""
        got: list = []
        while len(got) < len(self._procs):
            if not self._results.empty():
                got.append(self._results.get())
            elif not any(p.is_alive() for p in self._procs) and self._results.empty():
                codes = [p.exitcode for p in self._procs]
                raise RuntimeError(f"focal split-check workers exited (codes {codes}) with {len(self._procs) - len(got)} "
                                   "result(s) missing")
            else:
                time.sleep(0.01)
        return got

    def close(self) -> None:
        """End the worker processes (idempotent); maps still running are abandoned."""
        for proc in self._procs:
            if proc.is_alive():
                proc.kill()  # SIGKILL: pycolmap (glog) answers SIGTERM with a stack trace on stderr
            proc.join()
        self._procs = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _claim_and_map(jobs: list[tuple], next_job) -> dict[int, dict]:
    """Map groups, each claimed from the shared counter ``next_job``, until none is left; {job index: result}."""
    out = {}
    while True:
        with next_job.get_lock():
            k = next_job.value
            next_job.value = k + 1
        if k >= len(jobs):
            return out
        out[k] = _map_group(jobs[k])


def _group_worker(jobs, next_job, results) -> None:
    """A `SplitFocalCheck` worker process: the job list from the queue ``jobs``, then its share of the groups
    (or its exception) onto ``results``."""
    try:
        results.put(_claim_and_map(jobs.get(), next_job))
    except BaseException as e:  # noqa: BLE001 - sent to the caller, which raises it
        results.put(e)


def group_keyframe_step(num_frames: int, cfg: PoseEstimatorConfig) -> int:
    """Keyframe step of a split-check group map over a shot of ``num_frames``: ``cfg.focal_split_keyframe_step``
    (0: the shot's ``colmap_keyframe_step``), capped so at least ``cfg.focal_split_min_keyframes`` keyframes are
    mapped, and never finer than the shot's own step."""
    step = cfg.focal_split_keyframe_step or cfg.colmap_keyframe_step
    return max(cfg.colmap_keyframe_step, min(step, num_frames // cfg.focal_split_min_keyframes))


def _map_group(job: tuple) -> dict:
    """One track group of `split_focal_check`: its self-calibrated focal (NaN when it did not map) and map stats.

    The group is mapped at `group_keyframe_step` by the shot's mapper; when that map fails (too few frames
    registered, or a focal its profile does not pin down) the global mapper tries once more before the group
    counts as failed. Measured on the bench's clean mixed clip at 50 deg: a group's incremental map registered
    29/48 frames with an unpinned focal, which made the split sigma inf and sent a focal 1.2 % off to the -19 %
    default FOV; the global map of the same group pinned +1.7 % in 0.7 s. Mapping it again at the shot's finer
    keyframe step also worked, in 2.5 s, and on the hard clips (where every group fails) doubled the check's
    cost without saving a group, so it is not done.
    """
    part, fidx, height, width, cfg = job
    t0 = time.perf_counter()
    need = max(3, cfg.min_registered_fraction * len(fidx))
    # A group is mapped for its focal only: a joint BA that holds the focal cannot change it.
    g_cfg = replace(cfg, focal_profile_step=cfg.focal_split_profile_step,  # a basin, not a sigma (see the config)
                    colmap_keyframe_step=group_keyframe_step(len(fidx), cfg),
                    colmap_joint_ba=cfg.colmap_joint_ba and cfg.colmap_joint_ba_refine_focal)
    mp = map_tracks(part, fidx, height, width, None, g_cfg)
    ok = _group_ok(mp, need)
    if not ok and cfg.colmap_mapper == "incremental":
        # As for the whole shot (scale_free_poses): fragments of a slow shot are held together by the
        # global mapper (measured: a 192x120 half registered 6/30 frames incremental, 30/30 global).
        mp = map_tracks(part, fidx, height, width, None, replace(g_cfg, colmap_mapper="global"))
        ok = _group_ok(mp, need)
    prof = [f for f, _ in mp.stats.get("focal_profile", [])]
    return {"focal_px": float(mp.K[0, 0]) if ok else float("nan"), "registered": int(mp.registered.sum()),
            "focal_sigma_rel": mp.stats.get("focal_sigma_rel"), "focal_rivals_px": mp.stats.get("focal_rivals_px"),
            "mapper": mp.stats.get("mapper"), "keyframes": mp.stats.get("keyframes"),
            "profile_bundle_adjustments": len(prof),
            "profile_step_rel": float(np.exp(np.median(np.diff(np.log(prof))))) - 1.0 if len(prof) > 1 else None,
            "seconds": time.perf_counter() - t0}


def _group_ok(mp: MapResult, need: float) -> bool:
    """A group map counts when it registered ``need`` frames and its focal profile pins the focal down."""
    return bool(mp.registered.sum() >= need and np.isfinite(mp.stats.get("focal_sigma_rel", np.inf)))


def _register_rest(pc, rec, tracks: Tracks, fidx, kf, K, R, t, reg, cfg) -> dict[int, np.ndarray]:
    """Absolute pose of each non-keyframe against the map's points (track id -> 3D point).

    Fills R, t, reg in place; returns {frame position j: indices into frame j's observations that are
    PnP inliers}, for `_joint_bundle_adjustment`.

    A frame is posed only beside a registered keyframe (one of the two that bracket it), and only when its
    pose turns from that keyframe's by at most ``cfg.pnp_max_turn_deg_per_frame`` per frame between them:
    where the map failed, PnP on the few points in view fits garbage (measured on the bench's hard turn:
    frames whose bracketing keyframes had failed came out 53 and 83 deg off their neighbours).
    """
    xyz: dict[int, np.ndarray] = {}
    for img in rec.images.values():
        k = int(Path(img.name).stem)
        ids = tracks.obs[fidx[kf[k]]][0]
        for i, p2 in enumerate(img.points2D):
            if p2.has_point3D():
                xyz[int(ids[i])] = rec.points3D[p2.point3D_id].xyz
    cam = pc.Camera(model="PINHOLE", width=int(2 * K[0, 2] + 1), height=int(2 * K[1, 2] + 1),
                    params=[K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5])
    est = seeded(pc.AbsolutePoseEstimationOptions(), cfg.random_seed)
    est.ransac.max_error = 2 * cfg.colmap_ransac_px
    is_kf = np.zeros(len(fidx), bool)
    is_kf[kf] = True
    kf_reg = kf[reg[kf]]
    inliers: dict[int, np.ndarray] = {}
    for j in np.flatnonzero(~is_kf):
        pos = np.searchsorted(kf, j)  # kf[pos - 1] < j < kf[pos]
        near = [k for k in (kf[pos - 1], kf[pos] if pos < len(kf) else None) if k is not None and k in kf_reg]
        if not near:
            continue
        ids, pts = tracks.obs[fidx[j]]
        sel = [i for i, tid in enumerate(ids) if int(tid) in xyz]
        if len(sel) < cfg.min_pnp_inliers:
            continue
        X = np.array([xyz[int(ids[i])] for i in sel])
        out = pc.estimate_and_refine_absolute_pose(pts[sel].astype(np.float64) + 0.5, X, cam, est)
        if out is None or out["num_inliers"] < cfg.min_pnp_inliers:
            continue
        M = out["cam_from_world"].matrix()
        k = min(near, key=lambda k: abs(k - j))
        cos = (np.trace(M[:, :3] @ R[k].T) - 1.0) / 2.0
        if np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))) > cfg.pnp_max_turn_deg_per_frame * abs(int(k) - int(j)):
            continue
        R[j], t[j], reg[j] = M[:, :3], M[:, 3], True
        inliers[int(j)] = np.asarray(sel)[np.asarray(out["inlier_mask"], bool)]
    return inliers


def _joint_bundle_adjustment(pc, rec, tracks: Tracks, fidx, kf, R, t, reg, inliers: dict[int, np.ndarray],
                             cfg: PoseEstimatorConfig, refine_focal: bool):
    """One bundle adjustment of the keyframe map together with the PnP-registered frames; the adjusted copy.

    The keyframe map's points are seen by every frame between its keyframes too; PnP posed those frames against
    the points but their observations never refined them. Added here (only their PnP inliers, so a track PnP
    rejected cannot pull the map), they triple the evidence on the structure. A Cauchy loss of
    ``cfg.colmap_joint_ba_loss_px`` keeps a track that drifted after PnP from pulling the map. The focal is held at
    the profile's estimate (``refine_focal`` False), so its sigma and the trust decisions stay the ones measured:
    refined here it moved by up to 2 % (walk -2.06 -> +0.01 %, but a rendered orbit +0.2 -> +2.1 %, and the turn's
    split sigma narrowed below its error). Measured on the bench's clean clips at 50 deg (`bench/annotate.py
    --mode real-footage`), before -> after: ATE Sim(3) walk 5.6 -> 5.4 mm, orbit 2.1 -> 1.5, strafe 4.9 -> 4.0,
    turn 19.6 -> 18.7; rotation error turn 0.131 -> 0.125 deg. It costs one BA, 0.2-0.4 s at 48 frames; at 480
    frames it cost 7.7 s and the walk's ATE rose 17.3 -> 20.3 mm. Maps with given intrinsics are adjusted the same
    way; scale_free_poses turns it off for the default-FOV re-map (a focal known to be wrong).
    R, t (M,3,3)/(M,3) are updated in place for every registered frame.
    """
    out = pc.Reconstruction(rec)
    cam_id = next(iter(out.cameras))
    pid_of: dict[int, int] = {}
    kf_image: dict[int, int] = {}
    for img in out.images.values():
        k = int(Path(img.name).stem)
        kf_image[int(kf[k])] = img.image_id
        ids = tracks.obs[fidx[kf[k]]][0]
        for i, p2 in enumerate(img.points2D):
            if p2.has_point3D():
                pid_of[int(ids[i])] = p2.point3D_id
    next_id = max(out.images) + 1
    added: dict[int, int] = {}
    for j, sel in inliers.items():
        ids, pts = tracks.obs[fidx[j]]
        img = pc.Image(name=f"rest{j:06d}.png", keypoints=pts.astype(np.float64) + 0.5, camera_id=cam_id,
                       image_id=next_id)
        out.add_image_with_trivial_frame(img, pc.Rigid3d(pc.Rotation3d(R[j]), t[j]))
        for i in sel:
            if int(ids[i]) in pid_of:
                out.add_observation(pid_of[int(ids[i])], pc.TrackElement(next_id, int(i)))
        added[j] = next_id
        next_id += 1
    # Capped: at 480 frames (160 keyframes + 320 PnP frames) one iteration took 0.8 s, and 100 of them 27 s; 10
    # gave the same 48-frame bench rows as 100.
    opts = _ba_options(pc, cfg, refine_focal=refine_focal, iters=cfg.colmap_joint_ba_iters)
    if cfg.colmap_joint_ba_loss_px > 0:
        opts.ceres.loss_function_type = pc.LossFunctionType.CAUCHY
        opts.ceres.loss_function_scale = cfg.colmap_joint_ba_loss_px
    pc.bundle_adjustment(out, opts)
    for j, iid in {**kf_image, **added}.items():
        M = out.images[iid].cam_from_world().matrix()
        R[j], t[j] = M[:, :3], M[:, 3]
    return out


def _map(pc, td: Path, tracks: Tracks, fidx: np.ndarray, h: int, w: int, focal_prior, cfg, fixed_K):
    m = len(fidx)
    pc.set_random_seed(cfg.random_seed)  # process-wide generator, like OpenCV's (see estimate_poses)
    db_path = td / "database.db"
    db = pc.Database.open(str(db_path))
    f0 = float(focal_prior) if focal_prior else 1.2 * max(h, w)
    # COLMAP's pixel centres are at +0.5; our tracks use OpenCV's integer centres: shift on the way in.
    if fixed_K is not None:
        cam = pc.Camera(model="PINHOLE", width=w, height=h, params=[fixed_K[0, 0], fixed_K[1, 1],
                                                                    fixed_K[0, 2] + 0.5, fixed_K[1, 2] + 0.5])
        cam.has_prior_focal_length = True
    else:
        cam = pc.Camera(model=cfg.colmap_camera_model, width=w, height=h,
                        params=_camera_params(cfg.colmap_camera_model, f0, w / 2.0, h / 2.0))
        cam.has_prior_focal_length = focal_prior is not None
    refine = fixed_K is None
    cam_id = db.write_camera(cam)
    image_ids = []
    for k, f in enumerate(fidx):
        _, pts = tracks.obs[f]
        rig_frame = pc.Image(name=f"{k:06d}.png", camera_id=cam_id)
        iid = db.write_image(rig_frame)
        image_ids.append(iid)
        db.write_keypoints(iid, (pts.astype(np.float64) + 0.5).astype(np.float32))
    _write_rigs_frames(pc, db, cam_id, image_ids)
    # Matches between frame pairs = tracks they share (index of the track in each frame's keypoint list).
    offsets = pair_offsets(m, cfg.colmap_max_pair_offset)
    pairs = []
    for a in range(m):
        ids_a = tracks.obs[fidx[a]][0]
        for o in offsets:
            b = a + o
            if b >= m:
                break
            ids_b = tracks.obs[fidx[b]][0]
            _, ia, ib = np.intersect1d(ids_a, ids_b, assume_unique=True, return_indices=True)
            if len(ia) < cfg.min_pnp_inliers:
                continue
            db.write_matches(image_ids[a], image_ids[b], np.c_[ia, ib].astype(np.uint32))
            pairs.append((a, b))
    db.close()
    pairs_file = td / "pairs.txt"
    pairs_file.write_text("".join(f"{k:06d}.png {j:06d}.png\n" for k, j in pairs))
    tvg = seeded(pc.TwoViewGeometryOptions(), cfg.random_seed)
    tvg.ransac.max_error = cfg.colmap_ransac_px
    tvg.detect_watermark = False  # static overlays are rare in camera footage, and the check costs a RANSAC
    t_v = time.perf_counter()
    pc.verify_matches(str(db_path), str(pairs_file), tvg)
    t_v = time.perf_counter() - t_v
    t_m = time.perf_counter()
    stats = {"pairs": len(pairs), "mapper": cfg.colmap_mapper, "focal_init_px": f0, "verify_s": t_v}
    images_dir = td / "images"
    images_dir.mkdir()
    if cfg.colmap_mapper == "global":
        calib = seeded(pc.ViewGraphCalibrationOptions(), cfg.random_seed)
        stats["view_graph_calibrated"] = bool(pc.calibrate_view_graph(str(db_path), calib))
        opts = seeded(pc.GlobalPipelineOptions(), cfg.random_seed)
        opts.num_threads = cfg.colmap_threads
        opts.mapper.bundle_adjustment.refine_focal_length = refine
        opts.mapper.bundle_adjustment.refine_principal_point = refine and cfg.refine_principal_point
        opts.mapper.bundle_adjustment.refine_extra_params = refine and cfg.colmap_camera_model == "SIMPLE_RADIAL"
        opts.mapper.global_positioning.use_gpu = False
        opts.mapper.bundle_adjustment.ceres.use_gpu = False
        recs = pc.global_mapping(str(db_path), str(images_dir), str(td / "sparse"), opts)
    else:
        opts = seeded(pc.IncrementalPipelineOptions(), cfg.random_seed)
        opts.num_threads = cfg.colmap_threads
        # Video baselines are small: COLMAP's 16 degree default start angle never comes on slow clips.
        opts.mapper.init_min_tri_angle = cfg.colmap_init_min_tri_angle_deg
        # KLT keyframes share a few hundred tracks; COLMAP's 100-inlier start (set for SIFT's thousands)
        # fails first and costs a relaxation round (~1 s) on every clip.
        opts.mapper.init_min_num_inliers = 50
        # COLMAP starts up to 50 models, each from up to 200 initial pairs, on what the last left unregistered.
        # A pure pan (which SfM sees before the rotation model wins) fails them all, each after growing and
        # bundle-adjusting: the pan's mapping cost grew ~N^2 (48 -> 480 frames: 6.7x the time per frame).
        opts.max_num_models = cfg.colmap_max_models
        opts.ba_refine_focal_length = refine
        opts.ba_refine_principal_point = refine and cfg.refine_principal_point
        opts.ba_refine_extra_params = refine and cfg.colmap_camera_model == "SIMPLE_RADIAL"
        opts.mapper.abs_pose_refine_focal_length = refine
        opts.mapper.abs_pose_refine_extra_params = refine and cfg.colmap_camera_model == "SIMPLE_RADIAL"
        recs = pc.incremental_mapping(str(db_path), str(images_dir), str(td / "sparse"), opts)
    stats["mapping_s"] = time.perf_counter() - t_m
    R = np.full((m, 3, 3), np.nan)
    t = np.full((m, 3), np.nan)
    reg = np.zeros(m, bool)
    if not recs:
        K0 = fixed_K if fixed_K is not None else _K(f0, w / 2 - 0.5, h / 2 - 0.5)
        return MapResult(R, t, reg, K0, float("nan"), 0, stats), None
    rec = max(recs.values(), key=lambda r: r.num_reg_images())
    for img in rec.images.values():
        if not img.has_pose:
            continue
        k = int(Path(img.name).stem)
        M = img.cam_from_world().matrix()
        R[k], t[k], reg[k] = M[:, :3], M[:, 3], True
    if refine:
        # The mapper's BA focal is a local optimum with a local (+-2 %) curvature: measured +20 % off with a
        # 0.25 % "sigma" on a clean turn, a lower cost 15 % away. Profile the whole plausible range instead.
        rec, prof = focal_profile(pc, rec, cfg)
        stats.update(prof)
        for img in rec.images.values():
            if img.has_pose:
                M = img.cam_from_world().matrix()
                k = int(Path(img.name).stem)
                R[k], t[k] = M[:, :3], M[:, 3]
    c = next(iter(rec.cameras.values()))
    fx, fy, cx, cy = _focal_pp(c)
    stats.update(focal_ba_px=fx, num_reconstructions=len(recs), median_depth=_median_depth(rec))
    if not refine:
        stats["focal_sigma_rel"] = 0.0
    return MapResult(R, t, reg, _K(fx, cx - 0.5, cy - 0.5, fy), float(rec.compute_mean_reprojection_error()),
                     int(rec.num_points3D()), stats), rec


def _median_depth(rec) -> float:
    """Median depth of the mapped points in the first registered keyframe (the scale-free unit)."""
    imgs = sorted((im for im in rec.images.values() if im.has_pose), key=lambda im: im.name)
    if not imgs:
        return float("nan")
    M = imgs[0].cam_from_world().matrix()
    z = [(M[:, :3] @ rec.points3D[p.point3D_id].xyz + M[:, 3])[2] for p in imgs[0].points2D if p.has_point3D()]
    return float(np.median(z)) if z else float("nan")


def _chi2(rec, sigma_px: float) -> float:
    """Sum of squared reprojection errors over all observations, in units of sigma_px (approx.: each
    point's mean error squared, times its track length)."""
    rec.update_point_3d_errors()
    return float(sum(p.error**2 * p.track.length() for p in rec.points3D.values()) / sigma_px**2)


def _ba_options(pc, cfg: PoseEstimatorConfig, refine_focal: bool, iters: int | None = None):
    """pycolmap BundleAdjustmentOptions for our own BAs (focal profile, joint BA): the focal refined or held,
    nothing else of the camera; Ceres stops at a relative cost change of ``cfg.colmap_ba_function_tolerance`` or
    after ``iters`` iterations (None: Ceres' default)."""
    opts = pc.BundleAdjustmentOptions()
    opts.refine_focal_length = refine_focal
    opts.refine_principal_point = False
    opts.refine_extra_params = False
    opts.print_summary = False
    s = opts.ceres.solver_options
    if iters is not None:
        s.max_num_iterations = iters
    # COLMAP's tolerance is 0: Ceres then runs every iteration it is allowed, long after the cost has stopped
    # moving (measured on a clean walk's 17-keyframe map: 84 ms per profile step, 30 ms at 1e-6 with the cost
    # within 1e-5 of it; a Delta chi2 of 1 is a relative change of 1/observations ~ 2e-4 there).
    s.function_tolerance = cfg.colmap_ba_function_tolerance
    s.num_threads = cfg.colmap_threads  # Ceres' default is every core, whatever colmap_threads says
    return opts


def _ba_fixed_focal(pc, rec, cam_id: int, f: float, cfg: PoseEstimatorConfig):
    """Copy of rec with the focal set to f, poses and points re-adjusted with f held; (copy, chi2 / sigma^2)."""
    r = pc.Reconstruction(rec)
    cam = r.cameras[cam_id]
    p = np.asarray(cam.params, float).copy()
    if cam.model.name == "PINHOLE":
        p[1] *= f / p[0]
    p[0] = f
    cam.params = p
    pc.bundle_adjustment(r, _ba_options(pc, cfg, refine_focal=False, iters=cfg.focal_profile_ba_iters))
    return r, _chi2(r, 1.0)


def drop_outlier_points(pc, rec, ratio: float) -> tuple[object, int]:
    """Copy of rec without the 3D points whose mean reprojection error exceeds ratio x the median; (copy, dropped).

    What a static rigid scene cannot explain but COLMAP's 4 px filter keeps: corners where two surfaces
    cross in the image (T-junctions, silhouettes) slide along the edge as the view changes, and their
    tracks are smooth, so RANSAC and the forward-backward check keep them. They bias the focal, the one
    parameter every track shares (measured on the bench's clean mixed clip at 50 deg HFOV: +3.0 % with
    them, +1.6 % without the 18 % of points beyond 2x the median error; ATE Sim(3) 3.5 -> 1.3 mm).
    ratio <= 0 keeps every point (rec itself is returned).
    """
    if ratio <= 0 or rec.num_points3D() == 0:
        return rec, 0
    out = pc.Reconstruction(rec)
    out.update_point_3d_errors()
    err = {i: p.error for i, p in out.points3D.items()}
    cut = ratio * float(np.median(list(err.values())))
    bad = [i for i, e in err.items() if e > cut]
    if out.num_points3D() - len(bad) < 10:
        return rec, 0  # too few would be left to profile: keep the map as it is
    for i in bad:
        out.delete_point3D(i)
    return out, len(bad)


def focal_profile(pc, rec, cfg: PoseEstimatorConfig) -> tuple[object, dict]:
    """Profile likelihood of the focal over a reconstruction: the focal's estimate and an honest sigma.

    Starting at the mapper's BA focal f0, walk outwards in log f (steps of ``cfg.focal_profile_step``,
    out to x/÷ ``cfg.focal_profile_span``), each step re-adjusting poses and points with f held fixed,
    starting from the previous step's solution (continuation: a far jump from f0 lands BA in a bad basin).
    The lowest-cost step, refined by one focal-free BA, is the estimate. Its sigma is the half width of the
    region where Delta chi2 <= 1 (noise level: the optimum's mean squared error); where that region reaches
    the end of the scan the focal is not pinned down and sigma is inf. Another local minimum of the profile
    within ``cfg.focal_profile_rival_chi2``, counted per 3D point rather than per observation (a KLT track's
    errors are correlated along it, so a track is one piece of evidence against a rival, not L), widens sigma
    to reach it: two basins the data cannot tell apart are one ambiguous focal, not a sharp one.
    Points beyond ``cfg.focal_profile_outlier_ratio`` x the median reprojection error are dropped first
    (`drop_outlier_points`): the focal is what every point agrees on, not what the ones sliding along an
    occlusion edge want.
    Returns (the refined reconstruction, stats: focal_sigma_rel, focal_profile [(f, delta_chi2)], ...).
    """
    cam_id = next(iter(rec.cameras))
    f0 = float(rec.cameras[cam_id].params[0])
    rec, n_dropped = drop_outlier_points(pc, rec, cfg.focal_profile_outlier_ratio)
    if rec.num_points3D() < 10:
        return rec, {"focal_sigma_rel": float("inf"), "focal_mapper_px": f0}
    n_obs = sum(p.track.length() for p in rec.points3D.values())
    n_pts = max(rec.num_points3D(), 1)
    base, c_base = _ba_fixed_focal(pc, rec, cam_id, f0, cfg)
    steps = int(np.ceil(np.log(cfg.focal_profile_span) / np.log(1 + cfg.focal_profile_step)))
    logf, costs, recs = [np.log(f0)], [c_base], [base]
    for sgn in (1, -1):
        r, rising = base, 0
        for k in range(1, steps + 1):
            f = f0 * (1 + cfg.focal_profile_step) ** (sgn * k)
            r, c = _ba_fixed_focal(pc, r, cam_id, f, cfg)
            if not np.isfinite(c):
                break
            logf.append(np.log(f))
            costs.append(c)
            recs.append(r)
            # Stop a side once it is far above the running optimum and still rising (saves most BA runs).
            c_min = min(costs)
            rising = rising + 1 if (c - c_min) / max(c_min, 1e-12) * n_pts > cfg.focal_profile_stop_chi2 and c >= costs[-2] else 0
            if rising >= 2:
                break
    order = np.argsort(logf)
    logf, costs = np.asarray(logf)[order], np.asarray(costs)[order]
    recs = [recs[i] for i in order]
    best = int(np.argmin(costs))
    # Focal-free BA from the profile's best step (COLMAP's own refinement; it moves at most a step).
    out = pc.Reconstruction(recs[best])
    pc.bundle_adjustment(out, _ba_options(pc, cfg, refine_focal=True))
    # Noise level from the profile's optimum (mean squared error per observation), per-point Delta chi2.
    c_min = costs[best]
    s2 = max(c_min / max(n_obs, 1), 1e-12)
    dchi = (costs - c_min) / s2
    dchi_pts = dchi * (n_pts / max(n_obs, 1))
    f_star = float(out.cameras[cam_id].params[0])
    inside = np.flatnonzero(dchi <= 1.0)
    # Other local minima of the profile nearly as good as the best: the data allow both focals, whatever
    # the curvature at the best one says (measured: a clean turn's second basin at +20 %, Delta chi2 11).
    loc = [i for i in range(1, len(costs) - 1) if costs[i] <= costs[i - 1] and costs[i] <= costs[i + 1]]
    rivals = [i for i in loc if i != best and dchi_pts[i] <= cfg.focal_profile_rival_chi2]
    if len(costs) < 3 or inside.min() == 0 or inside.max() == len(costs) - 1:
        sigma = float("inf")  # the Delta chi2 <= 1 region reaches the end of the scan: f not pinned down
    else:
        # Half width of the Delta chi2 = 1 region (interpolated at its edges), in log f = relative f.
        lo, hi = inside.min(), inside.max()
        x_lo = np.interp(1.0, [dchi[lo], dchi[lo - 1]], [logf[lo], logf[lo - 1]])
        x_hi = np.interp(1.0, [dchi[hi], dchi[hi + 1]], [logf[hi], logf[hi + 1]])
        sigma = float(0.5 * (x_hi - x_lo))
        # The final focal-free BA should stay in the profile's step; how far it moves is an error, too.
        sigma = max(sigma, abs(np.log(f_star) - logf[best]))
        if rivals:
            sigma = max(sigma, float(np.max(np.abs(logf[rivals] - np.log(f_star)))))
    stats = {"focal_sigma_rel": sigma, "focal_mapper_px": f0, "outlier_points_dropped": n_dropped, "focal_profile_best_px": float(np.exp(logf[best])),
             "focal_rivals_px": [float(np.exp(logf[i])) for i in rivals],
             "focal_profile": [(float(np.exp(x)), float(d)) for x, d in zip(logf, dchi_pts)]}
    return out, stats


def _write_rigs_frames(pc, db, cam_id: int, image_ids: list[int]) -> None:
    """COLMAP >= 3.12 reconstructs frames of rigs: one trivial rig (the camera) and one frame per image."""
    rig = pc.Rig()
    rig.add_ref_sensor(pc.sensor_t(pc.SensorType.CAMERA, cam_id))
    rig_id = db.write_rig(rig)
    for iid in image_ids:
        fr = pc.Frame()
        fr.rig_id = rig_id
        fr.add_data_id(pc.data_t(pc.sensor_t(pc.SensorType.CAMERA, cam_id), iid))
        db.write_frame(fr)


def _camera_params(model: str, f: float, cx: float, cy: float) -> list[float]:
    if model == "SIMPLE_PINHOLE":
        return [f, cx, cy]
    if model == "SIMPLE_RADIAL":
        return [f, cx, cy, 0.0]
    if model == "PINHOLE":
        return [f, f, cx, cy]
    raise ValueError(f"colmap_camera_model must be SIMPLE_PINHOLE, SIMPLE_RADIAL or PINHOLE, got {model!r}")


def _focal_pp(cam) -> tuple[float, float, float, float]:
    p = np.asarray(cam.params, float)
    if cam.model.name == "PINHOLE":
        return p[0], p[1], p[2], p[3]
    return p[0], p[0], p[1], p[2]


def _K(fx: float, cx: float, cy: float, fy: float | None = None) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fx if fy is None else fy, cy], [0.0, 0.0, 1.0]])
