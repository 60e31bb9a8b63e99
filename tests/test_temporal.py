"""Temporal fine-tuning (finetune_eval.md §4.1, §4.4): the pure losses on hand-computed sequences, the stream's
finetune_sequence batches (one geometry per clip, labels exact per view), a few fine-tuning steps logging the
terms, and evaluation's per-sequence smoothness."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from pipeline.errors import ConfigError
from pipeline.evaluate.run import evaluate_run
from pipeline.geometry import project
from pipeline.models.rotations import axis_angle_to_matrix, matrix_to_quaternion
from pipeline.objectives.temporal import (
    acceleration_loss,
    quaternion_angle,
    quaternion_motion_loss,
    shape_consistency_loss,
    temporal_loss,
)
from pipeline.stream.clipdata import clip_id
from pipeline.stream.items import ROLE_SEQUENCE
from pipeline.train.tasks.finetune import FinetuneTask
from pipeline.train.trainer import train
from tests.conftest import read_shard_set
from tests.test_finetune import _config
from tests.test_stream_finetune import batches, finetune


def rotations(axis_angles) -> torch.Tensor:
    """[T, 3] axis-angles -> [1, T, 1, 3, 3] (one clip, one joint)."""
    return axis_angle_to_matrix(torch.tensor(np.asarray(axis_angles), dtype=torch.float64))[None, :, None]


def test_motion_loss_is_zero_for_constant_and_single_axis_motion():
    R = rotations([[0.3, -0.2, 0.5]] * 4)
    assert float(quaternion_motion_loss(R)) == 0.0
    z = [0.0, 0.0, 1.0]
    monotone = rotations([np.multiply(z, a) for a in (0.1, 0.2, 0.7, 1.5)])  # any speed, one geodesic
    assert float(quaternion_motion_loss(monotone)) == pytest.approx(0.0, abs=1e-12)
    # and invariant under the clip's common in-plane augmentation (left-multiplied global orientation)
    Rz = axis_angle_to_matrix(torch.tensor([0.0, 0.0, 0.8], dtype=torch.float64))
    wobble = rotations([[0.1, 0.0, 0.0], [0.0, 0.4, 0.0], [0.2, 0.1, 0.3]])
    assert float(quaternion_motion_loss(Rz @ wobble)) == pytest.approx(float(quaternion_motion_loss(wobble)))


def test_motion_loss_hand_computed():
    """Out and back about z by 0.4 rad: steps 0.4 + 0.4, end to end 0 -> 0.8. Two joints, one still: mean 0.4.
    Then a right angle about x followed by one about y: steps π/2 + π/2, end to end 2π/3 (the composition is a
    rotation by 120°), loss π - 2π/3 = π/3."""
    back = rotations([[0, 0, 0], [0, 0, 0.4], [0, 0, 0]])
    assert float(quaternion_motion_loss(back)) == pytest.approx(0.8)
    still = rotations([[0.1, 0.2, 0.3]] * 3)
    assert float(quaternion_motion_loss(torch.cat([back, still], dim=2))) == pytest.approx(0.4)
    Rx, Ry = (axis_angle_to_matrix(torch.tensor(v, dtype=torch.float64)) for v in ([math.pi / 2, 0, 0],
                                                                                   [0, math.pi / 2, 0]))
    turn = torch.stack([torch.eye(3, dtype=torch.float64), Rx, Ry @ Rx])[None, :, None]
    assert float(quaternion_motion_loss(turn)) == pytest.approx(math.pi / 3)
    assert float(quaternion_motion_loss(back[:, :2])) == 0.0  # two frames: no constraint


def test_quaternion_sign_is_not_penalised():
    """q and -q are one rotation (finetune_eval.md §4.4: |scalar|): angle 0 between them, and the angle between
    two rotations does not depend on either sign."""
    q = matrix_to_quaternion(rotations([[0.3, -1.0, 2.0], [2.9, 0.1, 0.0]])[0, :, 0])
    assert float(quaternion_angle(q[0], -q[0])) == pytest.approx(0.0, abs=1e-7)
    angle = float(quaternion_angle(q[0], q[1]))
    for a, b in ((q[0], -q[1]), (-q[0], q[1]), (-q[0], -q[1])):
        assert float(quaternion_angle(a, b)) == pytest.approx(angle)
    R0, R1 = (Rotation.from_quat(x[[1, 2, 3, 0]].numpy()) for x in q)
    assert angle == pytest.approx((R1 * R0.inv()).magnitude())


def test_shape_consistency_hand_computed():
    betas = torch.randn(2, 1, 10, dtype=torch.float64).expand(2, 3, 10)
    assert float(shape_consistency_loss(betas)) == pytest.approx(0.0, abs=1e-12)  # (x + x + x) / 3 rounds
    one = torch.zeros(1, 3, 10, dtype=torch.float64)
    one[0, :, 0] = torch.tensor([0.0, 3.0, 0.0])  # mean 1: |−1| + |2| + |−1| over 3 frames
    one[0, :, 4] = torch.tensor([1.0, 1.0, 4.0])  # mean 2: 1 + 1 + 2
    assert float(shape_consistency_loss(one)) == pytest.approx((4.0 + 4.0) / 3)


def test_acceleration_loss_hand_computed():
    """Constant velocity (and any common translation): zero. One joint at 0, 0, 0.3 m along x: a = 0.3 m at the
    middle frame for that joint, zero for the other 19 non-root joints: 0.3 / 20."""
    t = torch.arange(5, dtype=torch.float64)[None, :, None, None]
    joints = torch.randn(1, 1, 21, 3, dtype=torch.float64) + t * torch.randn(1, 1, 21, 3, dtype=torch.float64)
    joints = joints + t**2 * torch.tensor([0.1, 0.0, 0.0], dtype=torch.float64)  # root-common acceleration
    assert float(acceleration_loss(joints)) == pytest.approx(0.0, abs=1e-12)
    jump = torch.zeros(1, 3, 21, 3, dtype=torch.float64)
    jump[0, 2, 7, 0] = 0.3
    assert float(acceleration_loss(jump)) == pytest.approx(0.3 / 20)
    assert float(acceleration_loss(jump[:, :2])) == 0.0


def test_zero_losses_have_zero_gradients_and_weights_select_terms():
    R = rotations([[0.3, -0.2, 0.5]] * 3).requires_grad_()
    joints = torch.zeros(2, 3, 21, 3, requires_grad=True)
    betas = torch.zeros(2, 3, 10, requires_grad=True)
    parts = temporal_loss({"motion": 0.05, "accel": 1.0, "shape": 0.0}, R, betas, joints)
    assert set(parts) == {"motion", "accel", "total"}
    parts["total"].backward()
    assert torch.equal(R.grad, torch.zeros_like(R)) and torch.equal(joints.grad, torch.zeros_like(joints))
    with pytest.raises(ValueError, match="unknown temporal"):
        temporal_loss({"smooth": 1.0}, joints=joints)


@pytest.fixture(scope="module")
def sequences(sample_shards):
    return batches(finetune(sample_shards, datasets=("ho3d",), mode="finetune_sequence", sequence_length=3,
                            sequence_interval=3, items_per_sample=14, items_per_epoch=32))


def test_stream_finetune_sequence_batches(sequences, sample_shards):
    """[B, 3, ...] fields, one pass = every start of the HO-3D samples once (20, 20 and 10 frames: 14 + 14 + 4),
    frames at the interval, one geometry per item, labels exact per view (K projects kp3d onto kp2d; 3D rotated
    by the item's angle), the sample data's unlabelled frame (train_MC1, 5) kept, labelled False with NaN labels."""
    out, loader = sequences
    reference = {clip_id(k): v for k, v in read_shard_set(sample_shards).items()}
    starts = sorted((int(c), int(p)) for b in out for c, p in zip(b["clip"], b["position"][:, 0], strict=True))
    expected = sorted((c, s) for c, r in reference.items() if r["meta"]["dataset"] == "ho3d"
                      for s in range(len(r["meta"]["frames"]["index"]) - 6))
    assert starts == expected
    unlabelled = 0
    for batch in out:
        assert batch["frames"].shape == (8, 3, 256, 256, 3) and batch["kp3d"].shape == (8, 3, 21, 3)
        assert batch["mano_pose"].shape == (8, 3, 48) and batch["labelled"].shape == (8, 3)
        assert (batch["role"] == ROLE_SEQUENCE).all() and batch["labelled"].any(dim=1).all()
        assert (batch["offset"] == torch.tensor([0, 3, 6])).all()
        assert (batch["position"].diff(dim=1) == 3).all()
        assert (batch["geometry"] == batch["geometry"][:, :1]).all()  # time-coherent: one draw per item
        assert batch["geometry"][:, 0, 0].unique().numel() > 1  # ... and different items get different draws
        for b in range(8):
            stored = reference[int(batch["clip"][b])]["labels"]
            Rz = Rotation.from_euler("z", float(batch["geometry"][b, 0, 0])).as_matrix()
            for v in range(3):
                kp2d, kp3d, K = (batch[k][b, v].double().numpy() for k in ("kp2d", "kp3d", "K"))
                if not batch["labelled"][b, v]:
                    unlabelled += 1
                    assert np.isnan(kp3d).all() and np.isnan(kp2d).all()
                    continue
                p = int(batch["position"][b, v])
                if "kp3d" not in stored:  # HO-3D evaluation frames carry K only
                    assert np.isnan(kp3d).all() and np.isfinite(K).all()
                    continue
                np.testing.assert_allclose(kp3d, stored["kp3d"][p] @ Rz.T, atol=1e-6)
                np.testing.assert_allclose(project(K, kp3d), kp2d, atol=1e-2)
    assert unlabelled == 2  # starts 2 and 5 of train_MC1
    assert loader.stats()["counts"]["items"] == 32


def test_finetune_sequence_keeps_single_view_finetune_unchanged(sample_shards):
    a = finetune(sample_shards, items_per_epoch=8)
    assert a.views == 1 and not a.time_coherent  # sequence_length (default 3) does not apply to finetune mode
    b = finetune(sample_shards, mode="finetune_sequence", sequence_length=2, labels=False)
    assert b.views == 2 and b.labels and b.time_coherent


def test_finetune_with_temporal_losses_runs_and_logs_terms(sample_shards, sample, tmp_path):
    mano = sample[1]["mano"]
    run_dir = tmp_path / "run"
    cfg = _config(sample_shards, mano, run_dir, "data.datasets=[{name: ho3d, shards: " + str(sample_shards) + "}]",
                  "finetune.temporal={motion: 0.05, shape: 0.01, accel: 0.1}", "schedule.max_steps=2",
                  "finetune.val_every_steps=2", "finetune.val_items=8", "distributed.effective_batch=8",
                  "data.split_seed=1", "logging.every_steps=1")  # train: train_MC1; val: ABF10, SM1
    assert cfg.data.mode == "finetune_sequence" and cfg.data.views == 3
    assert train(cfg).step == 2
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = {k for r in records for k in r}
    assert {"loss_motion", "loss_shape", "loss_accel", "loss_joints3d"} <= logged
    assert all(math.isfinite(r[k]) for r in records for k in ("loss_motion", "loss_accel") if k in r)
    out = tmp_path / "evaluation"
    metrics = evaluate_run(run_dir, str(sample_shards), "ho3d", out, weights="last")
    results = json.loads((out / "results.json").read_text())
    per = results["per_sequence"]
    assert {"train_ABF10", "train_MC1"} <= per.keys() and per["train_ABF10"]["frames"] == 20
    assert per["evaluation_SM1"]["accel_error_mm_per_frame2"] is None  # no 3D ground truth there
    assert per["train_ABF10"]["accel_mm_per_frame2"] > 0 and metrics["accel_mm_per_frame2"] > 0
    assert "| train_MC1 | 19 |" in (out / "report.md").read_text()
    with pytest.raises(ConfigError, match="head mano only"):
        FinetuneTask(_config(sample_shards, mano, run_dir, "finetune.head=2p5d", "finetune.temporal={motion: 1}"))
