"""The pre-training probe: ridge regression against least squares and a hand-solved case, the probe's errors at
their two extremes (features linear in the labels: zero; random features under a huge penalty: the error of
predicting the train mean), temporal retrieval at 1 and at chance, and the probe inside a pre-training run
(logged, and its history kept across a resume)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.evaluate.metrics import mpjpe
from pipeline.train.components.probe import (
    holdout_mask,
    probe_metrics,
    ridge_fit,
    ridge_predict,
    temporal_retrieval,
)
from pipeline.train.config import load_config
from pipeline.train.trainer import train

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "launch" / "configs" / "smoke.yaml"


def penalised_lstsq(X, Y, lam):
    """The ridge problem as one least-squares system: rows [X 1] -> Y and sqrt(lam) I -> 0 (the bias unpenalised)."""
    n, d = X.shape
    A = np.block([[X, np.ones((n, 1))], [np.sqrt(lam) * np.eye(d), np.zeros((d, 1))]])
    return np.linalg.lstsq(A, np.vstack([Y, np.zeros((d, Y.shape[1]))]), rcond=None)[0]


@pytest.mark.parametrize("n, d", [(50, 5), (10, 30)])  # the primal and the dual form
def test_ridge_fit_equals_least_squares(n, d):
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(n, d)) + 3.0, rng.normal(size=(n, 4))
    assert np.allclose(ridge_fit(X, Y, 0.7), penalised_lstsq(X, Y, 0.7), atol=1e-10)


def test_ridge_fit_hand_solved():
    """x = 0, 1, 2, y = 2x + 1: centred x = -1, 0, 1, so w = sum(x y) / (sum(x^2) + lam) = 4 / (2 + lam), b = 3 - w."""
    X, Y = np.array([[0.0], [1.0], [2.0]]), np.array([[1.0], [3.0], [5.0]])
    assert np.allclose(ridge_fit(X, Y, 1.0), [[4 / 3], [3 - 4 / 3]])
    assert np.allclose(ridge_fit(X, Y, 1e-12), [[2.0], [1.0]])
    assert np.allclose(ridge_predict(np.array([[10.0]]), ridge_fit(X, Y, 1e-12)), 21.0)


def synthetic_labels(n_sequences=40, frames=10, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    n = n_sequences * frames
    return {"kp3d": rng.normal(scale=0.03, size=(n, 21, 3)) + [0.0, 0.0, 0.5],
            "kp2d": rng.normal(loc=112, scale=30, size=(n, 21, 2)),
            "dataset": np.repeat(np.arange(n_sequences) % 2, frames),
            "sequence": np.repeat([f"s{i}" for i in range(n_sequences)], frames).astype(object),
            "clip": np.repeat(np.arange(n_sequences), frames), "position": np.tile(np.arange(frames), n_sequences)}


def test_holdout_is_whole_sequences_per_dataset():
    labels = synthetic_labels()
    held = holdout_mask(labels["dataset"], labels["sequence"], 0.25)
    for s in np.unique(labels["sequence"]):
        assert len(set(held[labels["sequence"] == s])) == 1  # a sequence is on one side only
    assert [len(set(labels["sequence"][held & (labels["dataset"] == d)])) for d in (0, 1)] == [5, 5]
    assert not holdout_mask(np.zeros(3), np.array(["a", "a", "a"]), 0.5).any()  # one sequence: train only


def test_features_linear_in_the_labels_give_zero_error():
    labels = synthetic_labels()
    targets = np.concatenate([(labels["kp3d"] - labels["kp3d"][:, :1]).reshape(400, -1),
                              labels["kp2d"].reshape(400, -1)], axis=1)
    features = targets @ np.random.default_rng(1).normal(size=(targets.shape[1], 128))
    values = probe_metrics(features, labels, (1e-9,), 0.25, 5, 2)
    assert values["probe_pa_mpjpe"] < 1e-3 and values["probe_epe_2d_px"] < 1e-3
    assert values["probe_train_frames"] + values["probe_heldout_frames"] == 400


def test_random_features_give_the_error_of_the_train_mean():
    labels = synthetic_labels()
    features = np.random.default_rng(2).normal(size=(400, 64))
    values = probe_metrics(features, labels, (1e12,), 0.25, 5, 2)
    held = holdout_mask(labels["dataset"], labels["sequence"], 0.25)
    rel = labels["kp3d"] - labels["kp3d"][:, :1]
    mean3d = np.broadcast_to(rel[~held].mean(axis=0), rel[held].shape)
    mean2d = labels["kp2d"][~held].mean(axis=0)
    assert values["probe_pa_mpjpe"] == pytest.approx(mpjpe(mean3d, rel[held], "pa").mean, rel=1e-6)
    assert values["probe_epe_2d_px"] == pytest.approx(
        np.linalg.norm(labels["kp2d"][held] - mean2d, axis=-1).mean(), rel=1e-6)


def test_temporal_retrieval_is_one_when_clustered_by_time_and_chance_when_shuffled():
    clips, frames, w = 4, 50, 5
    clip, position = np.repeat(np.arange(clips), frames), np.tile(np.arange(frames), clips)
    angle = 0.02 * position  # nearer in time = nearer in angle; each clip in its own pair of dimensions
    clustered = np.zeros((clips * frames, 2 * clips))
    clustered[np.arange(len(clip)), 2 * clip] = np.cos(angle)
    clustered[np.arange(len(clip)), 2 * clip + 1] = np.sin(angle)
    assert temporal_retrieval(clustered, clip, position, k=w, w=w) == 1.0
    # chance: a random neighbour is one of the frame's own +-w clip neighbours with probability count / (N - 1)
    others = np.array([np.sum((clip == clip[i]) & (np.abs(position - position[i]) <= w)) - 1
                       for i in range(len(clip))])
    chance = np.mean(others / (len(clip) - 1))
    rng = np.random.default_rng(3)
    shuffled = np.mean([temporal_retrieval(rng.normal(size=(len(clip), 16)), clip, position, k=5, w=w)
                        for _ in range(20)])
    assert shuffled == pytest.approx(chance, rel=0.15)
    assert np.isnan(temporal_retrieval(clustered, np.arange(len(clip)), position, k=5, w=w))  # no clip-mates


def config(stream_shards, run_dir, *extra):
    return load_config(SMOKE, [f"data.datasets=[{{name: hanco, shards: {stream_shards}}}]",
                               f"probe.datasets=[{{name: freihand, shards: {stream_shards}}}, "
                               f"{{name: ho3d, shards: {stream_shards}}}]", "probe.every_steps=2", "probe.items=32",
                               f"checkpoint.dir={run_dir}", "logging.report_to=none", "logging.progress=false",
                               "loader.num_workers=0", "schedule.max_steps=4", "data.items_per_epoch=48",
                               "distributed.effective_batch=8", *extra])


def history(run_dir: Path, step: int) -> list[dict]:
    state = torch.load(run_dir / "checkpoints" / f"step-{step:08d}" / "state.pt", weights_only=False)
    return [{k: v for k, v in h.items() if k != "probe_seconds"} for h in state["task"]["probe_history"]]


def test_pretraining_logs_the_probe_and_resume_keeps_its_history(stream_shards, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    train(config(stream_shards, full, "checkpoint.every_steps=2", "checkpoint.keep_last=10"))
    records = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    probes = [r for r in records if "probe_pa_mpjpe" in r]
    assert [r["step"] for r in probes] == [2, 4]
    assert all(np.isfinite(r["probe_pa_mpjpe"]) and r["probe_seconds"] > 0 and "probe_retrieval@5" in r
               for r in probes)
    train(config(stream_shards, resumed, "checkpoint.every_steps=100"),
          resume=str(full / "checkpoints" / "step-00000002"))
    assert [h["step"] for h in history(resumed, 4)] == [2, 4]
    assert history(resumed, 4) == history(full, 4)
