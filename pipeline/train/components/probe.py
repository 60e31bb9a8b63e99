"""A linear probe of the encoder while pre-training runs: is it learning anything a hand-pose head can use?

Fixed labelled frames are read once from shards (the evaluation sweep: no augmentation) and kept in memory as
uint8 crops. Each probe embeds them with the frozen backbone (the encoder output before the projection head, what
fine-tuning starts from), fits closed-form ridge regressions from the features to root-relative 3D joints and to
2D keypoints on a train part, and reports PA-MPJPE (mm) and 2D EPE (output-crop px) on the held-out part, plus a
k-NN temporal retrieval score. The held-out part is whole sequences (per dataset): neighbouring frames of one
sequence are near-duplicates, so a frame-level split would score memorisation, not features.
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from pipeline.augment.torch_exec import model_input
from pipeline.errors import ConfigError
from pipeline.evaluate.metrics import epe_2d, mpjpe
from pipeline.evaluate.sweep import sweep_batches
from pipeline.stream import StreamConfig

INPUT_KEYS = ("frames", "warped", "affine", "appearance", "fill")  # what model_input reads


def ridge_fit(X: np.ndarray, Y: np.ndarray, lam: float) -> np.ndarray:
    """W [D + 1, M] (last row: the unpenalised bias) minimising |X W[:-1] + W[-1] - Y|^2 + lam |W[:-1]|^2 in float64.
    Centring removes the bias from the penalty; the normal equations are solved in the primal (D x D) or, when
    there are fewer samples than features, the dual (N x N) form, which give the same W."""
    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    mx, my = X.mean(axis=0), Y.mean(axis=0)
    Xc, Yc = X - mx, Y - my
    n, d = Xc.shape
    if d <= n:
        W = np.linalg.solve(Xc.T @ Xc + lam * np.eye(d), Xc.T @ Yc)
    else:
        W = Xc.T @ np.linalg.solve(Xc @ Xc.T + lam * np.eye(n), Yc)
    return np.vstack([W, my - mx @ W])


def ridge_predict(X: np.ndarray, W: np.ndarray) -> np.ndarray:
    return np.asarray(X, dtype=np.float64) @ W[:-1] + W[-1]


def standardise(X: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Features scaled by the train part's mean and standard deviation (constant features: by 1), so that one
    lambda grid suits any backbone and any stage of training."""
    mean, std = X[train].mean(axis=0), X[train].std(axis=0)
    return (X - mean) / np.where(std > 0, std, 1.0)


def holdout_mask(dataset: np.ndarray, sequence: np.ndarray, fraction: float) -> np.ndarray:
    """[N] bool: frames of the held-out sequences. Per dataset, round(fraction x its sequences), at least one and
    at least one left for training, taken in the order of a stable hash of the sequence id (deterministic across
    runs and processes); a dataset with one sequence stays in the train part."""
    held = np.zeros(len(dataset), dtype=bool)
    for d in np.unique(dataset):
        ids = sorted({str(s) for s in sequence[dataset == d]}, key=lambda s: (zlib.crc32(s.encode()), s))
        if len(ids) < 2:
            continue
        n = min(max(1, round(fraction * len(ids))), len(ids) - 1)
        held |= (dataset == d) & np.isin(sequence.astype(str), ids[:n])
    return held


def temporal_retrieval(features: np.ndarray, clip_ids: np.ndarray, positions: np.ndarray, k: int, w: int) -> float:
    """Mean over frames of the fraction of their k nearest neighbours (cosine, the frame itself excluded) that are
    frames of the same clip within +-w positions. Frames without such a frame in the set (single-frame clips) are
    left out: they would score 0 whatever the features. NaN when no frame qualifies."""
    f = np.asarray(features, dtype=np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    clip_ids, positions = np.asarray(clip_ids), np.asarray(positions)
    near = (clip_ids[:, None] == clip_ids[None, :]) & (np.abs(positions[:, None] - positions[None, :]) <= w)
    np.fill_diagonal(near, False)
    queries = near.any(axis=1)
    if not queries.any():
        return math.nan
    sim = f[queries] @ f.T
    sim[np.arange(len(sim)), np.flatnonzero(queries)] = -np.inf
    k = min(k, len(f) - 1)
    nearest = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    return float(np.take_along_axis(near[queries], nearest, axis=1).mean())


def fit_best(X: np.ndarray, Y: np.ndarray, train: np.ndarray, inner: np.ndarray, lambdas) -> np.ndarray:
    """Ridge on the train part with the lambda of least squared error on `inner` (held-out sequences of the train
    part, fitted on the rest); the first lambda when there is a single one or `inner` is empty."""
    lam = lambdas[0]
    fit_on, check_on = train & ~inner, train & inner
    if len(lambdas) > 1 and check_on.any():
        errors = [np.mean((ridge_predict(X[check_on], ridge_fit(X[fit_on], Y[fit_on], lam)) - Y[check_on]) ** 2)
                  for lam in lambdas]
        lam = lambdas[int(np.argmin(errors))]
    return ridge_fit(X[train], Y[train], lam)


def probe_metrics(features: np.ndarray, labels: dict[str, np.ndarray], lambdas, holdout: float, k: int,
                  w: int) -> dict[str, float]:
    """The probe's scores from features [N, D] and labels (kp3d [N, 21, 3] m, kp2d [N, 21, 2] px, dataset,
    sequence, clip, position [N]): ridge to root-relative 3D joints and to 2D keypoints on the train sequences
    (frames with every label finite), PA-MPJPE (mm) and 2D EPE (px) on the held-out ones, retrieval on all."""
    kp3d, kp2d = labels["kp3d"].astype(np.float64), labels["kp2d"].astype(np.float64)
    ok = np.isfinite(kp3d).all(axis=(1, 2)) & np.isfinite(kp2d).all(axis=(1, 2))
    held = holdout_mask(labels["dataset"], labels["sequence"], holdout)
    train, test = ok & ~held, ok & held
    if not train.any() or not test.any():
        raise ConfigError(f"probe: {int(train.sum())} train and {int(test.sum())} held-out labelled frames; "
                          f"both sides need frames (more sequences: probe.items, probe.datasets)")
    X = standardise(np.asarray(features, dtype=np.float64), train)
    inner = np.zeros(len(X), dtype=bool)  # the train part's own held-out sequences, to choose lambda
    inner[train] = holdout_mask(labels["dataset"][train], labels["sequence"][train], holdout)
    rel = (kp3d - kp3d[:, :1]).reshape(len(X), -1)
    W3 = fit_best(X, rel, train, inner, lambdas)
    W2 = fit_best(X, kp2d.reshape(len(X), -1), train, inner, lambdas)
    n = int(test.sum())
    pred3 = ridge_predict(X[test], W3).reshape(n, 21, 3)
    pred2 = ridge_predict(X[test], W2).reshape(n, 21, 2)
    return {"probe_pa_mpjpe": mpjpe(pred3, rel[test].reshape(n, 21, 3), "pa").mean,
            "probe_epe_2d_px": epe_2d(pred2, kp2d[test]).mean,
            f"probe_retrieval@{k}": temporal_retrieval(features, labels["clip"], labels["position"], k, w),
            "probe_train_frames": int(train.sum()), "probe_heldout_frames": n}


class Probe:
    """Fixed probe frames (read once by `collect`, at most `items`, shared evenly by the datasets; memory about
    items x slot_size^2 x 3 bytes) and `run`, which scores a backbone on them."""

    def __init__(self, probe, data: StreamConfig, batch_size: int, channels_last: bool) -> None:
        if not probe.ridge:
            raise ConfigError("probe.ridge: at least one lambda")
        self.cfg, self.channels_last = probe, channels_last
        self.data = replace(data, datasets=probe.datasets, mode="finetune", batch_size=batch_size, split="all")
        self.batches: list[dict] = []
        self.labels: dict[str, np.ndarray] = {}

    def collect(self) -> int:
        """Reads the probe frames from the shards (once); returns their number."""
        share = math.ceil(self.cfg.items / len(self.cfg.datasets))
        parts: dict[str, list] = {}
        for d, spec in enumerate(self.cfg.datasets):
            for batch in sweep_batches(replace(self.data, datasets=(spec,)), share):
                self.batches.append({key: batch[key] for key in INPUT_KEYS})
                n = len(batch["clip"])
                for key, value in (("kp3d", batch["kp3d"][:, 0]), ("kp2d", batch["kp2d"][:, 0]),
                                   ("clip", batch["clip"]), ("position", batch["position"][:, 0]),
                                   ("sequence", np.asarray(batch["sequence"], dtype=object)),
                                   ("dataset", np.full(n, d))):
                    parts.setdefault(key, []).append(np.asarray(value))
        self.labels = {key: np.concatenate(value) for key, value in parts.items()}
        return len(self.labels["clip"])

    @torch.no_grad()
    def embed(self, backbone: nn.Module, device: torch.device) -> np.ndarray:
        """[N, D] float32 features of the probe frames, backbone in eval mode (restored afterwards)."""
        was_training = backbone.training
        backbone.eval()
        try:
            out = []
            for batch in self.batches:
                on_device = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                             for k, v in batch.items()}
                x = model_input(on_device, self.data.out_size, channels_last=self.channels_last)
                out.append(backbone(x).float().cpu().numpy())
        finally:
            backbone.train(was_training)
        return np.concatenate(out)

    def run(self, backbone: nn.Module, device: torch.device) -> dict[str, float]:
        """The probe's metrics, and its own cost `probe_seconds` (embedding and fits)."""
        start = time.perf_counter()
        c = self.cfg
        values = probe_metrics(self.embed(backbone, device), self.labels, c.ridge, c.holdout, c.k, c.window)
        return {**values, "probe_seconds": time.perf_counter() - start}
