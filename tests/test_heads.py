"""Fine-tuning heads and supervised losses: rotations against scipy, the 2.5D closed form on exact synthetic hands
(and the two uncorrected forms failing), the regressor's mean start, and masking against hand-computed means."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from pipeline.augment.affine import view_affine
from pipeline.models.heads import (
    KeypointHead25D,
    MANORegressor,
    normalised_to_pixels,
    pixels_to_normalised,
    weak_perspective,
)
from pipeline.models.keypoints25d import camera_rays, reconstruct_3d, root_depth, to_25d
from pipeline.models.rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_rot6d,
    rot6d_to_matrix,
    rotate_orient_z,
    rotate_points_z,
)
from pipeline.objectives.supervised import keypoint25d_loss, mano_loss, masked_l1, masked_mse

# --------------------------------------------------------------------------------------------- rotations


def test_rot6d_round_trip_and_orthonormality():
    R = torch.tensor(Rotation.random(64, random_state=0).as_matrix())
    assert torch.allclose(rot6d_to_matrix(matrix_to_rot6d(R)), R, atol=1e-12)
    assert torch.equal(matrix_to_rot6d(R)[:, [0, 2, 4]], R[:, :, 0])  # first column, row-major interleaved
    x = torch.randn(64, 16, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    M = rot6d_to_matrix(x)
    assert torch.allclose(M.transpose(-1, -2) @ M, torch.eye(3, dtype=torch.float64).expand_as(M), atol=1e-12)
    assert torch.allclose(torch.linalg.det(M), torch.ones(64, 16, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(M[..., 0], torch.nn.functional.normalize(x[..., [0, 2, 4]], dim=-1))  # Gram-Schmidt
    assert torch.equal(rot6d_to_matrix(torch.tensor([1.0, 0, 0, 1, 0, 0])), torch.eye(3))


def test_rodrigues_against_scipy():
    rng = np.random.default_rng(0)
    axes = rng.normal(size=(200, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.concatenate([rng.uniform(0, math.pi - 1e-3, 185), [0, 1e-9, 1e-7, 1e-4, 1e-2],
                             math.pi - np.array([1e-3, 1e-5, 1e-7, 0]), rng.uniform(0, 1e-6, 6)])
    v = axes * angles[:, None]
    expected = Rotation.from_rotvec(v).as_matrix()
    R = axis_angle_to_matrix(torch.tensor(v))
    np.testing.assert_allclose(R.numpy(), expected, atol=1e-12)
    back = matrix_to_axis_angle(torch.tensor(expected)).numpy()
    np.testing.assert_allclose(Rotation.from_rotvec(back).as_matrix(), expected, atol=1e-9)
    below_pi = angles < math.pi - 1e-4  # at π, v and -v are the same rotation
    np.testing.assert_allclose(back[below_pi], v[below_pi], atol=1e-9)
    # float32 and a zero rotation: finite gradients at MANO's rest pose
    z = torch.zeros(2, 16, 3, requires_grad=True)
    axis_angle_to_matrix(z).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_rotation_about_z_is_the_image_rotation_of_the_augmentation():
    rng = np.random.default_rng(1)
    angle = 0.7
    f, c = 300.0, np.array([100.0, 120.0])
    K = torch.tensor([[f, 0, c[0]], [0, f, c[1]], [0, 0, 1]])
    pts = torch.tensor(rng.uniform([-0.1, -0.1, 0.4], [0.1, 0.1, 0.8], (10, 3)))
    project = lambda p: (p @ K.T)[:, :2] / (p @ K.T)[:, 2:]
    # the forward map of pipeline/augment/affine.py rotates image offsets by the 2x2 part of inv(view_affine)
    A = view_affine(np.array([[0.0, 0, 50, 50]]), np.zeros((1, 2)), 64, 1.0, np.array([[angle, 1.0, 0, 0]]))[0]
    forward = np.linalg.inv(A[:, :2])
    forward /= np.sqrt(abs(np.linalg.det(forward)))
    uv_rot = (project(pts).numpy() - c) @ forward.T + c
    np.testing.assert_allclose(project(rotate_points_z(pts, torch.tensor(angle))).numpy(), uv_rot, atol=1e-9)
    # the global orientation rotates with the points it poses
    orient = torch.tensor(Rotation.random(random_state=2).as_matrix())
    local = torch.tensor(rng.normal(size=(5, 3)))
    np.testing.assert_allclose((local @ rotate_orient_z(orient, torch.tensor(angle)).T).numpy(),
                               rotate_points_z(local @ orient.T, torch.tensor(angle)).numpy(), atol=1e-12)


# --------------------------------------------------------------------------------------------- coordinates


def test_pixel_normalised_convention():
    size = 224
    edges = torch.tensor([[-0.5, -0.5], [size - 0.5, size - 0.5], [(size - 1) / 2, 0.0]])
    np.testing.assert_allclose(pixels_to_normalised(edges, size).numpy(),
                               [[-1, -1], [1, 1], [0, -1 + 1 / size]], atol=1e-6)
    kp = torch.rand(3, 21, 2) * size
    assert torch.allclose(normalised_to_pixels(pixels_to_normalised(kp, size), size), kp, atol=1e-4)


def test_weak_perspective_hand_computed():
    pts = torch.tensor([[[0.1, -0.2, 0.5], [0.0, 0.0, 7.0]]])
    out = weak_perspective(pts, torch.tensor([2.0]), torch.tensor([[0.05, 0.1]]))
    assert torch.allclose(out, torch.tensor([[[0.3, -0.2], [0.1, 0.2]]]))


# --------------------------------------------------------------------------------------------- MANO regressor


def test_mano_regressor_starts_at_the_mean_and_learns():
    torch.manual_seed(0)
    head = MANORegressor(32, stages=3, hidden=(64, 64))
    feats = torch.randn(4, 32, requires_grad=True)
    out = head(feats)
    assert len(out) == 3
    shapes = {"pose6d": (4, 16, 6), "rotmat": (4, 16, 3, 3), "betas": (4, 10), "cam_scale": (4,), "cam_t": (4, 2)}
    for stage in out:
        assert {k: tuple(v.shape) for k, v in stage.items()} == shapes
    first = out[0]
    assert torch.equal(first["rotmat"], torch.eye(3).expand(4, 16, 3, 3))
    assert torch.equal(first["betas"], torch.zeros(4, 10)) and torch.equal(first["cam_t"], torch.zeros(4, 2))
    assert torch.allclose(first["cam_scale"], torch.full((4,), 0.9))

    # the zero-initialised last layer gets a gradient at once; after one step everything does
    loss = lambda o: sum((s["betas"] - 1).square().mean() + (s["cam_scale"] - 2).square().mean() for s in o)
    loss(out).backward()
    assert head.mlp[-1].weight.grad.abs().sum() > 0
    torch.optim.SGD(head.parameters(), lr=0.1).step()
    head.zero_grad()
    feats.grad = None
    out = head(feats)
    loss(out).backward()
    assert feats.grad.abs().sum() > 0 and head.mlp[0].weight.grad.abs().sum() > 0
    assert not torch.equal(out[0]["betas"], out[2]["betas"])  # the stages refine


def test_mano_regressor_camera_scale_and_custom_mean():
    mean = torch.zeros(16 * 6 + 13)
    mean[: 16 * 6] = torch.tensor([0.0, 1, 1, 0, 0, 0]).repeat(16)  # columns (0, 1, 0), (1, 0, 0), then their cross
    mean[16 * 6 + 10:] = torch.tensor([1.0, 0.2, -0.3])
    head = MANORegressor(8, hidden=(16,), mean_params=mean)
    out = head(torch.zeros(2, 8))[0]
    assert torch.allclose(out["cam_scale"], torch.nn.functional.softplus(torch.tensor(1.0 + math.log(math.expm1(0.9)))))
    assert torch.allclose(out["cam_t"], torch.tensor([[0.2, -0.3]] * 2))
    assert torch.allclose(torch.linalg.det(out["rotmat"]), torch.ones(2, 16))
    raw = torch.tensor([-50.0, 0.0, 50.0])
    s = head.decode(torch.cat([mean.expand(3, -1)[:, :-3], torch.stack([raw, raw, raw], 1)], 1))["cam_scale"]
    assert (s > 0).all() and s[1] == pytest.approx(0.9) and s[2] == pytest.approx(50.0 + math.log(math.expm1(0.9)))


# --------------------------------------------------------------------------------------------- 2.5D


def synthetic_hands(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly rotated, jittered right-hand skeletons (FreiHAND order, metres) with the wrist at z in
    [0.3, 1.0] m on a ray up to 0.4 off-axis, and the K of a 224-px crop around the hand."""
    rng = np.random.default_rng(seed)
    tmpl = np.zeros((21, 3))
    for finger, x in enumerate([0.03, 0.01, -0.01, -0.03]):  # index..pinky MCPs at 9 cm, fingers along -y
        tmpl[5 + 4 * finger: 9 + 4 * finger] = [[x, -0.09 - 0.03 * k, 0.0] for k in range(4)]
    tmpl[1:5] = [[0.05 + 0.02 * k, -0.02 - 0.02 * k, 0.01] for k in range(4)]
    R = Rotation.random(n, random_state=seed).as_matrix()
    z = rng.uniform(0.3, 1.0, n)
    ray = rng.uniform(-0.4, 0.4, (n, 2))
    wrist = np.c_[ray * z[:, None], z]
    kp = wrist[:, None] + (tmpl + rng.normal(0, 0.005, (n, 21, 3))) @ R.transpose(0, 2, 1)
    f = 224 * z / rng.uniform(0.25, 0.4, n)  # the hand spans 0.25-0.4 m of the crop
    K = np.zeros((n, 3, 3))
    K[:, 0, 0], K[:, 1, 1], K[:, 2, 2] = f, f * rng.uniform(0.98, 1.02, n), 1
    K[:, :2, 2] = 111.5 - f[:, None] * ray + rng.uniform(-20, 20, (n, 2))
    return torch.tensor(kp), torch.tensor(K)


def np_roots(uv, z_rel, K, c_sign=1.0, normalise=True):
    """Both roots (+, -) of the bone equation for bone 0 -> 5, recomputed in NumPy from the derivation."""
    x = np.concatenate([uv, np.ones_like(uv[..., :1])], -1)
    if normalise:
        x = x @ np.linalg.inv(K).transpose(0, 2, 1)
    p, q, zp, zq = x[:, 0, :2], x[:, 5, :2], z_rel[:, 0], z_rel[:, 5]
    a = ((q - p) ** 2).sum(-1)
    b = 2 * ((q - p) * (q * zq[:, None] - p * zp[:, None])).sum(-1)
    c = ((q * zq[:, None] - p * zp[:, None]) ** 2).sum(-1) + c_sign * (zq - zp) ** 2 - 1
    d = np.sqrt(np.maximum(b * b - 4 * a * c, 0))
    return (-b + d) / (2 * a), (-b - d) / (2 * a)


def test_root_depth_closed_form_on_exact_synthetic_hands():
    kp, K = synthetic_hands(4000)
    uv, z_rel, s = to_25d(kp, K)
    assert torch.equal(z_rel[:, 0], torch.zeros(4000))
    assert torch.allclose((kp[:, 5] - kp[:, 0]).norm(dim=-1), s)
    z0 = kp[:, 0, 2]
    z = root_depth(uv, z_rel, K, bone_length=s)
    rel = ((z - z0).abs() / z0).numpy()

    # the + root is the true depth exactly when (x̄_5 - x̄_0)·(p_5 - p_0) >= 0 (root_depth's docstring): here all
    # but a bone pointing almost along the viewing ray (~1% of uniformly rotated hands); where it is not,
    # the true depth is the other root: the ambiguity is in the 2.5D itself
    rays = camera_rays(uv, K)
    plus = ((rays[:, 5] - rays[:, 0]) * (kp[:, 5] - kp[:, 0])).sum(-1).numpy() >= 0
    assert plus.mean() > 0.97
    assert rel[plus].max() < 1e-6
    assert (rel[~plus] > 1e-3).all()
    pos, neg = (r * s.numpy() for r in np_roots(uv.numpy(), z_rel.numpy(), K.numpy()))
    assert (np.minimum(abs(pos - z0.numpy()), abs(neg - z0.numpy())) / z0.numpy()).max() < 1e-6
    assert np.median(abs(neg - z0.numpy())[plus] / z0.numpy()[plus]) > 0.5  # the other root is far off

    # the printed thesis form (- sign in c, or pixels instead of K⁻¹-normalised coordinates) is far off, but
    # for the few bones with z̃_5 ≈ 0 where the sign does not matter
    for wrong in (np_roots(uv.numpy(), z_rel.numpy(), K.numpy(), c_sign=-1.0)[0],
                  np_roots(uv.numpy(), z_rel.numpy(), K.numpy(), normalise=False)[0]):
        err = abs(wrong * s.numpy() - z0.numpy()) / z0.numpy()
        assert np.median(err) > 0.2 and (err < 1e-3).mean() < 0.1

    # full 3D from the 2.5D, the recovered root and the GT scale; in bone lengths by default
    rec = reconstruct_3d(uv[plus], z_rel[plus], z[plus], K[plus], s[plus])
    assert ((rec - kp[plus]).norm(dim=-1) / kp[plus, :, 2]).max() < 1e-6
    assert torch.allclose(root_depth(uv, z_rel, K)[plus] * s[plus], z[plus], rtol=1e-12)


def test_keypoint_head_refinement_starts_at_the_closed_form():
    torch.manual_seed(0)
    kp, K = synthetic_hands(8, seed=3)
    K = K.float()
    plain = KeypointHead25D(16)
    out = plain(torch.randn(8, 16))
    assert out.keys() == {"uv", "z_rel"} and out["uv"].shape == (8, 21, 2) and out["z_rel"].shape == (8, 21)

    head = KeypointHead25D(16, refine=True)
    feats = torch.randn(8, 16)
    with pytest.raises(ValueError):
        head(feats)
    out = head(feats, K, 224)
    expected = root_depth(normalised_to_pixels(out["uv"], 224), out["z_rel"], K)
    expected = expected.nan_to_num(nan=0.0, posinf=50.0).clamp(0, 50)
    assert torch.equal(out["z_root"], out["z_root_closed"]) and torch.allclose(out["z_root_closed"], expected)
    # refinement losses train M_ref only (detached inputs)
    out["z_root"].sum().backward()
    assert head.linear.weight.grad is None and head.refine[-1].weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------- losses


def test_masked_l1_means_over_valid_entries_only():
    pred = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]], requires_grad=True)
    target = torch.tensor([[1.5, float("nan"), 0.0], [0.0, 0.0, 0.0], [7.0, 10.0, float("nan")]])
    labelled = torch.tensor([True, False, True])
    loss = masked_l1(pred, target, labelled)
    assert loss.item() == pytest.approx((0.5 + 3.0 + 0.0 + 2.0) / 4)
    loss.backward()
    expected_grad = torch.tensor([[-1, 0, 1], [0, 0, 0], [0, -1, 0]]) / 4
    assert torch.equal(pred.grad, expected_grad)
    assert masked_mse(pred, target, labelled).item() == pytest.approx((0.25 + 9 + 0 + 4) / 4)
    # a per-joint mask broadcasts over the coordinates
    per_joint = masked_l1(torch.ones(2, 3, 2), torch.zeros(2, 3, 2), torch.tensor([[True, False, False]] * 2))
    assert per_joint.item() == 1.0


def test_masked_loss_with_nothing_valid_is_zero_without_nan_gradients():
    pred = torch.randn(3, 21, 2, requires_grad=True)
    for target, mask in ((torch.full((3, 21, 2), float("nan")), None), (torch.zeros(3, 21, 2), torch.zeros(3) > 0)):
        pred.grad = None
        loss = masked_l1(pred, target, mask) + masked_mse(pred, target, mask)
        assert loss.item() == 0.0
        loss.backward()
        assert torch.equal(pred.grad, torch.zeros_like(pred))


def mano_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    B = 4
    stage = {"rotmat": axis_angle_to_matrix(0.3 * torch.randn(B, 16, 3, generator=g, dtype=torch.float64)),
             "betas": torch.randn(B, 10, generator=g, dtype=torch.float64)}
    j2d, j3d = torch.randn(B, 21, 2, generator=g, dtype=torch.float64), torch.randn(B, 21, 3, generator=g,
                                                                                         dtype=torch.float64)
    targets = {"joints2d": torch.randn(B, 21, 2, generator=g, dtype=torch.float64),
               "joints3d": torch.randn(B, 21, 3, generator=g, dtype=torch.float64) + 0.5,
               "pose": torch.randn(B, 48, generator=g, dtype=torch.float64),
               "betas": torch.randn(B, 10, generator=g, dtype=torch.float64),
               "labelled": torch.tensor([True, True, False, True])}
    targets["pose"][1] = float("nan")  # a frame without a MANO fit
    targets["betas"][1] = float("nan")
    targets["joints3d"][3] = float("nan")  # a frame without 3D
    return stage, j2d, j3d, targets


def test_mano_loss_terms_masks_and_weights():
    stage, j2d, j3d, t = mano_batch()
    terms = mano_loss(stage, j2d, j3d, t)
    gt_rot = torch.tensor(Rotation.from_rotvec(t["pose"][[0, 3]].reshape(-1, 3).numpy()).as_matrix())
    gt3d = t["joints3d"] - t["joints3d"][:, :1]
    expected = {"joints2d": (j2d - t["joints2d"])[[0, 1, 3]].abs().mean(),
                "joints3d": (j3d - gt3d)[[0, 1]].abs().mean(),
                "pose": (stage["rotmat"][[0, 3]].reshape(-1, 3, 3) - gt_rot).square().mean(),
                "betas": (stage["betas"] - t["betas"])[[0, 3]].square().mean()}
    for k, v in expected.items():
        assert terms[k].item() == pytest.approx(v.item(), rel=1e-12), k
    assert terms["total"].item() == pytest.approx(sum(v.item() for v in expected.values()))

    w = {"joints2d": 2.0, "joints3d": 0.5, "pose": 3.0, "betas": 0.0}
    weighted = mano_loss(stage, j2d, j3d, t, w)
    assert weighted["total"].item() == pytest.approx(sum(w[k] * expected[k].item() for k in w))
    # linear in each weight
    doubled = mano_loss(stage, j2d, j3d, t, {**w, "pose": 6.0})["total"] - weighted["total"]
    assert doubled.item() == pytest.approx(3.0 * expected["pose"].item())


def test_keypoint25d_loss_terms():
    g = torch.Generator().manual_seed(1)
    pred = {"uv": torch.randn(3, 21, 2, generator=g), "z_rel": torch.randn(3, 21, generator=g),
            "z_root": torch.randn(3, generator=g)}
    t = {"uv": torch.randn(3, 21, 2, generator=g), "z_rel": torch.randn(3, 21, generator=g),
         "labelled": torch.tensor([True, True, False])}
    t["z_rel"][0, :5] = float("nan")
    terms = keypoint25d_loss(pred, t)
    uv = (pred["uv"] - t["uv"])[:2].abs().mean()
    z = torch.cat([(pred["z_rel"] - t["z_rel"])[0, 5:], (pred["z_rel"] - t["z_rel"])[1]]).abs().mean()
    assert "z_root" not in terms
    assert terms["total"].item() == pytest.approx((uv + 5 * z).item(), rel=1e-6)
    t["z_root"] = torch.tensor([1.0, float("nan"), 2.0])
    terms = keypoint25d_loss(pred, t, {"z_root": 2.0})
    root = (pred["z_root"][0] - 1.0).abs()
    assert terms["z_root"].item() == pytest.approx(root.item())
    assert terms["total"].item() == pytest.approx((uv + 5 * z + 2 * root).item(), rel=1e-6)
