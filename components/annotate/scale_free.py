"""Scale-free poses of a whole clip, self-calibrated when no intrinsics are given.

Per shot (shot cuts found by `tracks.track_clip` split the clip):
1. fit the rotation-only model (`calibration.fit_rotation_model`: focal by 1-D search, rotations from
   bearings); if it explains the shot (residual below ``rotation_max_residual_px``) the shot is posed
   as pure rotation: zero translation, the focal from the rotation fit;
2. otherwise pycolmap maps the shot's KLT tracks (`colmap_backend.map_tracks`) from COLMAP's default
   focal, refined in bundle adjustment and profiled (a near pan, residual below
   ``sfm_global_first_max_residual_px``, by the global mapper: the incremental one fails there slowly);
   the focal is trusted only when its profile sigma is small (``focal_max_sigma_rel``) and the spread of
   maps of disjoint track groups (`colmap_backend.split_focal_check`) is below ``focal_max_split_sigma_rel``
   (its confidence says how wide it is); an untrusted focal on a shot the rotation model still explains to
   noise level (``rotation_fallback_max_residual_px``, with a trusted focal of its own) makes the shot a rotation
   (``model_selection`` says why); else the shot is re-mapped with the default FOV held fixed and flagged
   ``default_fov`` (when that map registers fewer frames than the untrusted one, the untrusted map's poses are
   kept *with its focal*, ``focal_trusted=False`` and a near-zero focal confidence);
3. a frame that neither solved gets an interpolated pose, ``registered=False`` and a reason.

Scale convention (SANA-WM trains on metric poses, which a scale-free clip cannot give): translations are
in units of the median scene depth seen from the shot's first frame, and the result says
``metric=False``; the shards carry that flag so training can drop or down-weight these clips.
Each shot's poses are relative to its own first frame (a cut has no camera motion to measure).
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from components.annotate.calibration import fit_rotation_model
from components.annotate.colmap_backend import SplitFocalCheck, map_tracks
from components.annotate.geometry import default_intrinsics
from components.annotate.tracks import drop_tracks, inconsistent_tracks, track_clip

if TYPE_CHECKING:
    from components.annotate.poses import PoseEstimatorConfig

__all__ = ["ScaleFreeResult", "focal_confidence", "scale_free_poses"]


@dataclass
class ScaleFreeResult:
    """c2w (N,4,4) per shot relative to its first frame; K (N,3,3) OpenCV pixel centres; registered (N,);
    reasons (N,) "" where registered; shot_starts; per-shot dicts in shots (model, focal, sigma, ...)."""

    c2w: np.ndarray
    K: np.ndarray
    registered: np.ndarray
    reasons: list[str]
    shot_starts: list[int]
    shots: list[dict] = field(default_factory=list)
    reprojection_rmse_px: float = float("nan")


def focal_confidence(sigma_rel: float) -> float:
    """Confidence in [0,1] of a focal with relative standard deviation sigma_rel: 1 % sigma halves it."""
    return float(1.0 / (1.0 + (sigma_rel / 0.01) ** 2)) if np.isfinite(sigma_rel) else 0.0


def _fill(c2w: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Interpolate unregistered poses (slerp rotations, linear centres; held beyond the ends)."""
    idx = np.flatnonzero(reg)
    if len(idx) == 0 or reg.all():
        return c2w
    out = c2w.copy()
    n = len(c2w)
    t = np.clip(np.arange(n), idx[0], idx[-1]).astype(float)
    if len(idx) == 1:
        out[:] = c2w[idx[0]]
        return out
    out[:, :3, :3] = Slerp(idx.astype(float), Rotation.from_matrix(c2w[idx, :3, :3]))(t).as_matrix()
    for k in range(3):
        out[:, k, 3] = np.interp(t, idx, c2w[idx, k, 3])
    return out


def _focal_trusted(focal_px: float, sigma_rel: float, max_sigma_rel: float, width: int) -> bool:
    """The trust test every self-calibrated focal passes (SfM's and the rotation model's): a relative sigma
    at most ``max_sigma_rel`` and a horizontal field of view in [10, 170] degrees."""
    if not (np.isfinite(sigma_rel) and sigma_rel <= max_sigma_rel and focal_px > 0):
        return False
    return 10.0 <= float(np.degrees(2 * np.arctan(0.5 * width / focal_px))) <= 170.0


def _rotation_trusted(rot, p90: float, width: int, cfg: PoseEstimatorConfig) -> bool:
    """Does the rotation model explain a shot on its own: tracks to ``cfg.rotation_fallback_max_residual_px``
    (90th percentile of the per-pair medians) and a focal that passes `_focal_trusted`?"""
    return p90 < cfg.rotation_fallback_max_residual_px and _focal_trusted(float(rot.K[0, 0]), rot.focal_sigma_rel,
                                                                           cfg.focal_max_sigma_rel, width)


def scale_free_poses(gray: np.ndarray, K_given: np.ndarray | None, cfg: PoseEstimatorConfig) -> ScaleFreeResult:
    """gray uint8 (N,H,W); K_given None | (N,3,3) in OpenCV pixel centres (its first frame's K is used)."""
    n, h, w = gray.shape
    tracks = track_clip(gray, cfg)
    starts = [0, *tracks.cuts]
    bounds = [*starts, n]
    c2w = np.tile(np.eye(4), (n, 1, 1))
    K = np.zeros((n, 3, 3))
    reg = np.zeros(n, bool)
    reasons = [""] * n
    shots, rmses = [], []
    # Group maps started early (SplitFocalCheck) end with the block, even when a shot raises.
    with contextlib.ExitStack() as stack:
        for a, b in itertools.pairwise(bounds):
            idx = np.arange(a, b)
            Kg = None if K_given is None else K_given[a]
            K_def = default_intrinsics(h, w, cfg.default_hfov_deg)
            K_def[:2, 2] -= 0.5
            if len(idx) < 2:
                K[idx] = K_def if Kg is None else Kg
                reasons[a] = "shot of a single frame: no motion to measure"
                shots.append({"start": a, "frames": 1, "model": "none", "focal_source": "default_fov", "focal_sigma_rel": None})
                continue
            info = {"start": a, "frames": len(idx)}
            shot_tracks = tracks
            if cfg.reject_dynamic_tracks:
                # Moving objects first: their tracks would otherwise be calibrated and mapped as parallax.
                rejected, info["dynamic_tracks"] = inconsistent_tracks(tracks, idx, h, w, cfg)
                if rejected.any():
                    shot_tracks = drop_tracks(tracks, rejected)
            rot = fit_rotation_model(shot_tracks, idx, h, w, Kg, cfg)
            p90 = float(np.percentile(rot.median_residual_px, 90)) if len(rot.median_residual_px) else float("inf")
            info["rotation_residual_p90_px"] = p90
            model = "rotation" if p90 < cfg.rotation_max_residual_px else "sfm"
            mp = None
            early = None
            if model == "sfm" and Kg is None and cfg.focal_split_groups and cfg.focal_split_workers > 1:
                # The split test's group maps do not need the all-track map: they start in the workers now and
                # run beside it (measured on the bench's clean clips: see SplitFocalCheck). Wasted where the
                # all-track focal then fails its profile; close() below ends them.
                early = stack.enter_context(SplitFocalCheck(shot_tracks, idx, h, w, cfg))
            if model == "sfm":
                # COLMAP starts from its own default (1.2 max(H,W)): the rotation fit's focal is biased under
                # translation (measured +365 % focal error on a strafe when used as the start).
                f_init = None
                first_cfg = cfg
                if p90 < cfg.sfm_global_first_max_residual_px and cfg.colmap_mapper == "incremental":
                    # Nearly a pan: the incremental mapper would fail on it slowly, and the global one follow.
                    first_cfg = replace(cfg, colmap_mapper="global")
                    info["sfm_global_first"] = (f"rotation p90 residual {p90:.2f} px < "
                                                f"{cfg.sfm_global_first_max_residual_px:g}: global mapper first")
                mp = map_tracks(shot_tracks, idx, h, w, f_init, first_cfg, fixed_K=Kg)
                need = max(3, cfg.min_registered_fraction * len(idx))
                if mp.registered.sum() < need and first_cfg.colmap_mapper == "incremental":
                    # Incremental SfM splits slow, low-parallax shots into fragments; the global mapper (rotation
                    # averaging, then positions) holds them together. Measured: 5/11 -> 11/11 keyframes.
                    mp = map_tracks(shot_tracks, idx, h, w, f_init, replace(cfg, colmap_mapper="global"), fixed_K=Kg)
                info["sfm"] = {k: v for k, v in mp.stats.items()}
                rot_med = float(np.median(rot.median_residual_px))
                if (p90 < cfg.rotation_fallback_max_residual_px
                        and rot_med <= cfg.rotation_vs_sfm_ratio * mp.reprojection_rmse_px):
                    # Model selection: SfM "succeeds" on pure rotation too (fitting noise as baseline); when the
                    # 3-DoF-per-frame rotation model explains the tracks about as well as the full reconstruction,
                    # the simpler model is the right one (no parallax = no observable translation).
                    model = "rotation"
                if mp.registered.sum() < max(3, cfg.min_registered_fraction * len(idx)):
                    # SfM found no usable baseline. Where the rotation model still explains the tracks to within
                    # noise-level residuals, that IS the answer (no parallax = translation not observable);
                    # otherwise keep the rotations but flag every frame.
                    model = "rotation" if p90 < cfg.rotation_fallback_max_residual_px else "rotation_fallback"
            focal_trusted = True
            untrusted_poses = False  # the poses come from the map made with the untrusted focal
            if model == "sfm" and Kg is None:
                f_sfm, sig_sfm = float(mp.K[0, 0]), float(mp.stats.get("focal_sigma_rel", float("inf")))
                fov = float(np.degrees(2 * np.arctan(0.5 * w / f_sfm))) if f_sfm > 0 else 0.0
                if cfg.focal_split_groups and _focal_trusted(f_sfm, sig_sfm, cfg.focal_max_sigma_rel, w):
                    # The profile's sigma assumes independent residuals; a sharp profile can sit in the wrong one of
                    # two basins, or be biased (see split_focal_check). Re-map disjoint track groups and trust the
                    # larger sigma.
                    chk = (early if early is not None else SplitFocalCheck(shot_tracks, idx, h, w, cfg)).result(f_sfm)
                    info["focal_checks"] = {"profile_sigma_rel": sig_sfm, **chk}
                    sig_sfm = max(sig_sfm, chk["focal_split_sigma_rel"])
                    mp.stats["focal_sigma_rel"] = sig_sfm
                # A sigma that survived the split test measures the model, not the noise alone, so it may be wider
                # and still beat the default FOV (measured: a clean strafe's halves 322-377 px around a -1.9 %
                # estimate, sigma 7 %, where the default sat 19 % off); one that only the profile gave may not.
                max_sig = cfg.focal_max_split_sigma_rel if "focal_checks" in info else cfg.focal_max_sigma_rel
                sfm_focal_ok = _focal_trusted(f_sfm, sig_sfm, max_sig, w)
                if not sfm_focal_ok and _rotation_trusted(rot, p90, w, cfg):
                    # The same rule as for a shot SfM could not register: no trusted focal from the map, and the
                    # rotation model explains the tracks to noise level with one of its own, so the shot is a
                    # rotation. Measured on the bench's hard pure yaw: SfM had fitted the noise as baseline
                    # (rotation p90 1.3 px, a lower RMSE), no track group of the split test could be mapped, and
                    # the default-FOV re-map registered 26/48 frames at -19 % focal.
                    info["model_selection"] = (f"SfM focal {f_sfm:.1f} px (relative sigma {sig_sfm:.3g}) not trusted, and "
                                               f"the rotation model explains the tracks (p90 residual {p90:.2f} px < "
                                               f"{cfg.rotation_fallback_max_residual_px:g}) with a trusted focal "
                                               f"{float(rot.K[0, 0]):.1f} px: posed as rotation")
                    info["sfm_untrusted"] = {**mp.stats, "focal_px": f_sfm}
                    model = "rotation"
                elif not sfm_focal_ok:
                    # A focal the data does not pin down (hard footage: measured +190 % to +7000 %) would be
                    # reported as if measured and bend every pose with it. Say so, and pose the shot with the
                    # flagged default FOV held fixed instead: a known ~15 % error beats an unbounded one.
                    # No joint BA of the PnP frames here: tied to a focal known to be ~15-20 % off, more frames fit
                    # the poses tighter to the wrong camera (measured on the bench's hard clips, default FOV held:
                    # ATE 86.5 -> 90.6 mm walk, 21.2 -> 26.6 orbit, 40.0 -> 44.7 strafe; turn RotErr 1.53 -> 1.69 deg).
                    mp_d = map_tracks(shot_tracks, idx, h, w, None, replace(cfg, colmap_joint_ba=False), fixed_K=K_def)
                    split = info.get("focal_checks", {}).get("focal_split_px")
                    split = (f", track groups mapped to {'; '.join(', '.join(f'{x:.1f}' for x in sp) for sp in split)} px"
                             if split else "")
                    info["focal_fallback"] = (f"SfM focal {f_sfm:.1f} px (relative sigma {sig_sfm:.3g}, HFOV {fov:.1f} "
                                              f"deg{split}) not trusted: re-mapped with the default "
                                              f"{cfg.default_hfov_deg:g} deg HFOV held fixed")
                    info["sfm_untrusted"] = {**mp.stats, "focal_px": f_sfm}
                    n_d = mp_d.registered.sum()
                    # Untrusted by the split test alone (a plausible focal whose profile passed), the SfM map keeps
                    # the poses when the default-FOV map registers fewer frames (measured: a thin 192x120 clip with a
                    # moving block, 30/30 -> 18/30); a focal that failed the profile keeps the old rule.
                    # Only a real loss counts: a hard mixed clip's default-FOV map registered 35 frames against the
                    # untrusted map's 36, whose focal was 63 % off (rotation error 16.2 deg; the default-FOV map's 6.0).
                    if n_d >= max(3, cfg.min_registered_fraction * len(idx)) and not (
                            "focal_checks" in info and n_d < cfg.focal_fallback_min_kept * mp.registered.sum()):
                        mp = mp_d
                    else:
                        info["focal_fallback"] += (f"; that map registered {n_d} frames, the untrusted one "
                                                   f"{mp.registered.sum()}: poses and focal are from the untrusted map")
                        untrusted_poses = True
                    focal_trusted = False
            if early is not None:
                early.close()  # not needed (or already collected): free the cores for the next shot
            if model != "sfm" and Kg is None and np.isfinite(rot.focal_sigma_rel):
                f_rot, sig_rot = float(rot.K[0, 0]), rot.focal_sigma_rel
                fov = float(np.degrees(2 * np.arctan(0.5 * w / f_rot)))
                if not _focal_trusted(f_rot, sig_rot, cfg.focal_max_sigma_rel, w):
                    # The same trust test as SfM's: a hard turn's rotation fit gave +433 % (sigma 8 %) and posed
                    # the clip with it. Re-fit the rotations with the flagged default FOV instead.
                    info["focal_fallback"] = (f"rotation-model focal {f_rot:.1f} px (relative sigma {sig_rot:.3g}, HFOV "
                                              f"{fov:.1f} deg) not trusted: rotations re-fit with the default "
                                              f"{cfg.default_hfov_deg:g} deg HFOV held fixed")
                    rot = replace(fit_rotation_model(shot_tracks, idx, h, w, K_def, cfg), focal_sigma_rel=float("inf"))
            if model == "sfm":
                seg_reg = mp.registered
                first = int(np.flatnonzero(seg_reg)[0])
                w2c = np.tile(np.eye(4), (len(idx), 1, 1))
                w2c[seg_reg, :3, :3] = mp.w2c_R[seg_reg]
                w2c[seg_reg, :3, 3] = mp.w2c_t[seg_reg]
                seg = np.linalg.inv(w2c)
                seg = np.linalg.inv(seg[first]) @ seg
                depth = mp.stats.get("median_depth", float("nan"))
                if np.isfinite(depth) and depth > 0:
                    seg[:, :3, 3] /= depth  # scale-free unit: median scene depth of the first keyframe
                K_seg, sigma = mp.K, float(mp.stats.get("focal_sigma_rel", float("inf")))
                if not focal_trusted and not untrusted_poses:
                    K_seg, sigma = K_def, float("inf")
                # Poses kept from the untrusted map keep its focal too: a pose is only right with the K it was
                # solved with (the default K beside them would be a second, silent error). Its confidence says
                # it is untrusted (sigma above focal_max_sigma_rel).
                why = ("absolute pose not solved: no registered keyframe beside it, too few tracks on mapped points, or "
                       "a turn from its keyframe too fast to be real")
                rmses.append(mp.reprojection_rmse_px)
            else:
                seg_reg = rot.registered
                seg = np.tile(np.eye(4), (len(idx), 1, 1))
                seg[:, :3, :3] = np.transpose(rot.w2c_R, (0, 2, 1))
                K_seg, sigma = rot.K, rot.focal_sigma_rel
                why = "rotation-only: too few shared tracks with its anchor frame"
                if model == "rotation_fallback":
                    seg_reg = np.zeros(len(idx), bool)  # rotations only, no solved position: flagged
                    why = "SfM registered too few frames; rotation-only pose, position held"
                if len(rot.median_residual_px):
                    rmses.append(float(np.median(rot.median_residual_px)))
            source = "given" if Kg is not None else f"self_calibrated_{'sfm' if model == 'sfm' else 'rotation'}"
            if Kg is None and not np.isfinite(sigma) and (model != "sfm" or not (focal_trusted or untrusted_poses)):
                K_seg, source = K_def, "default_fov"  # focal not observable (static or featureless shot)
            c2w[idx] = _fill(seg, seg_reg)
            K[idx] = K_seg
            reg[idx] = seg_reg
            for k in np.flatnonzero(~seg_reg):
                reasons[a + k] = why
            info.update(model=model, focal_px=float(K_seg[0, 0]), focal_source=source, focal_trusted=focal_trusted,
                        focal_sigma_rel=sigma if np.isfinite(sigma) else None,
                        focal_confidence=1.0 if Kg is not None else focal_confidence(sigma))
            shots.append(info)
    return ScaleFreeResult(c2w=c2w, K=K, registered=reg, reasons=reasons, shot_starts=starts, shots=shots,
                           reprojection_rmse_px=float(np.nanmean(rmses)) if rmses else float("nan"))
