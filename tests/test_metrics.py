"""Evaluation metrics against independent references (scipy's Procrustes solvers, rotations and cKDTree) and
hand-computed cases: exact similarities, a reflection, NaN labels, known error distributions, constant-velocity and
constant-acceleration sequences, a shifted grid."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes
from scipy.spatial import cKDTree, procrustes
from scipy.spatial.transform import Rotation

from pipeline.evaluate import (
    accel_metrics,
    acceleration,
    align_procrustes,
    align_root,
    align_scale_translation,
    auc_pck,
    epe_2d,
    evaluate_predictions,
    f_score,
    mpjpe,
    mpvpe,
    pck_curve,
    split_sequences,
)

STEP = 50.0 / 99  # spacing of the 100 PCK thresholds over 0-50 mm


def _hands(rng, n: int, k: int = 21) -> np.ndarray:
    """Random non-planar clouds of hand size (a few cm) about 0.5 m in front of the camera, metres."""
    return rng.normal(scale=0.03, size=(n, k, 3)) + np.array([0.0, 0.0, 0.5])


def _similar(rng, x: np.ndarray, noise: float = 0.0):
    n = len(x)
    s = rng.uniform(0.5, 2.0, n)
    R = Rotation.random(n, rng=rng).as_matrix()
    t = rng.normal(scale=0.1, size=(n, 3))
    y = s[:, None, None] * np.einsum("nij,nkj->nki", R, x) + t[:, None] + rng.normal(scale=noise, size=x.shape)
    return y, s, R, t


def test_procrustes_matches_scipy_orthogonal_procrustes_and_disparity():
    rng = np.random.default_rng(0)
    pred = _hands(rng, 6)
    gt, *_ = _similar(rng, pred, noise=0.004)
    aligned, sim = align_procrustes(pred, gt)
    errors = mpjpe(pred, gt, "pa")
    for i in range(len(pred)):
        pc, gc = pred[i] - pred[i].mean(0), gt[i] - gt[i].mean(0)
        R, _ = orthogonal_procrustes(pc, gc)  # argmin over orthogonal R of |pc R - gc|
        assert np.linalg.det(R) > 0  # small noise: the best orthogonal map is a rotation
        s = np.sum((pc @ R) * gc) / np.sum(pc**2)  # d/ds |s pc R - gc|^2 = 0
        reference = s * pc @ R + gt[i].mean(0)
        np.testing.assert_allclose(aligned[i], reference, atol=1e-12)
        np.testing.assert_allclose(sim.s[i], s, rtol=1e-10)
        np.testing.assert_allclose(errors.per_sample[i], 1000 * np.linalg.norm(reference - gt[i], axis=1).mean())
        # scipy.spatial.procrustes: squared residual of the standardised clouds = ours / |gc|_F^2
        _, _, disparity = procrustes(gt[i], pred[i])
        np.testing.assert_allclose(disparity, np.sum((aligned[i] - gt[i]) ** 2) / np.sum(gc**2), rtol=1e-8)


def test_known_similarity_gives_zero_pa_error_and_recovers_the_transform():
    rng = np.random.default_rng(1)
    pred = _hands(rng, 5)
    gt, s, R, t = _similar(rng, pred)
    aligned, sim = align_procrustes(pred, gt)
    np.testing.assert_allclose(aligned, gt, atol=1e-12)
    np.testing.assert_allclose(sim.s, s, rtol=1e-10)
    np.testing.assert_allclose(sim.R, R, atol=1e-10)
    np.testing.assert_allclose(sim.t, t, atol=1e-10)
    assert mpjpe(pred, gt, "pa").mean < 1e-9
    assert mpjpe(pred, gt).mean > 10


def test_procrustes_never_reflects_a_mirrored_hand():
    rng = np.random.default_rng(2)
    gt = _hands(rng, 4)
    mirrored = gt * np.array([-1.0, 1.0, 1.0])
    aligned, sim = align_procrustes(mirrored, gt)
    np.testing.assert_allclose(np.linalg.det(sim.R), 1.0)
    for i in range(len(gt)):
        pc, gc = mirrored[i] - mirrored[i].mean(0), gt[i] - gt[i].mean(0)
        improper, _ = orthogonal_procrustes(pc, gc)
        assert np.linalg.det(improper) < 0 and np.allclose(pc @ improper, gc)  # a reflection would undo the mirror
        rot, _ = Rotation.align_vectors(gc, pc)  # best proper rotation, an independent solver
        rotated = rot.apply(pc)
        reference = np.sum(rotated * gc) / np.sum(pc**2) * rotated + gt[i].mean(0)
        np.testing.assert_allclose(aligned[i], reference, atol=1e-10)
    assert mpjpe(mirrored, gt, "pa").per_sample.min() > 1.0
    planar = gt.copy()
    planar[..., 2] = 0.5  # a mirrored planar cloud is a 180 degree rotation of it: PA error 0 without reflecting
    assert mpjpe(planar * np.array([-1.0, 1.0, 1.0]), planar, "pa").mean < 1e-9


def test_procrustes_fits_labelled_points_only():
    rng = np.random.default_rng(3)
    pred = _hands(rng, 3)
    gt, s, *_ = _similar(rng, pred)
    gt[0, 5:] = np.nan  # 5 labelled points: the similarity is still recovered exactly
    pred[0, 5:] += 1.0  # what the prediction does at unlabelled points must not matter
    gt[1, 2:] = np.nan  # 2 labelled points: a similarity fits any two, so PA is undefined there
    gt[2] = np.nan
    errors = mpjpe(pred, gt, "pa")
    _, sim = align_procrustes(pred, gt)
    np.testing.assert_allclose(sim.s[0], s[0], rtol=1e-10)
    assert errors.per_sample[0] < 1e-9 and np.isnan(errors.per_sample[1:]).all()
    assert np.isfinite(errors.points).sum() == 5 and errors.mean < 1e-9


def test_root_alignment_hand_computed():
    rng = np.random.default_rng(4)
    gt = _hands(rng, 2)
    pred = gt + np.array([0.003, 0.004, 0.0])  # 5 mm everywhere
    pred[:, 7, 2] += 0.021
    np.testing.assert_allclose(mpjpe(pred, gt).mean, (20 * 5 + np.sqrt(9 + 16 + 441)) / 21)
    np.testing.assert_allclose(mpjpe(pred, gt, "ra").mean, 21 / 21)
    np.testing.assert_allclose(mpjpe(pred, gt, "ra", root=7).mean, 20 * 21 / 21)
    aligned, sim = align_root(pred, gt)
    np.testing.assert_allclose(aligned[:, 0], gt[:, 0])
    np.testing.assert_allclose(sim.t, -np.tile([0.003, 0.004, 0.0], (2, 1)), atol=1e-15)
    gt[1, 0] = np.nan  # no ground-truth wrist: RA undefined for that sample, not zero
    assert np.isnan(mpjpe(pred, gt, "ra").per_sample[1])


def test_scale_translation_alignment_uses_the_bone_only():
    rng = np.random.default_rng(5)
    gt = _hands(rng, 2)
    pred = 2.0 * (gt - gt[:, :1]) + np.array([0.1, -0.2, 0.3])
    aligned, sim = align_scale_translation(pred, gt)
    np.testing.assert_allclose(sim.s, 0.5)
    np.testing.assert_allclose(aligned, gt, atol=1e-15)
    # only the middle MCP (joint 9) is twice as far from the wrist: s = 1/2 shrinks every other joint's offset
    pred = gt.copy()
    pred[:, 9] = 2 * gt[:, 9] - gt[:, 0]
    offsets = np.linalg.norm(gt - gt[:, :1], axis=-1) * 1000
    expected = 0.5 * offsets
    expected[:, 9] = 0.0
    np.testing.assert_allclose(mpjpe(pred, gt, "sta").per_sample, expected.mean(1))
    np.testing.assert_allclose(align_scale_translation(pred, gt, bone=(0, 5))[1].s, 1.0)
    gt[0, 9] = np.nan
    assert np.isnan(mpjpe(pred, gt, "sta").per_sample[0])


def test_missing_labels_are_masked_not_counted_as_zero():
    gt = np.zeros((3, 4, 3))
    pred = np.zeros((3, 4, 3))
    pred[..., 0] = np.array([0.001, 0.002, 0.003, 0.004])  # errors 1, 2, 3, 4 mm in every sample
    gt[0, 3] = np.nan
    gt[1, 0, 2] = np.nan  # one coordinate missing: the point is unlabelled
    gt[2] = np.nan
    errors = mpjpe(pred, gt)
    np.testing.assert_allclose(errors.per_sample[:2], [2.0, 3.0])
    assert np.isnan(errors.per_sample[2])
    np.testing.assert_allclose(errors.mean, (1 + 2 + 3 + 2 + 3 + 4) / 6)  # pooled over the 6 labelled points
    assert np.isnan(mpjpe(pred, np.full_like(gt, np.nan)).mean)
    with pytest.raises(ValueError, match="non-finite"):
        mpjpe(np.where(gt == gt, pred, np.nan), np.zeros_like(gt))


def test_pck_auc_hand_computed():
    thresholds, pck = pck_curve(np.full((2, 21), 10.0))
    np.testing.assert_allclose(thresholds, np.linspace(0, 50, 100))
    assert pck[19] == 0 and pck[20] == 1  # 19 * 50/99 < 10 <= 20 * 50/99
    # trapezoid: one half step (19 -> 20), then 79 full steps, normalised by 50 mm
    np.testing.assert_allclose(auc_pck(np.full((2, 21), 10.0)), 79.5 * STEP / 50)
    errors = np.array([[0.0, 10.0, 60.0, np.nan]])  # PCK = (1 + [t >= 10] + 0) / 3, the NaN not counted
    np.testing.assert_allclose(auc_pck(errors), (1 + 79.5 / 99) / 3)
    assert auc_pck(np.zeros((1, 21))) == 1.0 and auc_pck(np.full((1, 21), 51.0)) == 0.0
    np.testing.assert_allclose(auc_pck(np.full((1, 21), 35.0), lo_mm=20.0), 0.5, atol=1e-12)  # step at the middle


def _reference_f(pred: np.ndarray, gt: np.ndarray, d: float) -> tuple[float, float, float]:
    to_gt, _ = cKDTree(gt).query(pred)
    to_pred, _ = cKDTree(pred).query(gt)
    p, r = np.mean(to_gt < d), np.mean(to_pred < d)
    return (2 * p * r / (p + r) if p + r else 0.0), p, r


def test_f_score_matches_ckdtree():
    rng = np.random.default_rng(6)
    gt = _hands(rng, 3, k=778)
    pred = gt + rng.normal(scale=0.004, size=gt.shape)
    gt[1, rng.choice(778, 100, replace=False)] = np.nan  # dropped from both sets (vertices correspond)
    for d_mm, result in f_score(pred, gt, (5, 15)).items():
        for i in range(3):
            keep = np.isfinite(gt[i]).all(1)
            f, p, r = _reference_f(pred[i][keep], gt[i][keep], d_mm / 1000)
            np.testing.assert_allclose([result.per_sample[i], result.precision[i], result.recall[i]], [f, p, r])
        np.testing.assert_allclose(result.mean, result.per_sample.mean())
        assert 0 < result.mean < 1


def test_f_score_of_a_shifted_grid():
    grid = np.stack(np.meshgrid(*[np.arange(5) * 0.02] * 3), axis=-1).reshape(1, -1, 3)  # 125 points, 20 mm apart
    shifted = grid + np.array([0.006, 0.008, 0.0])  # 10 mm: every other grid point is at least 10 mm away
    raw = f_score(shifted, grid, (5, 15))
    assert raw[5].mean == 0.0 and raw[15].mean == 1.0
    assert f_score(shifted, grid, (5,), alignment="pa")[5].mean == 1.0
    missing = f_score(shifted, np.full_like(grid, np.nan))[5.0]
    assert np.isnan(missing.mean) and np.isnan(missing.precision).all()


def test_epe_2d_pixels_over_labelled_visible_keypoints():
    gt = np.zeros((2, 3, 2))
    pred = np.zeros((2, 3, 2)) + np.array([3.0, 4.0])  # 5 px
    pred[1, 2] = [6.0, 8.0]  # 10 px
    gt[0, 1] = np.nan
    visible = np.array([[True, True, True], [True, False, True]])
    errors = epe_2d(pred, gt, visible)
    np.testing.assert_allclose(errors.per_sample, [5.0, 7.5])
    np.testing.assert_allclose(errors.mean, (5 + 5 + 5 + 10) / 4)  # pooled over the 4 counted keypoints


def test_acceleration_hand_computed():
    rng = np.random.default_rng(7)
    t = np.arange(6.0)[:, None, None]
    x0, v, a = (rng.normal(scale=0.01, size=(1, 21, 3)) for _ in range(3))
    wrist_path = rng.normal(scale=0.05, size=(6, 1, 3))  # any global motion: removed by wrist-centring
    assert np.abs(acceleration(x0 + v * t + wrist_path)).max() < 1e-9
    accel = acceleration(x0 + v * t + 0.5 * a * t**2 + wrist_path)
    np.testing.assert_allclose(accel, np.broadcast_to(1000 * (a - a[:, :1]), (4, 21, 3)), atol=1e-9)
    assert acceleration(x0 + v * t[:2]).shape == (0, 21, 3)


def test_accel_metrics_hand_computed_and_masked():
    rng = np.random.default_rng(8)
    x0, v = rng.normal(scale=0.01, size=(2, 1, 21, 3))
    gt = x0 + v * np.arange(5.0)[:, None, None]  # constant velocity
    pred = gt.copy()
    pred[2, 3, 2] += 0.003  # errors 3, 6, 3 mm at joint 3 for the three accelerations, 0 elsewhere
    out = accel_metrics([pred], [gt])
    np.testing.assert_allclose(out["accel_error_mm_per_frame2"], 12 / (3 * 20))  # root left out
    np.testing.assert_allclose(out["accel_mm_per_frame2"], 12 / (3 * 20), atol=1e-9)
    wrist = gt.copy()
    wrist[2, 0, 2] += 0.003  # moves every wrist-centred joint by -3 mm
    np.testing.assert_allclose(accel_metrics([wrist], [gt])["accel_error_mm_per_frame2"], 4.0)
    gt[0, 3] = np.nan  # only the first acceleration of joint 3 touches frame 0
    np.testing.assert_allclose(accel_metrics([pred], [gt])["accel_error_mm_per_frame2"], 9 / 59)
    gt[0, 0] = np.nan  # no wrist in frame 0: every joint's first acceleration is left out
    np.testing.assert_allclose(accel_metrics([pred], [gt])["accel_error_mm_per_frame2"], 9 / 40)
    assert "accel_error_mm_per_frame2" not in accel_metrics([pred])


def test_accel_metrics_difference_within_sequences_only():
    rng = np.random.default_rng(9)
    t = np.arange(4.0)[:, None, None]
    a = rng.normal(size=(1, 21, 3)) + rng.normal(size=(1, 21, 3)) * t  # constant velocity, different per sequence
    b = rng.normal(size=(1, 21, 3)) + rng.normal(size=(1, 21, 3)) * t
    frames = np.concatenate([a[:2], b[:2], a[2:], b[2:], rng.normal(size=(2, 21, 3))])
    sequence = np.array(["a", "a", "b", "b", "a", "a", "b", "b", "c", "c"])
    seqs = split_sequences(frames, sequence)
    assert [len(s) for s in seqs] == [4, 4, 2]
    np.testing.assert_array_equal(seqs[0], a)
    out = accel_metrics(seqs, seqs)
    assert out["n_sequences"] == 2 and out["n_sequences_too_short"] == 1
    assert out["accel_mm_per_frame2"] < 1e-9 and out["accel_error_mm_per_frame2"] == 0.0
    assert accel_metrics(split_sequences(np.concatenate([a, b]), np.zeros(8)))["accel_mm_per_frame2"] > 1


def test_evaluate_predictions_keys_and_vertex_alignment():
    rng = np.random.default_rng(10)
    gt_joints, gt_verts = _hands(rng, 4), _hands(rng, 4, k=778)
    gt_2d = rng.uniform(0, 224, size=(4, 21, 2))
    perfect = evaluate_predictions(gt_joints, gt_joints, gt_verts, gt_verts, gt_2d, gt_2d, sequence=[0, 0, 0, 1])
    errors = [k for k in perfect if k.endswith(("mpjpe", "mpvpe", "px")) or k.startswith("accel_error")]
    assert len(errors) == 10 and all(perfect[k] < 1e-9 for k in errors)
    assert perfect["accel_mm_per_frame2"] > 0  # ACC is the prediction's own acceleration
    # PA leaves ~1e-14 mm, above the 0 mm threshold: only the first trapezoid half-step is lost
    assert all(perfect[k] >= 1 - STEP / 100 for k in perfect if k.startswith("auc"))
    assert all(perfect[k] == 1.0 for k in perfect if k.startswith(("f5", "f15")))
    assert perfect["n_sequences"] == 1 and perfect["n_sequences_too_short"] == 1
    # joints and vertices each an exact similarity of their own: PA on either is 0 (vertices aligned on their own)
    pred_joints, *_ = _similar(rng, gt_joints)
    pred_verts, *_ = _similar(rng, gt_verts)
    out = evaluate_predictions(pred_joints, gt_joints, pred_verts, gt_verts)
    assert out["pa_mpjpe"] < 1e-9 and out["pa_mpvpe"] < 1e-9 and out["f5_pa"] == 1.0
    assert out["mpjpe"] > 10 and out["mpvpe"] > 10 and out["f5"] < 1
    # RA-V2V translates the vertices by the joints' root offset
    moved = pred_verts + (gt_joints[:, :1] - pred_joints[:, :1])
    np.testing.assert_allclose(out["ra_mpvpe"], mpvpe(moved, gt_verts).mean)
    assert out["auc_mpjpe_0_50"] < 1 and "epe_2d_px" not in out and "accel_mm_per_frame2" not in out
