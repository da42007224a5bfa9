"""Camera geometry: validation, relative poses, Plücker rays, CameraCondition (= the release's prepare_camera)."""

from __future__ import annotations

import pytest
import torch

from model.camera import (
    CameraCondition,
    camera_condition,
    latent_frame_groups,
    look_at,
    plucker_rays,
    ray_directions,
    relative_to_first,
    rescale_intrinsics,
    rotation_angle,
    se3_inverse,
    so3_exp,
    validate_trajectory,
)

# 5x5 grid with the principal point at the exact image centre: pixel (2, 2) has centre (2.5, 2.5).
K5 = torch.tensor([[4.0, 0.0, 2.5], [0.0, 4.0, 2.5], [0.0, 0.0, 1.0]], dtype=torch.float64)


def random_poses(n: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c2w = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    c2w[:, :3, :3] = so3_exp(torch.randn(n, 3, generator=g, dtype=torch.float64))
    c2w[:, :3, 3] = 3.0 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    return c2w.to(dtype)


def translating_poses(n: int, offset: float = 10.0) -> torch.Tensor:
    """Identity rotation, camera centre at x = offset + k metres for frame k."""
    c2w = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    c2w[:, 0, 3] = offset + torch.arange(n, dtype=torch.float64)
    return c2w


# --- helpers ---------------------------------------------------------------------------------------

def test_se3_inverse_and_so3_exp_and_angle():
    T = random_poses(6)
    eye = torch.eye(4, dtype=torch.float64).expand(6, 4, 4)
    torch.testing.assert_close(se3_inverse(T) @ T, eye)
    w = torch.tensor([[0.0, 0.3, 0.0], [1e-9, 0.0, 0.0], [0.0, 0.0, 3.0]], dtype=torch.float64)
    torch.testing.assert_close(rotation_angle(so3_exp(w)), w.norm(dim=-1))
    torch.testing.assert_close(look_at((0, 0, 0), (0, 0, 1)), torch.eye(4, dtype=torch.float64))
    # Looking along +X from the origin: camera +Z = world +X, camera +Y stays world down (+Y).
    L = look_at((0, 0, 0), (5, 0, 0))
    torch.testing.assert_close(L[:3, 2], torch.tensor([1.0, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(L[:3, 1], torch.tensor([0.0, 1, 0], dtype=torch.float64))


# --- relative_to_first -----------------------------------------------------------------------------

def test_relative_to_first_identity_and_preserves_relative_transforms():
    c2w = random_poses(5, seed=1)
    rel = relative_to_first(c2w)
    torch.testing.assert_close(rel[0], torch.eye(4, dtype=torch.float64))
    for i, j in [(0, 3), (1, 4), (2, 2)]:
        torch.testing.assert_close(se3_inverse(rel[i]) @ rel[j], se3_inverse(c2w[i]) @ c2w[j])
    # metres preserved: distances between camera centres unchanged
    torch.testing.assert_close(torch.cdist(rel[:, :3, 3], rel[:, :3, 3]), torch.cdist(c2w[:, :3, 3], c2w[:, :3, 3]))


def test_relative_to_first_batched_numpy_and_dtype():
    c2w = random_poses(8, seed=2).reshape(2, 4, 4, 4)
    rel = relative_to_first(c2w.numpy())
    assert rel.dtype == torch.float64 and rel.shape == (2, 4, 4, 4)
    torch.testing.assert_close(rel[:, 0], torch.eye(4, dtype=torch.float64).expand(2, 4, 4))
    assert relative_to_first(c2w.float()).dtype == torch.float32


# --- validation ------------------------------------------------------------------------------------

def _good(n: int = 4):
    return random_poses(n, seed=3), K5.expand(n, 3, 3).clone()


def test_validate_accepts_good_numpy_float32_and_shared_K():
    c2w, K = _good()
    validate_trajectory(c2w, K)
    validate_trajectory(c2w.float().numpy(), K5.numpy())


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda c, k: (c[0], k), r"c2w must have shape \(N, 4, 4\)"),
        (lambda c, k: (c[:, :3], k), r"c2w must have shape \(N, 4, 4\)"),
        (lambda c, k: (c[:0], k[:0]), r"no frames"),
        (lambda c, k: (c, k[:3]), r"c2w has 4 frames but intrinsics has 3"),
        (lambda c, k: (c, k[:, :2]), r"intrinsics must have shape"),
    ],
)
def test_validate_shape_errors(mutate, pattern):
    c2w, K = _good()
    with pytest.raises(ValueError, match=pattern):
        validate_trajectory(*mutate(c2w, K))


def _set(t, idx, value):
    t = t.clone()
    t[idx] = value
    return t


@pytest.mark.parametrize(
    "which, idx, value, pattern",
    [
        ("c", (2, 0, 3), float("nan"), r"frame 2: c2w contains NaN or inf"),
        ("c", (1, 1, 1), float("inf"), r"frame 1: c2w contains NaN or inf"),
        ("k", (3, 0, 2), float("nan"), r"frame 3: intrinsics contains NaN or inf"),
        ("c", (2, 3, 0), 0.5, r"frame 2: c2w last row must be \[0, 0, 0, 1\]"),
        ("c", (1, 0, 0), 2.0, r"frame 1: c2w rotation is not orthonormal"),
        ("k", (2, 0, 0), -4.0, r"frame 2: intrinsics need positive focal lengths"),
        ("k", (0, 1, 1), 0.0, r"frame 0: intrinsics need positive focal lengths"),
        ("k", (3, 2, 0), 0.1, r"frame 3: intrinsics must be \[\[fx, s, cx\]"),
        ("k", (1, 2, 2), 2.0, r"frame 1: intrinsics must be"),
    ],
)
def test_validate_value_errors_name_problem_and_frame(which, idx, value, pattern):
    c2w, K = _good()
    if which == "c":
        c2w = _set(c2w, idx, value)
    else:
        K = _set(K, idx, value)
    with pytest.raises(ValueError, match=pattern):
        validate_trajectory(c2w, K, name="clip7")
    with pytest.raises(ValueError, match=r"^clip7: "):
        validate_trajectory(c2w, K, name="clip7")


def test_validate_rejects_reflection():
    c2w, K = _good()
    c2w[2, :3, 0] *= -1.0  # orthonormal but det -1 (left-handed)
    with pytest.raises(ValueError, match=r"frame 2: c2w rotation has det -1"):
        validate_trajectory(c2w, K)


# --- intrinsics and Plücker -------------------------------------------------------------------------

def test_rescale_intrinsics_pixel_corner_convention():
    K = torch.tensor([[100.0, 1.0, 64.0], [0.0, 90.0, 32.0], [0.0, 0.0, 1.0]])
    K2 = rescale_intrinsics(K, (64, 128), (8, 16))  # H /8, W /8
    torch.testing.assert_close(K2, torch.tensor([[12.5, 0.125, 8.0], [0.0, 11.25, 4.0], [0.0, 0.0, 1.0]]))
    K3 = rescale_intrinsics(K, (64, 128), (32, 32))  # H /2, W /4
    assert K3[0, 0] == 25.0 and K3[0, 2] == 16.0 and K3[1, 1] == 45.0 and K3[1, 2] == 16.0
    # a centred principal point stays centred
    assert rescale_intrinsics(K5, (5, 5), (25, 15))[:2, 2].tolist() == [7.5, 12.5]


def test_plucker_unit_directions_orthogonal_moments_and_grid_ray():
    c2w = random_poses(3, seed=4)
    p = plucker_rays(c2w, K5.expand(3, 3, 3), (5, 5))
    assert p.shape == (3, 6, 5, 5) and p.dtype == torch.float64
    d, m = p[:, :3], p[:, 3:]
    torch.testing.assert_close(d.norm(dim=1), torch.ones(3, 5, 5, dtype=torch.float64))
    assert (d * m).sum(dim=1).abs().max() < 1e-10
    # moment = o x d for the known camera centre
    o = c2w[:, :3, 3][:, :, None, None].expand_as(d)
    torch.testing.assert_close(m, torch.linalg.cross(o, d, dim=1))
    # identity pose, principal point on grid point (2, 2): that ray looks down +Z with zero moment
    Kc = K5.clone()
    Kc[:2, 2] = 2.0
    p0 = plucker_rays(torch.eye(4)[None], Kc[None].float(), (5, 5))
    assert p0.dtype == torch.float32
    torch.testing.assert_close(p0[0, :, 2, 2], torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 0.0]))
    assert p0[0, 0, 0, 0] < 0 and p0[0, 1, 0, 0] < 0


def test_plucker_direction_matches_projection():
    """Projecting a point along a grid point's world ray lands back on that grid point (u, v) = (j, i)."""
    c2w = random_poses(1, seed=5)
    K = torch.tensor([[[7.0, 0.3, 2.2], [0.0, 6.0, 1.7], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    p = plucker_rays(c2w, K, (4, 6))
    i, j = 3, 1
    X = c2w[0, :3, 3] + 2.5 * p[0, :3, i, j]
    Xc = se3_inverse(c2w[0])[:3, :3] @ X + se3_inverse(c2w[0])[:3, 3]
    uv = (K[0] @ Xc)[:2] / Xc[2]
    torch.testing.assert_close(uv, torch.tensor([float(j), float(i)], dtype=torch.float64))


def test_ray_directions_with_skew_are_unit():
    K = torch.tensor([[5.0, 0.7, 3.0], [0.0, 4.0, 2.0], [0.0, 0.0, 1.0]])
    d = ray_directions(K, (3, 4))
    assert d.shape == (1, 3, 4, 3)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(1, 3, 4, dtype=torch.float64))
    assert (d[..., 2] > 0).all()


# --- camera_condition ------------------------------------------------------------------------------

def test_latent_frame_groups_rule():
    # the release's prepare_camera: latent 0 takes raw frames 0..ts-1, latent f >= 1 takes ts*f-ts+1 .. ts*f
    assert latent_frame_groups(3, 4).tolist() == [[0, 1, 2, 3], [1, 2, 3, 4], [5, 6, 7, 8]]
    assert latent_frame_groups(2, 1).tolist() == [[0], [1]]
    assert latent_frame_groups(1, 4, num_raw_frames=2).tolist() == [[0, 1, 1, 1]]  # repeats the last frame


def test_camera_condition_equals_release_prepare_camera():
    """Our trajectory -> camera tensors path gives the same raymap and chunk Plücker as diffusers' SANA-WM."""
    from diffusers.pipelines.sana_wm.cam_utils import prepare_camera

    ts, F = 4, 4
    N = 1 + ts * (F - 1)
    g = torch.Generator().manual_seed(3)
    c2w = random_poses(N, seed=21) @ random_poses(1, seed=22)  # a moving camera in an arbitrary world frame
    K = torch.tensor([[41.0, 0.0, 47.0], [0.0, 39.0, 30.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    K = K.expand(N, 3, 3).clone()
    K[:, 0, 0] += torch.rand(N, generator=g, dtype=torch.float64)  # per-frame focal changes too
    ref = prepare_camera(c2w.float().numpy(), torch.stack([K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]],
                                                           -1).float().numpy(),
                         target_size=(64, 96), vae_stride=(ts, 8, 8))
    cond = camera_condition(c2w[None], K[None], (64, 96), (8, 12), ts)
    raymap, chunk_plucker = cond.diffusers_inputs()
    torch.testing.assert_close(raymap[0].float(), ref["raymap"], atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(chunk_plucker[0].float(), ref["chunk_plucker"], atol=2e-5, rtol=2e-5)


def test_camera_condition_shapes_and_exact_grouping():
    ts, F = 4, 3
    N = 1 + ts * (F - 1)
    # item 0: pure translation along +x, frame k at x = 10 + k; item 1: random poses
    c2w = torch.stack([translating_poses(N), random_poses(N, seed=9)]).float()
    K_img = rescale_intrinsics(K5, (5, 5), (10, 10))  # intrinsics given at image resolution 10x10
    K = K_img.expand(2, N, 3, 3).float()
    cond = camera_condition(c2w, K, image_hw=(10, 10), latent_hw=(5, 5), temporal_stride=ts)
    assert isinstance(cond, CameraCondition)
    assert cond.plucker.shape == (2, F, 6 * ts, 5, 5) and cond.raymap.shape == (2, F, 20)
    assert cond.plucker.dtype == torch.float32 and cond.num_frames == F and cond.temporal_stride == ts

    # After relative_to_first, raw frame k of item 0 sits at x = k. The moment o x d of any ray has
    # y-component -k * d_z: channel slot*6 + 4 over d_z reads -k for the raw frame in that slot.
    centre = cond.plucker[0, :, :, 2, 2].reshape(F, ts, 6)
    expected_raw = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4], [5, 6, 7, 8]], dtype=torch.float32)
    torch.testing.assert_close(centre[..., 4] / centre[..., 2], -expected_raw)
    # the raymap carries raw frame ts*f: translations x = 0, 4, 8, and latent-scale intrinsics
    torch.testing.assert_close(cond.raymap[0, :, [3, 7, 11]], torch.tensor([[0.0, 0, 0], [4.0, 0, 0], [8.0, 0, 0]]))
    torch.testing.assert_close(cond.raymap[0, 0, 16:], torch.tensor([4.0, 4.0, 2.5, 2.5]))

    # item 1 matches per-frame plucker_rays on relative poses, slot by slot
    rel = relative_to_first(c2w[1].double())
    per_raw = plucker_rays(rel, K5.expand(N, 3, 3), (5, 5))
    for f, group in enumerate(latent_frame_groups(F, ts).tolist()):
        for slot, raw in enumerate(group):
            torch.testing.assert_close(cond.plucker[1, f, slot * 6:(slot + 1) * 6], per_raw[raw].float(),
                                       atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(cond.raymap[1, f, :16].view(4, 4), rel[ts * f].float(), atol=1e-5, rtol=1e-5)


def test_camera_condition_invariant_to_world_frame():
    N = 5
    c2w = random_poses(N, seed=10)[None]
    G = random_poses(1, seed=11)[0]
    K = K5.expand(1, N, 3, 3)
    a = camera_condition(c2w, K, (5, 5), (5, 5), 2)
    b = camera_condition(G @ c2w, K, (5, 5), (5, 5), 2)
    assert a.plucker.dtype == torch.float64
    torch.testing.assert_close(b.plucker, a.plucker, atol=1e-9, rtol=0)
    torch.testing.assert_close(b.raymap, a.raymap, atol=1e-9, rtol=0)


def test_camera_condition_errors():
    K = K5.expand(1, 6, 3, 3)
    with pytest.raises(ValueError, match=r"N = 6 raw frames.*needs N == 1 \+ 4\*\(F-1\)"):
        camera_condition(random_poses(6)[None], K, (5, 5), (5, 5), 4)
    bad = torch.stack([random_poses(5), random_poses(5)])
    bad[1, 3, 0, 3] = float("nan")
    with pytest.raises(ValueError, match=r"batch item 1: frame 3: c2w contains NaN"):
        camera_condition(bad, K5.expand(2, 5, 3, 3), (5, 5), (5, 5), 4)
    with pytest.raises(ValueError, match=r"c2w must be \(B, N, 4, 4\)"):
        camera_condition(random_poses(5), K5.expand(5, 3, 3), (5, 5), (5, 5), 4)


def test_camera_condition_slice_and_to():
    N, ts = 9, 2
    cond = camera_condition(random_poses(N, seed=12)[None].float(), K5.expand(1, N, 3, 3).float(),
                            (5, 5), (5, 5), ts)
    assert cond.num_frames == 5
    part = cond.slice_frames(1, 4)
    assert part.num_frames == 3
    torch.testing.assert_close(part.plucker, cond.plucker[:, 1:4])
    torch.testing.assert_close(part.raymap, cond.raymap[:, 1:4])
    with pytest.raises(ValueError, match=r"slice_frames"):
        cond.slice_frames(3, 6)
    d = cond.to(dtype=torch.float64)
    assert d.plucker.dtype == torch.float64 and d.raymap.dtype == torch.float64
    with pytest.raises(ValueError, match=r"disagree"):
        CameraCondition(cond.raymap[:, :2], cond.plucker)


def test_paper_scale_grouping_count():
    """Paper geometry (60 s at 16 fps, ts = 8): 961 raw frames -> 121 latent frames, 48 channels."""
    groups = latent_frame_groups(121, 8)
    assert groups.shape == (121, 8) and int(groups[-1, -1]) == 960
    assert groups[0].tolist() == list(range(8))


def test_held_still_is_the_identity_path_with_the_same_intrinsics():
    from model.camera import camera_condition

    N, hw, lhw, ts = 9, (32, 48), (4, 6), 4
    c2w = random_poses(N)
    K = torch.tensor([[40.0, 0, 24], [0, 40.0, 16], [0, 0, 1]], dtype=torch.float64).repeat(1, N, 1, 1)
    moving = camera_condition(c2w[None], K, hw, lhw, ts)
    still = camera_condition(torch.eye(4, dtype=torch.float64).repeat(1, N, 1, 1), K, hw, lhw, ts)
    held = moving.held_still()
    assert (moving.plucker - still.plucker).abs().max() > 1e-2  # the path really moves
    torch.testing.assert_close(held.raymap, still.raymap, atol=1e-9, rtol=0)
    torch.testing.assert_close(held.plucker, still.plucker, atol=1e-9, rtol=0)
